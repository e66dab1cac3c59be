"""The Prefect harness: a flow deployed to a process pool runs through a real worker."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment

from flows.common import prefect_api as prefect_client_at
from tests.integration.conftest import PrefectServer, PrefectWorker

FLOWS = Path(__file__).parent / "flows"
RUN_TIMEOUT = 180.0


@pytest.fixture
def prefect_api(prefect_server: PrefectServer) -> Iterator[str]:
    """Point this process's Prefect clients at the session server, with no ephemeral fallback."""
    with prefect_client_at(prefect_server.access):
        yield prefect_server.api_url


def deploy(entrypoint: str, name: str, pool: str) -> None:
    """Deploy a flow of tests/integration/flows from local source to a process pool."""
    flow: Flow[..., object] = Flow.from_source(source=str(FLOWS), entrypoint=entrypoint)
    flow.deploy(name=name, work_pool_name=pool, print_next_steps=False)


def test_deployed_flow_runs_through_worker_and_its_result_is_read_back(
    prefect_api: str, prefect_worker: PrefectWorker
) -> None:
    deploy("arithmetic.py:total", "sum", prefect_worker.pool)

    run = run_deployment(
        "harness-sum/sum", parameters={"numbers": [2, 3, 37]}, timeout=RUN_TIMEOUT, poll_interval=1
    )

    with get_client(sync_client=True) as client:
        stored = client.read_flow_run(run.id)
        task_runs = client.read_task_runs()
    assert stored.state is not None and stored.state.is_completed(), stored.state
    assert stored.work_pool_name == prefect_worker.pool
    assert stored.state.result() == 42
    assert len([t for t in task_runs if t.flow_run_id == run.id]) == 3


def test_failed_flow_reaches_the_api_as_failed_with_its_message(
    prefect_api: str, prefect_worker: PrefectWorker
) -> None:
    deploy("arithmetic.py:fail", "fail", prefect_worker.pool)

    run = run_deployment(
        "harness-fail/fail",
        parameters={"reason": "bad batch 17"},
        timeout=RUN_TIMEOUT,
        poll_interval=1,
    )

    assert run.state is not None and run.state.is_failed(), run.state
    with pytest.raises(ValueError, match="bad batch 17"):
        run.state.result()


def test_client_without_api_url_fails_loudly_instead_of_starting_a_server(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(tmp_path), "PREFECT_SERVER_EPHEMERAL_ENABLED": "false"}
    script = "from prefect import flow\nflow(lambda: 1, name='orphan')()\n"

    finished = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )

    assert finished.returncode != 0
    assert "PREFECT_API_URL" in finished.stderr or "API URL" in finished.stderr, finished.stderr
    assert not (tmp_path / "prefect.db").exists()


def test_runs_are_stored_in_the_database_the_server_was_given(
    prefect_api: str, prefect_server: PrefectServer
) -> None:
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(Flow(lambda: None, name="harness-stored"))

    assert str(run.id) in stored_flow_run_ids(prefect_server)


def stored_flow_run_ids(server: PrefectServer) -> set[str]:
    """Flow run ids read straight from the server's database, not through its API."""
    if server.database_url is None:
        with sqlite3.connect(server.home / "prefect.db") as connection:
            return {str(row[0]) for row in connection.execute("SELECT id FROM flow_run")}

    async def read() -> set[str]:
        connection = await asyncpg.connect(server.database_url.replace("+asyncpg", ""))
        try:
            return {str(row["id"]) for row in await connection.fetch("SELECT id FROM flow_run")}
        finally:
            await connection.close()

    return asyncio.run(read())
