"""Session fixtures that start real processes: a Prefect server and a process worker.

The server runs on SQLite in its own PREFECT_HOME by default, and on PostgreSQL when
DRIFTLOOP_TEST_DATABASE_URL is set (a postgresql+asyncpg:// URL to an empty database). Every
process is torn down at the end of the session, and the logs of the processes a failing test used
are attached to its report.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from driftloop.lakefs_client import LakeFSClient
from driftloop.prefect_api import PrefectAccess
from driftloop.stack.processes import Component, free_port
from driftloop.stack.servers import (
    drain_prefect_client,
    ensure_process_pool,
    start_inference_server,
    start_lakefs_server,
    start_monitor_server,
    start_prefect_server,
    start_process_worker,
    start_prometheus,
)
from flows.common import prefect_api
from tests.integration.databases import fresh_database

SERVER_START_TIMEOUT = 120.0
# Test credentials of the embedded lakeFS-compatible server; they exist only inside the test run.
LAKEFS_KEY = "AKIAIOSFODNN7TESTKEY"
LAKEFS_SECRET = "test-secret-" + os.urandom(8).hex()
# Basic auth of the session's Prefect server, as `driftloop up` sets one.
PREFECT_AUTH = "driftloop:test-" + os.urandom(8).hex()


@dataclass(frozen=True)
class PrefectServer:
    """A running Prefect server for the test session."""

    api_url: str
    component: Component
    home: Path
    database_url: str | None
    auth_string: str

    @property
    def access(self) -> PrefectAccess:
        """The server's API with its basic auth."""
        return PrefectAccess(self.api_url, auth_string=self.auth_string)

    def client_env(self) -> dict[str, str]:
        """Environment for processes using Prefect's own client against this server."""
        return self.access.client_env()

    def settings_env(self) -> dict[str, str]:
        """driftloop's settings for this server."""
        return {
            "DRIFTLOOP_PREFECT__API_URL": self.api_url,
            "DRIFTLOOP_PREFECT__AUTH_STRING": self.auth_string,
        }


@dataclass(frozen=True)
class PrefectWorker:
    """A process worker polling a work pool of the session's server."""

    pool: str
    component: Component
    results_path: Path


def pytest_configure(config: pytest.Config) -> None:
    # Marks every test in this folder, so `-m "not integration"` runs only the fast ones.
    config.addinivalue_line("markers", "integration: starts real processes")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            component = getattr(value, "component", None)
            if isinstance(component, Component):
                report.sections.append((f"{component.name} log", component.log_tail(200)))
    return report


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A real `prefect server start` on a free port, torn down after the session."""
    home = tmp_path_factory.mktemp("prefect-home")
    with ExitStack() as cleanup:
        database_url = os.environ.get("DRIFTLOOP_TEST_DATABASE_URL") or None
        if database_url and os.environ.get("PYTEST_XDIST_WORKER"):
            # Each pytest-xdist worker has its own server: one database each, on the same
            # PostgreSQL, or they would apply each other's deployments.
            fresh = cleanup.enter_context(fresh_database("postgresql", home, "prefect"))
            database_url = str(sa.make_url(fresh).set(drivername="postgresql+asyncpg"))
        yield from _prefect_server(home, database_url)


def _prefect_server(home: Path, database_url: str | None) -> Iterator[PrefectServer]:
    port = free_port()
    component = start_prefect_server(
        host="127.0.0.1",
        port=port,
        prefect_home=home,
        log_path=home / "server.log",
        database_url=database_url,
        auth_string=PREFECT_AUTH,
        ui=False,
    )
    try:
        component.wait_healthy(timeout=SERVER_START_TIMEOUT)
        yield PrefectServer(
            f"http://127.0.0.1:{port}/api", component, home, database_url, PREFECT_AUTH
        )
    finally:
        drain_prefect_client()  # flows run in this process: their logs go out before the server
        component.stop()


@pytest.fixture(scope="session")
def prefect_worker(
    prefect_server: PrefectServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrefectWorker]:
    """A real process worker on a fresh process work pool of the session's server."""
    folder = tmp_path_factory.mktemp("prefect-worker")
    worker = start_test_worker(prefect_server, "driftloop-test", folder)
    try:
        yield worker
    finally:
        worker.component.stop()


def start_test_worker(
    prefect_server: PrefectServer,
    pool: str,
    folder: Path,
    query_seconds: float = 1,
    env: dict[str, str] | None = None,
) -> PrefectWorker:
    """The stack's worker on ``pool`` (created if missing), its log and flow results (kept, so
    tests read them back) in ``folder``; ``env`` added to its environment."""
    ensure_process_pool(prefect_server.access, pool)
    results = folder / "results"
    component = start_process_worker(
        prefect=prefect_server.access,
        pool=pool,
        log_path=folder / "worker.log",
        query_seconds=query_seconds,
        extra_env={
            "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
            "PREFECT_LOCAL_STORAGE_PATH": str(results),
            **(env or {}),
        },
    )
    return PrefectWorker(pool, component, results)


@dataclass(frozen=True)
class LakeFSServer:
    """A running lakeFS-compatible server with its credentials."""

    endpoint: str
    access_key_id: str
    secret_access_key: str
    home: Path
    component: Component

    @property
    def api(self) -> str:
        return f"{self.endpoint}/api/v1"

    def client(self, repository: str) -> LakeFSClient:
        return LakeFSClient(
            self.endpoint,
            self.access_key_id,
            self.secret_access_key,
            repository,
            retries=2,
            backoff_seconds=0.2,
        )

    def settings_env(self) -> dict[str, str]:
        """DRIFTLOOP_ variables that point driftloop's settings at this server."""
        return {
            "DRIFTLOOP_LAKEFS__ENDPOINT": self.endpoint,
            "DRIFTLOOP_LAKEFS__ACCESS_KEY_ID": self.access_key_id,
            "DRIFTLOOP_LAKEFS__SECRET_ACCESS_KEY": self.secret_access_key,
        }


def run_lakefs_server(
    home: Path,
    *,
    credentials: bool = True,
    port: int | None = None,
    crash_at: str = "",
) -> LakeFSServer:
    """Start `driftloop lakefs serve` over ``home`` (on a free port) and wait until healthy."""
    port = port or free_port()
    home.mkdir(parents=True, exist_ok=True)
    component = start_lakefs_server(
        home=home,
        host="127.0.0.1",
        port=port,
        log_path=home / f"lakefs-{port}.log",
        access_key_id=LAKEFS_KEY if credentials else None,
        secret_access_key=LAKEFS_SECRET if credentials else None,
        crash_at=crash_at,
    )
    try:
        component.wait_healthy(timeout=60)
    except Exception:
        component.stop()
        raise
    return LakeFSServer(f"http://127.0.0.1:{port}", LAKEFS_KEY, LAKEFS_SECRET, home, component)


@pytest.fixture(scope="session")
def lakefs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LakeFSServer]:
    """The session's lakeFS-compatible server, a real subprocess."""
    server = run_lakefs_server(tmp_path_factory.mktemp("lakefs-home"))
    try:
        yield server
    finally:
        server.component.stop()


@pytest.fixture
def fresh_lakefs_server(tmp_path: Path) -> Iterator[LakeFSServer]:
    """A lakeFS-compatible server of the test's own, on an empty folder."""
    server = run_lakefs_server(tmp_path / "lakefs-home")
    try:
        yield server
    finally:
        server.component.stop()


PROJECT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ServedWorld:
    """A model trained on the session's servers, deployed, and served by real processes."""

    env: dict[str, str]
    prefect: PrefectAccess
    pool: str
    home: Path
    retrain_id: str
    inference: Component
    monitor: Component


@contextmanager
def served_world(
    prefect_server: PrefectServer,
    lakefs_server: LakeFSServer,
    home: Path,
    *,
    rows: int,
    settings: dict[str, str],
    worker: bool,
) -> Iterator[ServedWorld]:
    """On the session's Prefect and lakeFS servers, with a repository and work pool of its own:
    land ``rows`` transactions and train, apply prefect.yaml (`driftloop deploy`), start a process
    worker when ``worker``, `bentoml serve` and the monitor with ``settings`` (DRIFTLOOP_*
    variables), and stop them all at the end. The test process sees the same environment."""

    from flows.ingest import ingest
    from flows.train import train
    from tests.commands import run_driftloop

    pool = f"{home.name}-{uuid.uuid4().hex[:6]}"
    env = {
        **lakefs_server.settings_env(),
        "DRIFTLOOP_LAKEFS__REPOSITORY": f"world-{uuid.uuid4().hex[:8]}",
        "DRIFTLOOP_HOME": str(home),
        **prefect_server.settings_env(),
        "DRIFTLOOP_PREFECT__WORK_POOL": pool,
        "BENTOML_HOME": os.environ["BENTOML_HOME"],
        **settings,
    }
    patch = pytest.MonkeyPatch()
    for name, value in env.items():
        patch.setenv(name, value)
    components: list[Component] = []
    try:
        with prefect_api(prefect_server.access):
            ingest("transactions-classifier", f"builtin:?rows={rows}&seed=1", batch_id="day-1")
            train()
        ensure_process_pool(prefect_server.access, pool)
        deployed = run_driftloop("deploy", cwd=PROJECT, env=env)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        deployments = prefect_server.access.post("/deployments/filter", {}).json()
        retrain_id = next(
            d["id"] for d in deployments if d["name"] == "retrain" and d["work_pool_name"] == pool
        )
        if worker:
            components.append(
                start_process_worker(
                    prefect=prefect_server.access,
                    pool=pool,
                    log_path=home / "worker.log",
                    query_seconds=1,
                    cwd=PROJECT,
                    extra_env=env,
                )
            )
        inference = start_inference_server(
            host="127.0.0.1",
            port=free_port(),
            log_path=home / "inference.log",
            env=env,
            cwd=PROJECT,
        )
        components.append(inference)
        monitor = start_monitor_server(
            host="127.0.0.1", port=free_port(), log_path=home / "monitor.log", env=env, cwd=PROJECT
        )
        components.append(monitor)
        inference.wait_healthy(timeout=120)
        monitor.wait_healthy(timeout=60)
        yield ServedWorld(env, prefect_server.access, pool, home, retrain_id, inference, monitor)
    finally:
        for component in reversed(components):
            component.stop()
        patch.undo()


def root(component: Component) -> str:
    """http://host:port of a component, from its health URL."""
    scheme, _, rest = component.health_url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


def scraping_prometheus(
    home: Path, world: ServedWorld, alertmanager: str, **config: Any
) -> Component:
    """A Prometheus (the project's config and rules, ``config`` for write_prometheus_config:
    intervals, ``rule_for``) scraping ``world``'s service and monitor every second, sending
    alerts to ``alertmanager`` (host:port), its data and log under ``home``; started (the caller
    waits for it to be healthy and stops it)."""
    from driftloop.observability import Targets, write_prometheus_config

    prometheus = start_prometheus(
        config=write_prometheus_config(
            home / "prometheus",
            Targets(
                inference=root(world.inference).removeprefix("http://"),
                monitor=root(world.monitor).removeprefix("http://"),
                prefect=None,
                alertmanager=alertmanager,
            ),
            **{"scrape_interval": "1s", "evaluation_interval": "1s", **config},
        ),
        host="127.0.0.1",
        port=free_port(),
        data=home / "prometheus" / "data",
        log_path=home / "prometheus.log",
    )
    return prometheus
