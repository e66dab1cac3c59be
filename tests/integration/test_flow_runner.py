"""The stack's worker forks each flow run from its warm flow runner, and the run stays a Prefect
run in every way that shows: its state, result and logs, cancellation, a crash of its process,
and the runner's own death (real Prefect server, real worker, real processes)."""

from __future__ import annotations

import array
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterStartTime,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.deployments import run_deployment
from prefect.states import Cancelling

from driftloop.stack.processes import Component, descendants, pid_alive
from driftloop.stack.servers import ensure_process_pool
from flows.common import prefect_api
from tests.integration.conftest import PrefectServer, start_test_worker
from tests.polling import eventually

FLOWS = Path(__file__).parent / "flows"
POOL = "driftloop-flow-runner"
RUN_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def worker(
    prefect_server: PrefectServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Component]:
    """The stack's worker (warm) on a pool of its own, with the test flows deployed to it."""
    folder = tmp_path_factory.mktemp("flow-runner")
    # These tests are about a warm runner: it must not cool between them (the next test does).
    component = start_test_worker(
        prefect_server,
        POOL,
        folder,
        query_seconds=0.5,
        env={"DRIFTLOOP_PREFECT__RUNNER_COOL_SECONDS": "0"},
    ).component
    deployed = []
    try:
        with prefect_api(prefect_server.access):
            for entrypoint in ("processes.py:where", "processes.py:sleepy"):
                flow: Flow[..., object] = Flow.from_source(source=str(FLOWS), entrypoint=entrypoint)
                deployed.append(
                    flow.deploy(name="test", work_pool_name=POOL, print_next_steps=False)
                )
            runner_ready(component)
            yield component
    finally:
        component.stop()
        with prefect_api(prefect_server.access), get_client(sync_client=True) as client:
            for deployment_id in deployed:  # the session's server is other tests' too
                client.delete_deployment(deployment_id)


def runner_pid(worker: Component) -> int | None:
    """The worker's flow runner: its child running driftloop.stack.flow_runner (the runs it
    forks carry the same command line one level further down)."""
    for pid in descendants(worker.process.pid):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if b"driftloop.stack.flow_runner" in command and parent == worker.process.pid:
            return pid
    return None


def runner_ready(worker: Component) -> int:
    """Wait until the flow runner has imported the flows; its pid."""
    eventually(
        lambda: "each flow run is forked from here" in worker.log_tail(200),
        "the flow runner to have imported the flows",
        timeout=120,
    )
    pid = runner_pid(worker)
    assert pid is not None, worker.log_tail(50)
    return pid


def run(name: str, **parameters: Any) -> Any:
    return run_deployment(
        f"{name}/test", parameters=parameters, timeout=RUN_TIMEOUT, poll_interval=0.5
    )


def start(name: str, **parameters: Any) -> UUID:
    """Create a run and return at once (timeout 0)."""
    return run_deployment(f"{name}/test", parameters=parameters, timeout=0).id


def state_of(run_id: UUID) -> str:
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state
    return state.type.value if state else ""


def test_a_run_is_forked_warm_and_reports_like_any_other(
    prefect_server: PrefectServer, worker: Component
) -> None:
    runner = runner_pid(worker)
    with prefect_api(prefect_server.access):
        finished = run("runner-where")
        assert finished.state is not None and finished.state.is_completed(), finished.state
        where = finished.state.result()
        # Forked by the runner, with the project's flows and scikit-learn already imported.
        assert where["ppid"] == runner and where["warm"] is True, where
        # The run's process ends once the run has reported its end, its logs sent.
        eventually(lambda: not pid_alive(where["pid"]), "the run's process to end", timeout=30)

        def logged() -> bool:
            with get_client(sync_client=True) as client:
                logs = client.read_logs(
                    LogFilter(flow_run_id=LogFilterFlowRunId(any_=[finished.id]))
                )
            return any(f"running in process {where['pid']}" in log.message for log in logs)

        eventually(logged, "the run's log line in Prefect", timeout=30)


def sleeping(tmp_path: Path) -> tuple[UUID, int]:
    """A run that sleeps 300 s, once its process is running: its id and its process id."""
    pid_file = tmp_path / "pid"
    run_id = start("runner-sleepy", seconds=300, pid_file=str(pid_file))
    pid = eventually(
        lambda: pid_file.exists() and int(pid_file.read_text()), "the run to start", timeout=60
    )
    return run_id, pid


def test_cancelling_a_forked_run_ends_its_process(
    prefect_server: PrefectServer, worker: Component, tmp_path: Path
) -> None:
    with prefect_api(prefect_server.access):
        run_id, pid = sleeping(tmp_path)
        assert state_of(run_id) == "RUNNING"
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(run_id, Cancelling(), force=True)
        eventually(lambda: state_of(run_id) == "CANCELLED", "the run to be cancelled", timeout=60)
    eventually(lambda: not pid_alive(pid), "the run's process to end", timeout=30)


def test_a_run_whose_process_is_killed_is_reported_crashed(
    prefect_server: PrefectServer, worker: Component, tmp_path: Path
) -> None:
    with prefect_api(prefect_server.access):
        run_id, pid = sleeping(tmp_path)
        os.kill(pid, signal.SIGKILL)
        eventually(lambda: state_of(run_id) == "CRASHED", "the run to be crashed", timeout=60)


def test_runs_go_on_when_the_runner_dies_and_the_next_runner_takes_over(
    prefect_server: PrefectServer, worker: Component, tmp_path: Path
) -> None:
    first = runner_pid(worker)
    assert first is not None
    pid_file = tmp_path / "pid"
    with prefect_api(prefect_server.access):
        running = start("runner-sleepy", seconds=4, pid_file=str(pid_file))
        eventually(pid_file.exists, "the run to start", timeout=60)
        os.kill(first, signal.SIGKILL)
        # The run was a process of its own: it finishes without its runner.
        eventually(lambda: state_of(running) == "COMPLETED", "the run to complete", timeout=60)

        # The next run finds the runner gone: the worker starts another and this run goes cold.
        cold = run("runner-where")
        assert cold.state is not None and cold.state.is_completed(), cold.state
        assert cold.state.result()["warm"] is False

        second = runner_ready_again(worker, first)
        warm = run("runner-where")
    assert warm.state is not None and warm.state.is_completed(), warm.state
    assert warm.state.result()["ppid"] == second and warm.state.result()["warm"] is True


def runner_ready_again(worker: Component, dead: int) -> int:
    """The runner started after ``dead``, once it has imported the flows."""
    eventually(
        lambda: worker.log_tail(400).count("each flow run is forked from here") >= 2,
        "a new flow runner to have imported the flows",
        timeout=120,
    )
    pid = runner_pid(worker)
    assert pid is not None and pid != dead
    return pid


WARMING_EVENT = "driftloop.test.runner-warm"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def holds_scikit_learn(pid: int) -> bool:
    return "/sklearn/" in Path(f"/proc/{pid}/maps").read_text()


def test_an_idle_runner_cools_and_an_event_that_starts_a_deployment_warms_it(
    prefect_server: PrefectServer, tmp_path: Path
) -> None:
    """Idle for its cool-down, the runner lets the flows' imports go (same process, far less
    memory) and still forks runs, which import the flows themselves; an event that an automation
    answers with a run of the pool's deployment warms it, and that run starts warm."""
    from prefect.events import DeploymentEventTrigger

    pool = "driftloop-flow-runner-cooling"
    ensure_process_pool(prefect_server.access, pool)
    with prefect_api(prefect_server.access):  # deployed first: the worker reads its triggers
        flow: Flow[..., object] = Flow.from_source(
            source=str(FLOWS), entrypoint="processes.py:where"
        )
        deployment_id = flow.deploy(
            name="cooling",
            work_pool_name=pool,
            print_next_steps=False,
            triggers=[
                DeploymentEventTrigger(
                    expect={WARMING_EVENT}, match={"prefect.resource.id": "driftloop.test.*"}
                )
            ],
        )
    worker = start_test_worker(
        prefect_server,
        pool,
        tmp_path,
        query_seconds=0.5,
        env={"DRIFTLOOP_PREFECT__RUNNER_COOL_SECONDS": "3"},
    ).component
    try:
        runner = runner_ready(worker)
        warm_rss = rss_mb(runner)
        eventually(lambda: "cooling" in worker.log_tail(200), "the runner to cool", timeout=60)
        eventually(lambda: not holds_scikit_learn(runner), "scikit-learn let go", timeout=30)
        assert runner_pid(worker) == runner  # the same process, cool
        assert rss_mb(runner) < warm_rss - 150, (warm_rss, rss_mb(runner))

        with prefect_api(prefect_server.access):
            cool = run_deployment("runner-where/cooling", timeout=RUN_TIMEOUT, poll_interval=0.5)
            assert cool.state is not None and cool.state.is_completed(), cool.state
            assert cool.state.result() | {"pid": 0} == {"pid": 0, "ppid": runner, "warm": False}

            started = datetime.now(UTC)
            response = prefect_server.access.post(
                "/events",
                [
                    {
                        "id": str(uuid4()),
                        "occurred": started.isoformat(),
                        "event": WARMING_EVENT,
                        "resource": {"prefect.resource.id": "driftloop.test.runner"},
                        "payload": {},
                    }
                ],
            )
            response.raise_for_status()

            def triggered() -> Any:
                with get_client(sync_client=True) as client:
                    runs = client.read_flow_runs(
                        deployment_filter=DeploymentFilter(
                            id=DeploymentFilterId(any_=[deployment_id])
                        ),
                        flow_run_filter=FlowRunFilter(
                            start_time=FlowRunFilterStartTime(after_=started)
                        ),
                    )
                return next(
                    (found for found in runs if found.state and found.state.is_final()), None
                )

            by_event = eventually(
                triggered, "the run the event started to end", timeout=RUN_TIMEOUT
            )
            assert by_event.state.is_completed(), by_event.state
            assert by_event.state.result()["ppid"] == runner
            assert by_event.state.result()["warm"] is True  # the event warmed the runner first
        assert f"event {WARMING_EVENT}: the flow runner warms up" in worker.log_tail(400)
        assert holds_scikit_learn(runner)
    finally:
        worker.stop()
        with prefect_api(prefect_server.access), get_client(sync_client=True) as client:
            client.delete_deployment(deployment_id)


def test_without_a_runner_the_client_starts_the_run_cold() -> None:
    """The command a run starts with, when no runner answers at its address: it becomes
    `python -m prefect.engine` (here without a run to load, so the engine refuses)."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT__FLOW_RUN_ID"}
    finished = subprocess.run(
        [sys.executable, "-m", "driftloop.stack.flow_client", "no-runner-here"],
        env={**env, "PREFECT_API_URL": "http://127.0.0.1:9/api"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "not answering: starting the run cold" in finished.stderr
    assert finished.returncode == 1 and "Invalid flow run id" in finished.stderr, finished.stderr


def test_a_run_the_runner_refuses_starts_cold() -> None:
    """A runner that says no (its code changed on disk since it imported it): the client starts
    the run cold rather than failing it. Here the runner is a socket of this test's."""
    address = f"driftloop-test-runner-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as listener:
        listener.bind("\0" + address)
        listener.listen(1)
        client = subprocess.Popen(
            [sys.executable, "-m", "driftloop.stack.flow_client", address],
            env={**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"},
            stderr=subprocess.PIPE,
            text=True,
        )
        connection, _ = listener.accept()
        with connection:
            _, ancillary, _, _ = connection.recvmsg(1 << 20, socket.CMSG_SPACE(12))
            for _, _, payload in ancillary:  # the client's standard streams: not ours to keep
                for stream in array.array("i", payload):
                    os.close(stream)
            connection.send(b"refused: flows/common.py changed since the flow runner imported it")
        _, stderr = client.communicate(timeout=120)
    assert "refused: flows/common.py changed" in stderr and "starting the run cold" in stderr
    assert client.returncode == 1 and "Invalid flow run id" in stderr, stderr
