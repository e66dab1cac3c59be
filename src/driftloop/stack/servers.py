"""The local stack's servers, started as real processes: Prefect server and process worker.

``driftloop up`` and the integration tests start the same components through these functions, so
what the tests exercise is what a user runs.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from driftloop.prefect_api import PrefectAccess
from driftloop.stack.processes import Component, start_component


def prefect_executable() -> str:
    """The ``prefect`` command of this environment (beside the running interpreter first)."""
    beside = Path(sys.executable).with_name("prefect")
    if beside.exists():
        return str(beside)
    found = shutil.which("prefect")
    if found is None:
        raise FileNotFoundError("the `prefect` command is not installed in this environment")
    return found


def prefect_server_env(
    prefect_home: Path, database_url: str | None = None, auth_string: str | None = None
) -> dict[str, str]:
    """Environment of a Prefect server: its own home, SQLite there unless given a database URL,
    and basic auth on its API when given ``auth_string`` (only ``GET /api/health`` and
    ``/api/ready`` stay open, for probes)."""
    env = {
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_LOGGING_LEVEL": "INFO",
    }
    if database_url:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
    if auth_string:
        env["PREFECT_SERVER_API_AUTH_STRING"] = auth_string
    return env


def start_prefect_server(
    *,
    host: str,
    port: int,
    prefect_home: Path,
    log_path: Path,
    database_url: str | None = None,
    auth_string: str | None = None,
    ui: bool = True,
    extra_env: dict[str, str] | None = None,
) -> Component:
    """Start ``prefect server start`` on ``host:port``, with basic auth when given
    ``auth_string``; wait for it with ``wait_healthy``."""
    prefect_home.mkdir(parents=True, exist_ok=True)
    command = [prefect_executable(), "server", "start", "--host", host, "--port", str(port)]
    command.append("--ui" if ui else "--no-ui")
    return start_component(
        "prefect-server",
        command,
        health_url=f"http://{host}:{port}/api/health",
        log_path=log_path,
        env={**prefect_server_env(prefect_home, database_url, auth_string), **(extra_env or {})},
    )


def ensure_process_pool(prefect: PrefectAccess, pool: str) -> None:
    """Create the process work pool ``pool`` on the server ``prefect`` unless it exists."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    from flows.common import prefect_api

    with (
        prefect_api(prefect),
        get_client(sync_client=True) as client,
    ):
        try:
            client.read_work_pool(pool)
            return
        except ObjectNotFound:
            pass
        template = ProcessWorker.get_default_base_job_template()
        try:
            client.create_work_pool(
                WorkPoolCreate(name=pool, type="process", base_job_template=template)
            )
        except ObjectAlreadyExists:
            pass  # created concurrently


def drain_prefect_client(timeout: float = 10.0) -> None:
    """Send this process's queued Prefect logs and events now, before a server goes away.

    Otherwise they are sent at interpreter exit, and if the server is already stopped the
    process hangs in retries for a minute and prints connection errors.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=timeout)
    EventsWorker.drain_all(timeout=timeout)


def start_process_worker(
    *,
    prefect: PrefectAccess,
    pool: str,
    log_path: Path,
    query_seconds: float = 2.0,
    warm: bool = True,
    cwd: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> Component:
    """Start the stack's process worker on ``pool`` (``driftloop.stack.worker``: Prefect's, with
    each flow run forked from a warm flow runner unless ``warm`` is false); it polls the server
    every ``query_seconds``.

    Its health URL is the server's: the worker has no HTTP endpoint of its own; check
    ``process.poll()`` for its liveness.
    """
    command = [sys.executable, "-m", "driftloop.stack.worker", "--pool", pool]
    if not warm:
        command.append("--cold")
    env = {
        **prefect.client_env(),
        "PREFECT_WORKER_QUERY_SECONDS": str(query_seconds),
        **(extra_env or {}),
    }
    return start_component(
        f"prefect-worker[{pool}]",
        command,
        health_url=f"{prefect.url}/health",
        log_path=log_path,
        env=env,
        cwd=cwd,
    )


def driftloop_executable() -> str:
    """The ``driftloop`` command of this environment."""
    beside = Path(sys.executable).with_name("driftloop")
    return str(beside) if beside.exists() else (shutil.which("driftloop") or "driftloop")


def start_lakefs_server(
    *,
    home: Path,
    host: str,
    port: int,
    log_path: Path,
    access_key_id: str | None,
    secret_access_key: str | None,
    crash_at: str = "",
) -> Component:
    """Start the embedded lakeFS-compatible server on ``home`` (what ``driftloop lakefs serve``
    runs, without the CLI's imports).

    ``crash_at`` is for the crash-consistency tests only (the server kills itself there).
    """
    env = {"DRIFTLOOP_HOME": str(home)}
    if access_key_id and secret_access_key:
        env["DRIFTLOOP_LAKEFS__ACCESS_KEY_ID"] = access_key_id
        env["DRIFTLOOP_LAKEFS__SECRET_ACCESS_KEY"] = secret_access_key
    return start_component(
        "lakefs",
        [
            sys.executable,
            "-m",
            "services.lakefs_local.server",
            "--host",
            host,
            "--port",
            str(port),
            *(["--crash-at", crash_at] if crash_at else []),
        ],
        health_url=f"http://{host}:{port}/api/v1/healthcheck",
        log_path=log_path,
        env=env,
    )


def start_inference_server(
    *,
    host: str,
    port: int,
    log_path: Path,
    env: dict[str, str],
    cwd: Path,
) -> Component:
    """``bentoml serve`` the inference service; healthy once /readyz says a model is loaded."""
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    command = [
        bentoml,
        "serve",
        "services.inference.service:InferenceService",
        "--host",
        host,
        "--port",
        str(port),
    ]
    return start_component(
        "inference",
        command,
        health_url=f"http://{host}:{port}/readyz",
        log_path=log_path,
        env={"BENTOML_DO_NOT_TRACK": "true", **env},
        cwd=cwd,
    )


def start_monitor_server(
    *,
    host: str,
    port: int,
    log_path: Path,
    env: dict[str, str],
    cwd: Path,
) -> Component:
    """The monitor (``python -m services.monitor.server``); healthy once /healthz answers."""
    return start_component(
        "monitor",
        [sys.executable, "-m", "services.monitor.server"],
        health_url=f"http://{host}:{port}/healthz",
        log_path=log_path,
        env={"DRIFTLOOP_MONITOR__HOST": host, "DRIFTLOOP_MONITOR__PORT": str(port), **env},
        cwd=cwd,
    )


def start_prometheus(
    *, config: Path, host: str, port: int, data: Path, log_path: Path
) -> Component:
    """Debian's ``prometheus`` with ``config``; healthy once /-/ready answers."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise FileNotFoundError("prometheus is not on PATH (Debian package: prometheus)")
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address={host}:{port}",
        "--web.enable-lifecycle",
    ]
    return start_component(
        "prometheus", command, health_url=f"http://{host}:{port}/-/ready", log_path=log_path
    )


def start_alertmanager(
    *, config: Path, host: str, port: int, data: Path, log_path: Path
) -> Component:
    """Debian's ``prometheus-alertmanager`` with ``config``, no cluster port; /-/ready health."""
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        raise FileNotFoundError(
            "alertmanager is not on PATH (Debian package: prometheus-alertmanager)"
        )
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.path={data}",
        f"--web.listen-address={host}:{port}",
        "--cluster.listen-address=",
    ]
    return start_component(
        "alertmanager", command, health_url=f"http://{host}:{port}/-/ready", log_path=log_path
    )
