"""README.md's settings table is the one the settings model generates."""

from __future__ import annotations

import pytest

from driftloop.docs import README, settings_table, with_table


def test_readme_settings_table_is_up_to_date() -> None:
    current = README.read_text()
    assert current == with_table(current), "run: .venv/bin/python -m driftloop.docs"


def test_the_table_shows_defaults_as_a_user_writes_them_and_no_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Defaults, not the environment's values: a developer's settings do not leak into the docs.
    monkeypatch.setenv("DRIFTLOOP_MONITOR__PORT", "9999")
    monkeypatch.setenv("DRIFTLOOP_LAKEFS__SECRET_ACCESS_KEY", "do-not-print-me")
    table = settings_table()
    assert "| `DRIFTLOOP_MONITOR__PORT` | `8001` | Port of the monitor. |" in table
    assert "| `DRIFTLOOP_LAKEFS__SECRET_ACCESS_KEY` | — |" in table
    assert "do-not-print-me" not in table and "9999" not in table
    assert "| `DRIFTLOOP_STACK__BOOTSTRAP` | `true` |" in table
    assert "| `DRIFTLOOP_REGISTRY__GATE__MARGIN` | `0.005` |" in table
