"""Secrets of the embedded stack: made when missing, kept where later commands find them."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftloop.settings import Settings, get_settings
from driftloop.stack.credentials import local_secrets
from driftloop.stack.errors import StackError

NAMES = {
    "DRIFTLOOP_LAKEFS__ACCESS_KEY_ID",
    "DRIFTLOOP_LAKEFS__SECRET_ACCESS_KEY",
    "DRIFTLOOP_MONITOR__ALERT_TOKEN",
    "DRIFTLOOP_PREFECT__AUTH_STRING",
}


@pytest.fixture
def bare(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
    return get_settings()


def test_missing_secrets_are_made_and_appended_to_dotenv_once(
    bare: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("DRIFTLOOP_LOG_LEVEL=INFO")  # no final newline

    made = local_secrets(bare, dotenv, embedded=True)

    assert set(made) == NAMES and len(set(made.values())) == 4
    # Prefect's basic auth is `user:password`, as its UI asks for it.
    assert made["DRIFTLOOP_PREFECT__AUTH_STRING"].startswith("driftloop:")
    text = dotenv.read_text()
    assert text.startswith("DRIFTLOOP_LOG_LEVEL=INFO\n# written by `driftloop up`")
    assert dotenv.stat().st_mode & 0o777 == 0o600
    # The next command reads them from .env: nothing new is made or written.
    again = local_secrets(get_settings(), dotenv, embedded=True)
    assert again == made and dotenv.read_text() == text


def test_configured_secrets_are_used_and_nothing_is_written(
    bare: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTLOOP_LAKEFS__ACCESS_KEY_ID", "AKIACONFIGURED0001")
    monkeypatch.setenv("DRIFTLOOP_LAKEFS__SECRET_ACCESS_KEY", "configured-secret-value")
    monkeypatch.setenv("DRIFTLOOP_MONITOR__ALERT_TOKEN", "configured-token-value")
    monkeypatch.setenv("DRIFTLOOP_PREFECT__AUTH_STRING", "ops:configured-password")

    made = local_secrets(get_settings(), tmp_path / ".env", embedded=False)

    assert made["DRIFTLOOP_LAKEFS__ACCESS_KEY_ID"] == "AKIACONFIGURED0001"
    assert made["DRIFTLOOP_MONITOR__ALERT_TOKEN"] == "configured-token-value"
    assert made["DRIFTLOOP_PREFECT__AUTH_STRING"] == "ops:configured-password"
    assert not (tmp_path / ".env").exists()


def test_a_real_lakefs_without_keys_or_half_a_key_pair_is_refused(
    bare: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(StackError, match="not the embedded server"):
        local_secrets(bare, None, embedded=False)
    monkeypatch.setenv("DRIFTLOOP_LAKEFS__ACCESS_KEY_ID", "AKIAONLYHALF000001")
    with pytest.raises(StackError, match="set both"):
        local_secrets(get_settings(), None, embedded=True)
