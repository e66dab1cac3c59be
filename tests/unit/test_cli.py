"""The driftloop command line, run as a user runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.commands import run_driftloop as driftloop


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = driftloop("--help", cwd=tmp_path)

    assert result.returncode == 0
    for command in ("version", "config"):
        assert command in result.stdout


def test_version(tmp_path: Path) -> None:
    from driftloop import __version__

    result = driftloop("version", cwd=tmp_path)

    assert result.returncode == 0
    assert result.stdout.strip() == f"driftloop {__version__}"


def test_config_show_prints_effective_values_with_secrets_masked(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DRIFTLOOP_MONITOR__PORT=8111\n")
    env = {"DRIFTLOOP_SERVING__API_KEY": "k3y-very-private-77"}

    result = driftloop("config", "show", "--json", env=env, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert '"DRIFTLOOP_MONITOR__PORT": "8111"' in result.stdout
    assert '"DRIFTLOOP_SERVING__API_KEY": "********"' in result.stdout
    assert "k3y-very-private-77" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [("DRIFTLOOP_LAKEFS__ENDPOINT", "lakefs:8000"), ("DRIFTLOOP_MONITOR__INTERVAL_SECONDS", "-1")],
)
def test_invalid_setting_stops_the_command_naming_the_variable(
    tmp_path: Path, variable: str, value: str
) -> None:
    result = driftloop("config", "show", env={variable: value}, cwd=tmp_path)

    assert result.returncode == 2
    assert variable in result.stderr
    assert "Traceback" not in result.stderr


def test_monitor_serve_names_a_taken_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = driftloop(
            "monitor", "serve", cwd=tmp_path, env={"DRIFTLOOP_MONITOR__PORT": str(port)}
        )

    assert result.returncode == 1
    assert f"port {port}" in result.stderr and "DRIFTLOOP_MONITOR__PORT" in result.stderr


def test_the_cli_choices_are_the_training_modules_own() -> None:
    from typing import get_args

    from driftloop.cli.models import HoldoutChoice
    from driftloop.training_options import HoldoutMode

    assert [choice.value for choice in HoldoutChoice] == list(get_args(HoldoutMode))
