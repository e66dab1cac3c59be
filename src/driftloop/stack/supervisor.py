"""The supervisor of the embedded stack: what ``driftloop up`` runs.

``driftloop up`` is a supervisor process. It starts every component as a child process of its own
(its own process group, its log under ``<home>/logs``), in order, waiting on each one's health:

1. the Prefect server (SQLite under ``<home>/prefect``, /api/metrics on) and the embedded
   lakeFS-compatible server (data under ``<home>/lakefs``; not started when
   ``DRIFTLOOP_LAKEFS__ENDPOINT`` names another lakeFS, which is then only checked);
2. the process work pool and the deployments of prefect.yaml (``driftloop deploy``);
3. a first model when there is no production model yet (``bootstrap``; setting
   ``stack.bootstrap``): a built-in batch landed through its branch, then the train flow;
4. the process worker, the inference service (``bentoml serve``) and the monitor;
5. Alertmanager and Prometheus with the project's configuration for these ports, when their
   binaries are on PATH (``stack.observability``).

What runs is written to ``<home>/stack.json`` (pids, URLs, health URLs, logs) as it starts, so
``driftloop status`` and ``driftloop down`` in another shell find it, also halfway through a
start. On Ctrl-C or SIGTERM the supervisor stops the components in reverse order (SIGTERM, then
SIGKILL after a grace period) and removes the state file.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Literal

import httpx

from driftloop.observability import Targets, write_alertmanager_config, write_prometheus_config
from driftloop.settings import Settings, settings_from_env
from driftloop.stack.bootstrap import ensure_production_model
from driftloop.stack.credentials import local_secrets
from driftloop.stack.deploy import DeployError, apply
from driftloop.stack.errors import StackError, Stop
from driftloop.stack.health import check
from driftloop.stack.ports import PortPlan
from driftloop.stack.processes import (
    Component,
    ComponentFailed,
    become_subreaper,
    descendants,
    pid_alive,
    stop_pids,
)
from driftloop.stack.servers import (
    start_alertmanager,
    start_inference_server,
    start_lakefs_server,
    start_monitor_server,
    start_prefect_server,
    start_process_worker,
    start_prometheus,
)
from driftloop.stack.state import Record, down, read_state, remove_own_state, write_state


class LocalStack:
    """Start, supervise and stop the embedded stack for ``settings``.

    ``extra_env`` goes to every component and into this process's settings (the demo shortens
    the monitor's cadence with it); the process environment is never changed.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        project: Path,
        say: Callable[[str], None],
        extra_env: Mapping[str, str] | None = None,
        dotenv: Path | None = None,
    ) -> None:
        self.settings = settings
        self.project = project
        self.say = say
        self.extra_env = dict(extra_env or {})
        self.dotenv = dotenv
        self.home = settings.home.resolve()
        self.logs = self.home / "logs"
        self.running: list[tuple[Component, Record]] = []
        self.env: dict[str, str] = {}
        self.has_model = False
        self.plan = PortPlan.of(settings)

    # -- the whole life of a stack ---------------------------------------------------------

    @contextmanager
    def running_stack(self) -> Iterator[LocalStack]:
        """Start everything, yield, stop everything (also on Ctrl-C, SIGTERM and errors)."""
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

        def stop(signum: int, frame: FrameType | None) -> None:
            raise Stop(signal.Signals(signum).name)

        for sig in previous:
            signal.signal(sig, stop)
        become_subreaper()
        try:
            self.start()
            yield self
        finally:
            # A second signal during the stop must not leave processes behind.
            for sig in previous:
                signal.signal(sig, signal.SIG_IGN)
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def supervise(self, poll_seconds: float = 2.0) -> None:
        """Block until a component exits (StackError naming it) or a signal arrives (Stop)."""
        while True:
            changed = False
            for component, record in self.running:
                code = component.process.poll()
                if code is not None:
                    raise StackError(
                        f"{component.name} exited with code {code}; log: {component.log_path}\n"
                        f"{component.log_tail(20)}"
                    )
                children = sorted(descendants(component.process.pid))
                changed |= children != record.children
                record.children = children
            if changed:
                self._write_state(ready=True)
            time.sleep(poll_seconds)

    def start(self) -> None:
        state = read_state(self.settings)
        if state is not None and pid_alive(int(state["supervisor"])):
            raise StackError(
                f"a stack is already running under {self.home} (supervisor pid "
                f"{state['supervisor']}); see `driftloop status`, stop it with `driftloop down`"
            )
        if state is not None:
            down(self.settings, self.say)  # the leftovers of a supervisor that was killed
        self.plan.check_free()
        self.home.mkdir(parents=True, exist_ok=True)
        self._prepare_environment()
        self._write_state(ready=False)
        self.say(f"state under {self.home}, logs under {self.logs}")
        self._start_servers()
        self._deploy()
        self._bootstrap()
        self._start_services()
        if self.plan.observability:
            self._start_observability()
        else:
            self.say(
                "Prometheus and Alertmanager not started "
                + (
                    "(DRIFTLOOP_STACK__OBSERVABILITY=off)"
                    if self.settings.stack.observability == "off"
                    else "(not on PATH; Debian packages prometheus, prometheus-alertmanager)"
                )
            )
        self._write_state(ready=True)

    def stop(self) -> None:
        """Stop every started component, last started first; remove the state file."""
        if self.running:
            self.say("stopping " + ", ".join(c.name for c, _ in reversed(self.running)) + " ...")
        for component, _ in reversed(self.running):
            component.stop()
        self.running.clear()
        # Worker processes whose server died are ours now (subreaper): stop them too.
        orphans = descendants(os.getpid())
        if orphans:
            self.say(f"stopping {len(orphans)} process(es) left behind by stopped components")
            stop_pids(orphans)
        remove_own_state(self.settings)

    def records(self) -> list[Record]:
        return [record for _, record in self.running]

    # -- steps ------------------------------------------------------------------------------

    def _prepare_environment(self) -> None:
        settings = self.settings
        api_url = str(settings.prefect.api_url).rstrip("/")
        lakefs_secrets = local_secrets(settings, self.dotenv, embedded=self.plan.embedded_lakefs)
        self.env = {
            "DRIFTLOOP_HOME": str(self.home),
            "BENTOML_HOME": str(settings.bentoml_home),
            "DRIFTLOOP_PREFECT__API_URL": api_url,
            "PREFECT_API_URL": api_url,
            "PREFECT_SERVER_EPHEMERAL_ENABLED": "false",
            "DRIFTLOOP_LAKEFS__ENDPOINT": str(settings.lakefs.endpoint).rstrip("/"),
            **lakefs_secrets,
            **self.extra_env,
        }
        # The components get these as their environment; this process (the bootstrap's flows)
        # gets the same values as settings, without touching its own environment.
        self.settings = settings_from_env(self.env)

    def _start_servers(self) -> None:
        settings, endpoint = self.settings, self.plan.prefect
        started = [
            (
                start_prefect_server(
                    host=endpoint.host,
                    port=endpoint.port,
                    prefect_home=self.home / "prefect",
                    log_path=self.logs / "prefect-server.log",
                    extra_env={"PREFECT_API_ENABLE_METRICS": "true"},
                ),
                f"http://{endpoint.host}:{endpoint.port}",
                f"http://{endpoint.host}:{endpoint.port}/api/health",
            )
        ]
        if self.plan.embedded_lakefs:
            lakefs = settings.lakefs
            url = f"http://{lakefs.embedded_host}:{lakefs.embedded_port}"
            started.append(
                (
                    start_lakefs_server(
                        home=self.home,
                        host=lakefs.embedded_host,
                        port=lakefs.embedded_port,
                        log_path=self.logs / "lakefs.log",
                        access_key_id=self.env["DRIFTLOOP_LAKEFS__ACCESS_KEY_ID"],
                        secret_access_key=self.env["DRIFTLOOP_LAKEFS__SECRET_ACCESS_KEY"],
                    ),
                    url,
                    f"{url}/api/v1/healthcheck",
                )
            )
        for component, url, health in started:
            self._track(component, url, health)
        for component, _, _ in started:
            self._wait(component)
        if not self.plan.embedded_lakefs:
            self._check_external_lakefs()

    def _check_external_lakefs(self) -> None:
        endpoint = str(self.settings.lakefs.endpoint).rstrip("/")
        try:
            httpx.get(f"{endpoint}/api/v1/healthcheck", timeout=10).raise_for_status()
        except httpx.HTTPError as error:
            raise StackError(
                f"lakeFS at {endpoint} (DRIFTLOOP_LAKEFS__ENDPOINT) does not answer its "
                f"healthcheck ({error}); start it, or unset the variable to use the embedded one"
            ) from None
        self.say(f"✓ lakeFS at {endpoint} (not started here: DRIFTLOOP_LAKEFS__ENDPOINT)")

    def _deploy(self) -> None:
        self.say(
            f"applying prefect.yaml: work pool {self.settings.prefect.work_pool}, deployments "
            "ingest, train, retrain and the retrain triggers ..."
        )
        try:
            apply(self.settings, self.project)
        except DeployError as error:
            raise StackError(f"deployments: {error}") from None
        self.say("✓ deployments applied")

    def _bootstrap(self) -> None:
        self.has_model = ensure_production_model(self.settings, self.say)

    def _start_services(self) -> None:
        settings, api_url = self.settings, self.env["PREFECT_API_URL"]
        pool = settings.prefect.work_pool
        worker = start_process_worker(
            api_url=api_url,
            pool=pool,
            log_path=self.logs / "worker.log",
            query_seconds=settings.prefect.worker_query_seconds,
            cwd=self.project,
            extra_env=self.env,
        )
        self._track(
            worker,
            f"{api_url.removesuffix('/api')}/work-pools/work-pool/{pool}",
            f"{api_url}/work_pools/{pool}/workers/filter",
            kind="worker",
        )
        serving, monitor = settings.serving, settings.monitor
        inference = start_inference_server(
            host=serving.host,
            port=serving.port,
            log_path=self.logs / "inference.log",
            env=self.env,
            cwd=self.project,
        )
        self._track(inference, f"http://{serving.host}:{serving.port}", inference.health_url)
        monitor_component = start_monitor_server(
            host=monitor.host,
            port=monitor.port,
            log_path=self.logs / "monitor.log",
            env=self.env,
            cwd=self.project,
        )
        self._track(
            monitor_component,
            f"http://{monitor.host}:{monitor.port}",
            monitor_component.health_url,
        )
        self._wait(worker)
        # Without a production model the service is alive but not ready: wait for /livez then.
        alive = inference.health_url.removesuffix("readyz") + "livez"
        self._wait(inference, None if self.has_model else alive)
        self._wait(monitor_component)

    def _start_observability(self) -> None:
        settings = self.settings
        monitor_url = f"http://{settings.monitor.host}:{settings.monitor.port}"
        alertmanager_address = f"127.0.0.1:{settings.stack.alertmanager_port}"
        alertmanager = start_alertmanager(
            config=write_alertmanager_config(
                self.home / "alertmanager",
                monitor_url=monitor_url,
                token=self.env["DRIFTLOOP_MONITOR__ALERT_TOKEN"],
            ),
            host="127.0.0.1",
            port=settings.stack.alertmanager_port,
            data=self.home / "alertmanager" / "data",
            log_path=self.logs / "alertmanager.log",
        )
        self._track(alertmanager, f"http://{alertmanager_address}", alertmanager.health_url)
        prefect = self.plan.prefect
        prometheus = start_prometheus(
            config=write_prometheus_config(
                self.home / "prometheus",
                Targets(
                    inference=f"{settings.serving.host}:{settings.serving.port}",
                    monitor=f"{settings.monitor.host}:{settings.monitor.port}",
                    prefect=f"{prefect.host}:{prefect.port}",
                    alertmanager=alertmanager_address,
                ),
            ),
            host="127.0.0.1",
            port=settings.stack.prometheus_port,
            data=self.home / "prometheus" / "data",
            log_path=self.logs / "prometheus.log",
        )
        self._track(
            prometheus, f"http://127.0.0.1:{settings.stack.prometheus_port}", prometheus.health_url
        )
        for component in (alertmanager, prometheus):
            self._wait(component)

    # -- bookkeeping ------------------------------------------------------------------------

    def _track(
        self,
        component: Component,
        url: str,
        health: str,
        kind: Literal["http", "worker"] = "http",
    ) -> None:
        record = Record(
            component.name, component.process.pid, str(component.log_path), url, health, kind
        )
        self.running.append((component, record))
        self.say(f"starting {component.name} (log: {component.log_path})")
        self._write_state(ready=False)

    def _wait(self, component: Component, health_url: str | None = None) -> None:
        record = next(r for c, r in self.running if c is component)
        if health_url is not None:
            record = Record(**{**asdict(record), "health": health_url})

        def probe() -> tuple[bool, str]:
            health = check(record)
            return health.healthy, health.detail

        try:
            component.wait_healthy(self.settings.stack.start_timeout_seconds, probe, tail_lines=20)
        except ComponentFailed as failed:
            raise StackError(str(failed)) from None
        self.say(f"✓ {component.name} healthy at {record.url}")

    def _write_state(self, *, ready: bool) -> None:
        write_state(self.home, self.records(), ready=ready)
