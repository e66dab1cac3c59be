"""Settings: environment, .env, validation that names the variable, secrets that stay secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from driftloop.settings import SettingsError, effective_settings, get_settings, mask_url


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No DRIFTLOOP_ variable and no .env from the developer's shell leaks into a test."""
    import os

    for name in list(os.environ):
        if name.startswith("DRIFTLOOP_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_serve_the_embedded_local_stack() -> None:
    settings = get_settings()

    assert str(settings.lakefs.endpoint) == "http://127.0.0.1:8000/"
    assert str(settings.prefect.api_url) == "http://127.0.0.1:4200/api"
    assert (settings.serving.port, settings.monitor.port) == (3000, 8001)
    assert settings.lakefs.repository == "driftloop"
    assert settings.home == Path(".driftloop")
    assert settings.prediction_log_url.startswith("sqlite:///")
    assert settings.prediction_log_url.endswith(".driftloop/predictions.sqlite")


def test_secrets_have_no_default() -> None:
    settings = get_settings()

    assert settings.lakefs.access_key_id is None
    assert settings.lakefs.secret_access_key is None
    assert settings.serving.api_key is None
    assert settings.monitor.alert_token is None


def test_nested_areas_read_prefixed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_MONITOR__INTERVAL_SECONDS", "2.5")
    monkeypatch.setenv("DRIFTLOOP_LAKEFS__REPOSITORY", "fraud-data")
    monkeypatch.setenv("DRIFTLOOP_HOME", "/srv/driftloop")

    settings = get_settings()

    assert settings.monitor.interval_seconds == 2.5
    assert settings.lakefs.repository == "fraud-data"
    assert settings.bentoml_home == Path("/srv/driftloop/bentoml")


def test_dotenv_file_is_honoured_and_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(
        "DRIFTLOOP_SERVING__PORT=3100\nDRIFTLOOP_MONITOR__PORT=8101\n"
        "DRIFTLOOP_LAKEFS__SECRET_ACCESS_KEY=from-dotenv-4f9a\n"
    )
    monkeypatch.setenv("DRIFTLOOP_MONITOR__PORT", "8202")

    settings = get_settings()

    assert settings.serving.port == 3100
    assert settings.monitor.port == 8202
    assert settings.lakefs.secret_access_key is not None
    assert settings.lakefs.secret_access_key.get_secret_value() == "from-dotenv-4f9a"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DRIFTLOOP_LAKEFS__ENDPOINT", "not a url"),
        ("DRIFTLOOP_PREFECT__API_URL", "ftp://prefect:4200"),
        ("DRIFTLOOP_MONITOR__INTERVAL_SECONDS", "-5"),
        ("DRIFTLOOP_MONITOR__DRIFT_SHARE_THRESHOLD", "1.5"),
        ("DRIFTLOOP_SERVING__PORT", "70000"),
        ("DRIFTLOOP_LAKEFS__DEFAULT_BRANCH", "feature/x"),
        ("DRIFTLOOP_STORAGE__PREDICTION_LOG_URL", "mysql://db/predictions"),
        ("DRIFTLOOP_LOG_LEVEL", "LOUD"),
    ],
)
def test_invalid_value_fails_with_a_message_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(SettingsError) as error:
        get_settings()

    assert variable in str(error.value)
    assert repr(value) in str(error.value)


def test_placeholder_secret_is_rejected_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DRIFTLOOP_MONITOR__ALERT_TOKEN", "changeme")

    with pytest.raises(SettingsError) as error:
        get_settings()

    assert "DRIFTLOOP_MONITOR__ALERT_TOKEN" in str(error.value)
    assert "changeme" not in str(error.value)


def test_every_problem_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_SERVING__PORT", "0")
    monkeypatch.setenv("DRIFTLOOP_MONITOR__WINDOW_ROWS", "-1")

    with pytest.raises(SettingsError) as error:
        get_settings()

    assert "DRIFTLOOP_SERVING__PORT" in str(error.value)
    assert "DRIFTLOOP_MONITOR__WINDOW_ROWS" in str(error.value)


def test_importing_the_module_reads_nothing() -> None:
    # In a process of its own: reloading the module here would replace its classes under the
    # other tests' feet.
    imported = subprocess.run(
        [sys.executable, "-c", "import driftloop.settings"],
        env={**os.environ, "DRIFTLOOP_SERVING__PORT": "not-a-port"},
        capture_output=True,
        text=True,
        check=False,
    )

    assert imported.returncode == 0, imported.stderr  # would fail if settings were read at import


def test_effective_settings_mask_secrets_and_url_passwords(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DRIFTLOOP_LAKEFS__SECRET_ACCESS_KEY", "s3cr3t-value-abc")
    monkeypatch.setenv(
        "DRIFTLOOP_STORAGE__PREDICTION_LOG_URL", "postgresql://app:hunter2pw@db:5432/predictions"
    )

    shown = {name: value for name, value, _ in effective_settings(get_settings())}

    assert shown["DRIFTLOOP_LAKEFS__SECRET_ACCESS_KEY"] == "********"
    assert (
        shown["DRIFTLOOP_STORAGE__PREDICTION_LOG_URL"] == "postgresql://app:***@db:5432/predictions"
    )
    assert shown["DRIFTLOOP_LAKEFS__ACCESS_KEY_ID"] == "(not set)"
    assert not any("s3cr3t" in value or "hunter2" in value for value in shown.values())


def test_mask_url_leaves_urls_without_password_alone() -> None:
    assert mask_url("sqlite:////tmp/p.sqlite") == "sqlite:////tmp/p.sqlite"
    assert mask_url("postgresql://app@db/p") == "postgresql://app@db/p"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("DRIFTLOOP_REGISTRY__GATE__GUARDS", "notjson", "must be JSON"),
        ("DRIFTLOOP_HOME", "/etc/passwd", "is a file, not a folder"),
        ("DRIFTLOOP_REGISTRY__GATE__PRIMARY_METRIC", "evil", "roc_auc"),
        ("DRIFTLOOP_REGISTRY__GATE__GUARDS", '{"evil": 0.1}', "roc_auc"),
        ("DRIFTLOOP_SERVNG__PORT", "3000", "DRIFTLOOP_SERVING__PORT"),
    ],
)
def test_unusable_settings_are_one_clear_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    """Each of these once printed a traceback, was accepted and failed after training, or (a
    typo in an area's name) was silently ignored while a typo in a field's name was refused."""
    monkeypatch.setenv(name, value)

    with pytest.raises(SettingsError) as raised:
        get_settings()

    message = str(raised.value)
    assert name in message and expected in message, message


def test_variables_that_are_not_settings_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_CODE_DIR", "/srv/project")  # prefect.yaml's pull step
    monkeypatch.setenv("DRIFTLOOP_TEST_DATABASE_URL", "postgresql://ci")

    assert get_settings().project is None


def test_the_retired_dataset_setting_points_at_projects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_DATASET", "breast_cancer")

    with pytest.raises(SettingsError, match="DRIFTLOOP_DATASET: .*set DRIFTLOOP_PROJECT"):
        get_settings()
