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
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from dotenv import dotenv_values

from driftloop.datasets.spec import load_spec
from driftloop.datasets.transactions import generate_transactions
from driftloop.events import DRIFT_DETECTED, Event, model_resource
from driftloop.prefect_api import PrefectAccess
from driftloop.serving import frame_records
from driftloop.settings import fast_monitor_env
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

    def start(self, **extra_env: str) -> subprocess.Popen[bytes]:
        """`driftloop up` in the foreground of its own session, as in a terminal; its output
        goes to ``output`` (a file: a full pipe would block it)."""
        with self.output.open("wb") as output:
            return subprocess.Popen(
                [DRIFTLOOP, "up"],
                env={**self.env, **extra_env},
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

    def prefect(self) -> PrefectAccess:
        """The stack's Prefect API, signed in with the password `up` keeps in .env."""
        return PrefectAccess(
            f"http://127.0.0.1:{self.ports['prefect-server']}/api",
            auth_string=dotenv_values(self.folder / ".env")["DRIFTLOOP_PREFECT__AUTH_STRING"],
        )

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


USER_API_KEY = "the-user-s-own-api-key-from-dotenv"


def environment_of(pid: int) -> str:
    return Path(f"/proc/{pid}/environ").read_bytes().replace(b"\0", b"\n").decode()


def test_up_detached_serves_predictions_and_down_stops_everything(place: Place) -> None:
    # The user's own .env in the folder `up` runs from (not the checkout): its API key once got
    # lost on the way to the inference service, which then answered without it.
    (place.folder / ".env").write_text(f"DRIFTLOOP_SERVING__API_KEY={USER_API_KEY}\n")
    started = place.run("up", "--detach", timeout=400)

    assert started.returncode == 0, started.stdout + started.stderr
    # A first model was trained because there was none; the status table names every component.
    assert "no production model of transactions-classifier yet" in started.stdout
    status = place.wait_status_ok(None, timeout=30)
    for name in COMPONENTS:
        assert name in status
    assert "✗" not in status and "serving transactions-classifier:" in status
    # Each component's memory and CPU, its processes' and their workers' (the inference
    # service's BentoML worker, Prefect's own): what a laptop pays to keep the stack up.
    assert "memory of all components:" in status
    shown = json.loads(place.run("status", "--json").stdout)
    memory = {c["name"].split("[")[0]: c["rss_bytes"] for c in shown["components"]}
    assert set(memory) == COMPONENTS and all(held > 10 * 2**20 for held in memory.values())
    assert shown["rss_bytes"] == sum(memory.values())
    assert all(c["cpu_seconds"] > 0 and c["cpu_percent"] >= 0 for c in shown["components"])
    inference = next(c for c in shown["components"] if c["name"] == "inference")
    assert inference["processes"] >= 2  # `bentoml serve` and its worker
    # Secrets were made for the embedded stack, kept in .env (0600), never printed.
    dotenv = (place.folder / ".env").read_text()
    secrets = [line.split("=", 1)[1] for line in dotenv.splitlines() if "=" in line]
    assert len(secrets) == 5 and secrets[0] == USER_API_KEY  # four made by `up`
    assert (place.folder / ".env").stat().st_mode & 0o777 == 0o600
    log_text = (place.folder / ".driftloop" / "logs" / "up.log").read_text()
    for secret in secrets:
        assert secret not in started.stdout + started.stderr + log_text

    # The stack does its job: it answers predictions, Prometheus scrapes every service, and the
    # deployments are on the Prefect server.
    base = f"http://127.0.0.1:{place.ports['inference']}"
    assert httpx.get(f"{base}/model", timeout=10).status_code == 401
    record = httpx.get(f"{base}/model", headers={"X-API-Key": USER_API_KEY}, timeout=10).json()
    assert record["name"] == "transactions-classifier"
    # Each component has the secrets it uses and no others; Prometheus and Alertmanager none.
    named = dict(line.split("=", 1) for line in dotenv.splitlines() if "=" in line)
    lakefs_secret = named["DRIFTLOOP_LAKEFS__SECRET_ACCESS_KEY"]
    prefect_auth = named["DRIFTLOOP_PREFECT__AUTH_STRING"]
    environments = {name: environment_of(component_pid(place, name)) for name in COMPONENTS}
    for name in ("prometheus", "alertmanager"):
        assert not any(secret in environments[name] for secret in secrets), name
    others = [secret for secret in secrets if secret != prefect_auth]
    assert f"PREFECT_SERVER_API_AUTH_STRING={prefect_auth}" in environments["prefect-server"]
    assert not any(secret in environments["prefect-server"] for secret in others)
    assert USER_API_KEY in environments["inference"]
    assert lakefs_secret not in environments["inference"]
    assert prefect_auth not in environments["inference"]
    assert lakefs_secret in environments["monitor"] and USER_API_KEY not in environments["monitor"]
    assert (
        prefect_auth in environments["monitor"] and prefect_auth in environments["prefect-worker"]
    )
    # Prometheus signs its scrape of Prefect with a file only its user reads.
    credentials = place.folder / ".driftloop" / "prometheus" / "prefect-password"
    assert credentials.stat().st_mode & 0o777 == 0o600
    prometheus = f"http://127.0.0.1:{place.ports['prometheus']}"

    def target_health() -> dict[str, str] | None:
        targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=10).json()
        health = {t["labels"]["job"]: t["health"] for t in targets["data"]["activeTargets"]}
        return health if health and set(health.values()) == {"up"} else None

    health = eventually(target_health, "every Prometheus target up", timeout=60, interval=2)
    assert health == {"driftloop-inference": "up", "driftloop-monitor": "up", "prefect": "up"}
    # Prefect's API wants the stack's basic auth: an anonymous event or call is refused.
    api = place.prefect()
    event = Event(DRIFT_DETECTED, model_resource("transactions-classifier"))
    assert httpx.post(f"{api.url}/events", json=[event.to_json()]).status_code == 401
    assert httpx.post(f"{api.url}/deployments/filter", json={}).status_code == 401
    names = {d["name"] for d in api.post("/deployments/filter", {}).json()}
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
    # A retrain that is running when the stack stops (its process goes with it); the next
    # start must not leave it holding the retrain's only slot (test_ctrl_c... checks).
    retrain = next(d for d in api.post("/deployments/filter", {}).json() if d["name"] == "retrain")
    run = api.post(f"/deployments/{retrain['id']}/create_flow_run", {}).json()
    running = {"type": "RUNNING", "name": "Running"}
    api.post(
        f"/flow_runs/{run['id']}/set_state", {"state": running, "force": True}
    ).raise_for_status()
    (place.folder / "unfinished-run.json").write_text(json.dumps(run))

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
    unfinished = json.loads((place.folder / "unfinished-run.json").read_text())
    left = place.prefect().get(f"/flow_runs/{unfinished['id']}").json()
    pids = component_pids(place)
    os.killpg(up.pid, signal.SIGINT)
    output = place.finish(up)

    assert up.returncode == 0, output
    # The model from the first start is still production: no second bootstrap.
    assert "✓ production model transactions-classifier:" in output
    # The retrain the first stack left running was marked crashed, releasing its slot.
    assert "flow run(s) an earlier stack left unfinished as crashed" in output
    assert unfinished["name"] in output
    assert left["state_type"] == "CRASHED", left["state"]
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


def component_pid(place: Place, name: str) -> int:
    state = place.state()
    assert state is not None
    # The worker is "prefect-worker[<pool>]" in the state.
    found = [c for c in state["components"] if c["name"].split("[")[0] == name]
    assert found, (name, [c["name"] for c in state["components"]])
    return int(found[0]["pid"])


def status_rows(place: Place) -> dict[str, str]:
    """`driftloop status`'s table, one line per component name."""
    rows = {}
    for line in place.run("status").stdout.splitlines():
        for name in COMPONENTS:
            if f" {name} " in line:
                rows[name] = line
    return rows


class Traffic(threading.Thread):
    """Labelled concept-drift traffic to the stack's inference service until stopped, through
    its restarts: a refused connection is counted and tried again."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base, self.stop, self.answered, self.refused = base, threading.Event(), 0, 0

    def run(self) -> None:
        spec = load_spec("transactions")
        headers = {"X-API-Key": USER_API_KEY}
        seed = 100
        with httpx.Client(base_url=self.base, headers=headers, timeout=30) as client:
            while not self.stop.is_set():
                seed += 1
                frame = generate_transactions(200, seed=seed, scenario="concept_drift")
                records = frame_records(frame, spec.feature_names)
                truth = frame[spec.target].astype(int).tolist()
                for start in range(0, 200, 50):
                    try:
                        answers = client.post("/predict", json=records[start : start + 50])
                        answers.raise_for_status()
                        for answer, label in zip(answers.json(), truth[start:], strict=False):
                            feedback = {"prediction_id": answer["prediction_id"], "label": label}
                            client.post("/feedback", json=feedback).raise_for_status()
                        self.answered += 50
                    except httpx.HTTPError:
                        self.refused += 1
                        time.sleep(0.5)


def test_the_loop_closes_while_the_worker_inference_and_monitor_are_killed(place: Place) -> None:
    """kill -9 of the inference service, the monitor or the worker once stopped every component
    within about 6 s. Now each is started again and the loop still closes: the monitor is
    killed before drift, the worker while the retrain runs, inference while traffic flows."""
    up = place.start(**fast_monitor_env())
    traffic = Traffic(f"http://127.0.0.1:{place.ports['inference']}")
    try:
        place.wait_status_ok(up)
        prefect = place.prefect()
        old = httpx.get(
            f"{traffic.base}/model", headers={"X-API-Key": USER_API_KEY}, timeout=10
        ).json()["version"]
        killed = {"monitor": component_pid(place, "monitor")}
        os.killpg(killed["monitor"], signal.SIGKILL)
        since = datetime.now(UTC)
        traffic.start()

        def retrain_running() -> dict[str, Any] | None:
            runs = prefect.post(
                "/flow_runs/filter",
                {"flows": {"name": {"any_": ["retrain"]}}, "sort": "START_TIME_DESC"},
            ).json()
            fresh = [r for r in runs if datetime.fromisoformat(r["created"]) >= since]
            return next((r for r in fresh if r["state_type"] == "RUNNING"), None)

        run = eventually(retrain_running, "a retrain run to be running", timeout=240, interval=1)
        # The worker alone (the flow run it started is its child, and carries on).
        killed["prefect-worker"] = component_pid(place, "prefect-worker")
        os.kill(killed["prefect-worker"], signal.SIGKILL)
        time.sleep(1)
        killed["inference"] = component_pid(place, "inference")
        os.killpg(killed["inference"], signal.SIGKILL)

        def new_version() -> str | None:
            try:
                answer = httpx.get(
                    f"{traffic.base}/model", headers={"X-API-Key": USER_API_KEY}, timeout=5
                )
            except httpx.HTTPError:
                return None
            version = answer.json().get("version") if answer.status_code == 200 else None
            return version if version not in (None, old) else None

        serving = eventually(new_version, "a new version serving", timeout=300, interval=1)

        def finished() -> dict[str, Any] | None:
            state = prefect.get(f"/flow_runs/{run['id']}").json()
            return state if state["state_type"] not in ("RUNNING", "PENDING") else None

        # The new version serves once the run has promoted it; the run reports its end after.
        ended = eventually(finished, "the retrain run to end", timeout=60, interval=1)
        assert ended["state_type"] == "COMPLETED", ended["state"]
        rows = status_rows(place)
        for name in killed:
            assert " 1 (last: killed by SIGKILL" in rows[name], rows[name]
        assert " 0 " in rows["prefect-server"] and f":{serving}" in rows["inference"]
        assert up.poll() is None, place.output.read_text()
        assert traffic.answered > 0
    finally:
        traffic.stop.set()
        pids = component_pids(place)
        os.killpg(up.pid, signal.SIGINT)
        output = place.finish(up)
    assert up.returncode == 0, output
    assert "inference killed by SIGKILL; starting it again in 1 s" in output
    place.assert_all_stopped(pids)


def test_a_component_that_keeps_dying_stops_the_stack_with_the_reason(place: Place) -> None:
    up = place.start(DRIFTLOOP_STACK__RESTART_LIMIT="1")
    try:
        place.wait_status_ok(up)
        pids = component_pids(place)
        first = component_pid(place, "inference")
        os.killpg(first, signal.SIGKILL)
        eventually(lambda: component_pid(place, "inference") != first, "inference started again")
        os.killpg(component_pid(place, "inference"), signal.SIGKILL)
    finally:
        output = place.finish(up)

    assert up.returncode == 1
    assert "inference killed by SIGKILL" in output and "giving up" in output, output
    assert "logs/inference.log" in output
    place.assert_all_stopped(pids)
    status = place.run("status")
    assert status.returncode == 1
    assert "the last one stopped at" in status.stderr and "inference" in status.stderr


def test_a_taken_port_is_named_and_nothing_starts(place: Place) -> None:
    with socket.socket() as taken:
        # The earlier tests' monitor may leave connections in TIME_WAIT on its port; a listener
        # still holds it (Linux refuses this bind while another socket listens there).
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
