"""`driftloop demo`, the README's main job, run as a user runs it (on free ports)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from driftloop.processes import free_port
from tests.commands import run_driftloop


def run_demo(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_driftloop("demo", env=env, cwd=tmp_path)


def test_demo_lands_a_batch_rejects_a_corrupted_one_and_stops_everything(tmp_path: Path) -> None:
    prefect_port, lakefs_port = free_port(), free_port()
    env = {
        "DRIFTLOOP_PREFECT__API_URL": f"http://127.0.0.1:{prefect_port}/api",
        "DRIFTLOOP_LAKEFS__EMBEDDED_PORT": str(lakefs_port),
    }

    result = run_demo(tmp_path, env)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "batch demo-day-1 (5000 rows) landed on main" in result.stdout
    assert "batch demo-day-2-corrupted rejected, main unchanged" in result.stdout
    assert "stage production" in result.stdout and "challenger" in result.stdout
    assert "Bento driftloop-inference:" in result.stdout
    assert "not in the demo yet" in result.stdout
    assert (tmp_path / ".driftloop" / "logs" / "prefect-server.log").exists()
    for port in (prefect_port, lakefs_port):  # nothing left running
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_demo_names_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"DRIFTLOOP_PREFECT__API_URL": f"http://127.0.0.1:{port}/api"}

        result = run_demo(tmp_path, env)

    assert result.returncode == 1
    assert f"port {port}" in result.stderr and "Prefect server" in result.stderr
