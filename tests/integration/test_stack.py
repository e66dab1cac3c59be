"""`driftloop up`, `status` and `down` run as a user runs them, on free ports, in a folder of
their own (its .env and .driftloop/): every component a real process, Prometheus and Alertmanager
too (CI installs them; these tests expect them on PATH)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from driftloop.stack.processes import pid_alive, port_in_use
from tests.commands import STACK_PORTS, stack_env, stack_ports
from tests.integration.prefect_events import wait_for_event
from tests.polling import eventually

PROJECT = Path(__file__).resolve().parents[2]
DRIFTLOOP = str(Path(sys.executable).with_name("driftloop"))
COMPONENTS = {*STACK_PORTS, "prefect-worker"}


@dataclass
class Place:
    """A folder to run the stack from, and the ports it uses."""

    folder: Path
    ports: dict[str, int]

    @property
    def env(self) -> dict[str, str]:
        # `on`: a missing binary fails the start instead of silently skipping them.
        return {**stack_env(self.ports), "DRIFTLOOP_STACK__OBSERVABILITY": "on"}

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [DRIFTLOOP, *args],
            env=self.env,
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self) -> subprocess.Popen[bytes]:
        """`driftloop up` in the foreground of its own session, as in a terminal; its output
        goes to ``output`` (a file: a full pipe would block it)."""
        with self.output.open("wb") as output:
            return subprocess.Popen(
                [DRIFTLOOP, "up"],
                env=self.env,
                cwd=self.folder,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def output(self) -> Path:
        return self.folder / "up-output.txt"

    def finish(self, up: subprocess.Popen[bytes], timeout: float = 120) -> str:
        """Wait for `driftloop up` to exit (SIGKILL if it does not); what it printed."""
        try:
            up.wait(timeout=timeout)
        finally:
            if up.poll() is None:
                os.killpg(up.pid, signal.SIGKILL)
        return self.output.read_text()

    def state(self) -> dict[str, Any] | None:
        path = self.folder / ".driftloop" / "stack.json"
        return json.loads(path.read_text()) if path.exists() else None

    def wait_status_ok(self, up: subprocess.Popen[bytes] | None, timeout: float = 300) -> str:
        def healthy() -> str | None:
            if up is not None and up.poll() is not None:
                raise RuntimeError(f"up exited {up.returncode}:\n{self.output.read_text()}")
            status = self.run("status")
            return status.stdout if status.returncode == 0 else None

        return eventually(healthy, "`driftloop status` to exit 0", timeout=timeout, interval=2)

    def assert_all_stopped(self, pids: list[int]) -> None:
        eventually(
            lambda: not any(pid_alive(pid) for pid in pids), "every pid to be gone", timeout=30
        )
        taken = [name for name, port in self.ports.items() if port_in_use("127.0.0.1", port)]
        assert taken == []
        assert self.state() is None


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Place]:
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is not on PATH; .ci/run installs the Debian package")
    folder = tmp_path_factory.mktemp("user-folder")
    ports = stack_ports()
    found = Place(folder, ports)
    yield found
    found.run("down")


def component_pids(place: Place) -> list[int]:
    state = place.state()
    assert state is not None
    return [int(state["supervisor"])] + [c["pid"] for c in state["components"]]


def test_up_detached_serves_predictions_and_down_stops_everything(place: Place) -> None:
    started = place.run("up", "--detach", timeout=400)

    assert started.returncode == 0, started.stdout + started.stderr
    # A first model was trained because there was none; the status table names every component.
    assert "no production model of transactions-classifier yet" in started.stdout
    status = place.wait_status_ok(None, timeout=30)
    for name in COMPONENTS:
        assert name in status
    assert "✗" not in status and "serving transactions-classifier:" in status
    # Secrets were made for the embedded stack, kept in .env (0600), never printed.
    dotenv = (place.folder / ".env").read_text()
    secrets = [line.split("=", 1)[1] for line in dotenv.splitlines() if "=" in line]
    assert len(secrets) == 3
    assert (place.folder / ".env").stat().st_mode & 0o777 == 0o600
    log_text = (place.folder / ".driftloop" / "logs" / "up.log").read_text()
    for secret in secrets:
        assert secret not in started.stdout + started.stderr + log_text

    # The stack does its job: it answers predictions, Prometheus scrapes every service, and the
    # deployments are on the Prefect server.
    base = f"http://127.0.0.1:{place.ports['inference']}"
    record = httpx.get(f"{base}/model", timeout=10).json()
    assert record["name"] == "transactions-classifier"
    prometheus = f"http://127.0.0.1:{place.ports['prometheus']}"

    def target_health() -> dict[str, str] | None:
        targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=10).json()
        health = {t["labels"]["job"]: t["health"] for t in targets["data"]["activeTargets"]}
        return health if health and set(health.values()) == {"up"} else None

    health = eventually(target_health, "every Prometheus target up", timeout=60, interval=2)
    assert health == {"driftloop-inference": "up", "driftloop-monitor": "up", "prefect": "up"}
    api = f"http://127.0.0.1:{place.ports['prefect-server']}/api"
    names = {d["name"] for d in httpx.post(f"{api}/deployments/filter", json={}).json()}
    assert {"ingest", "train", "retrain"} <= names
    # Alertmanager reaches the monitor's webhook with the token `up` made: a drift alert becomes
    # driftloop.alert.firing in Prefect.
    alertmanager = f"http://127.0.0.1:{place.ports['alertmanager']}"
    alert = {
        "labels": {
            "alertname": "DatasetDrift",
            "kind": "drift",
            "severity": "warning",
            "model": "transactions-classifier",
        },
        "annotations": {"summary": "sent by test_stack"},
    }
    httpx.post(f"{alertmanager}/api/v2/alerts", json=[alert], timeout=10).raise_for_status()
    firing = wait_for_event(api, "driftloop.alert.firing", timeout=60)
    assert firing["payload"]["alertname"] == "DatasetDrift", firing

    pids = component_pids(place)
    stopped = place.run("down")

    assert stopped.returncode == 0, stopped.stderr
    assert "stopped every component" in stopped.stdout
    place.assert_all_stopped(pids)
    after = place.run("status")
    assert after.returncode == 1 and "no stack is running" in after.stderr


def test_ctrl_c_stops_every_component(place: Place) -> None:
    # SIGTERM takes the same path: `driftloop down` sends it (the first test).
    up = place.start()
    place.wait_status_ok(up)
    pids = component_pids(place)
    os.killpg(up.pid, signal.SIGINT)
    output = place.finish(up)

    assert up.returncode == 0, output
    # The model from the first start is still production: no second bootstrap.
    assert "✓ production model transactions-classifier:" in output
    assert "stopped every component" in output
    place.assert_all_stopped(pids)


def test_a_dead_component_shows_in_status_and_down_cleans_up(place: Place) -> None:
    up = place.start()
    try:
        place.wait_status_ok(up)
        state = place.state()
        assert state is not None
        # The supervisor is killed outright (no clean stop), then the monitor dies.
        os.killpg(up.pid, signal.SIGKILL)
        place.finish(up, timeout=10)
        monitor = next(c for c in state["components"] if c["name"] == "monitor")
        os.killpg(monitor["pid"], signal.SIGKILL)
        eventually(lambda: not pid_alive(monitor["pid"]), "the monitor to be gone", timeout=10)

        status = place.run("status")

        assert status.returncode == 1
        line = next(line for line in status.stdout.splitlines() if "monitor" in line)
        assert "✗" in line and "not running" in line
        assert "prefect-server" in status.stdout
    finally:
        pids = component_pids(place)
        stopped = place.run("down")
    assert "left behind by the supervisor" in stopped.stdout
    place.assert_all_stopped(pids)


def test_the_supervisor_stops_everything_when_a_component_dies(place: Place) -> None:
    up = place.start()
    try:
        place.wait_status_ok(up)
        pids = component_pids(place)
        state = place.state()
        assert state is not None
        inference = next(c for c in state["components"] if c["name"] == "inference")
        os.killpg(inference["pid"], signal.SIGKILL)
    finally:
        output = place.finish(up)

    assert up.returncode == 1
    assert "inference exited" in output and "logs/inference.log" in output
    place.assert_all_stopped(pids)


def test_a_taken_port_is_named_and_nothing_starts(place: Place) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", place.ports["monitor"]))
        taken.listen()

        result = place.run("up")

    assert result.returncode == 1
    message = result.stderr
    assert f"port {place.ports['monitor']} on 127.0.0.1 is taken, so monitor cannot start" in (
        message
    )
    assert "DRIFTLOOP_MONITOR__PORT" in message
    assert place.state() is None
    assert not port_in_use("127.0.0.1", place.ports["prefect-server"])


def test_a_component_that_fails_to_start_is_named_with_its_log(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    folder = tmp_path_factory.mktemp("broken-folder")
    (folder / ".driftloop").mkdir()
    (folder / ".driftloop" / "lakefs").write_text("a file where the lakeFS data folder goes")
    place = Place(folder, stack_ports())

    result = place.run("up", timeout=300)

    assert result.returncode == 1
    assert "lakefs exited with code" in result.stderr
    assert f"log: {folder / '.driftloop' / 'logs' / 'lakefs.log'}" in result.stderr
    # The Prefect server, started beside it, was stopped again.
    assert not port_in_use("127.0.0.1", place.ports["prefect-server"])
    assert place.state() is None
