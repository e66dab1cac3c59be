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
start. A component that dies is started again after a backoff (1 s, doubling, at most 30 s), as
systemd or Kubernetes do; ``stack.json`` counts its restarts and keeps how it last ended, which
``driftloop status`` shows. Only a component that dies more than ``stack.restart_limit`` times
within ``stack.restart_window_seconds`` stops the stack, and the reason is kept for ``status``.
On Ctrl-C or SIGTERM the supervisor stops the components in reverse order (SIGTERM, then SIGKILL
after a grace period) and removes the state file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Literal

import httpx

from driftloop.documents import DocumentError
from driftloop.observability import Targets, write_alertmanager_config, write_prometheus_config
from driftloop.prefect_api import PrefectAccess, crash_unfinished_runs
from driftloop.project import ProjectError, find_project
from driftloop.settings import Settings, secret_values, secret_variables, settings_from_env
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
from driftloop.stack.state import (
    STOPPED_FILE,
    Record,
    down,
    read_state,
    record_stop,
    remove_own_state,
    write_state,
)

MAX_BACKOFF_SECONDS = 30.0
LAKEFS_KEYS = ("DRIFTLOOP_LAKEFS__ACCESS_KEY_ID", "DRIFTLOOP_LAKEFS__SECRET_ACCESS_KEY")
PREFECT_KEYS = ("DRIFTLOOP_PREFECT__API_KEY", "DRIFTLOOP_PREFECT__AUTH_STRING")


def describe_exit(code: int) -> str:
    """``exited with code 1`` or ``killed by SIGKILL``, from a Popen return code."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class LocalStack:
    """Start, supervise and stop the embedded stack for ``settings``.

    ``extra_env`` goes to every component and into this process's settings (the demo shortens
    the monitor's cadence with it); the process environment is never changed.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        code: Path,
        say: Callable[[str], None],
        extra_env: Mapping[str, str] | None = None,
        dotenv: Path | None = None,
    ) -> None:
        self.settings = settings
        self.code = code
        self.say = say
        self.extra_env = dict(extra_env or {})
        self.dotenv = dotenv
        self.home = settings.home.resolve()
        self.logs = self.home / "logs"
        self.running: list[tuple[Component, Record]] = []
        self.starters: dict[str, Callable[[], Component]] = {}
        self.env: dict[str, str] = {}  # what every component gets: no secret
        self.secrets: dict[str, str] = {}  # handed out by name, to the components that use them
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
        except StackError as error:
            record_stop(self.home, str(error).splitlines()[0])
            raise
        finally:
            # A second signal during the stop must not leave processes behind.
            for sig in previous:
                signal.signal(sig, signal.SIG_IGN)
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def supervise(self, poll_seconds: float = 2.0) -> None:
        """Keep every component running until a signal arrives (Stop): one that exits is started
        again after a backoff; StackError when one exits more than ``stack.restart_limit``
        times within ``stack.restart_window_seconds``."""
        limit = self.settings.stack.restart_limit
        window = self.settings.stack.restart_window_seconds
        exits: dict[str, deque[float]] = {}
        due: dict[str, float] = {}  # component name -> when to start it again
        while True:
            changed = False
            now = time.monotonic()
            for index, (component, record) in enumerate(self.running):
                if record.name in due:
                    if now >= due[record.name]:
                        del due[record.name]
                        self._restart(index)
                        changed = True
                    continue
                code = component.process.poll()
                if code is not None:
                    recent = exits.setdefault(record.name, deque())
                    recent.append(now)
                    while recent and now - recent[0] > window:
                        recent.popleft()
                    how = describe_exit(code)
                    record.last_exit = f"{how} at {time.strftime('%H:%M:%S')}"
                    changed = True
                    if len(recent) > limit:
                        raise StackError(
                            f"{component.name} {how}: {len(recent)} exits within {window:.0f} s, "
                            f"more than DRIFTLOOP_STACK__RESTART_LIMIT={limit} restarts allow; "
                            f"giving up. log: {component.log_path}\n{component.log_tail(20)}"
                        )
                    delay = min(2.0 ** (len(recent) - 1), MAX_BACKOFF_SECONDS)
                    self.say(
                        f"{component.name} {how}; starting it again in {delay:.0f} s "
                        f"(exit {len(recent)} of {limit + 1} allowed within {window:.0f} s); "
                        f"log: {component.log_path}"
                    )
                    due[record.name] = now + delay
                    continue
                children = sorted(descendants(component.process.pid))
                if component.process.poll() is not None:
                    # It died while being looked at: its workers may already be ours (subreaper)
                    # and missing from the list; keep the last one for the restart to stop them.
                    continue
                changed |= children != record.children
                record.children = children
            if changed:
                self._write_state(ready=True)
            time.sleep(min([poll_seconds, *(max(at - now, 0.1) for at in due.values())]))

    def _restart(self, index: int) -> None:
        """Start the component at ``index`` again, after what its dead process left behind."""
        old, record = self.running[index]
        old.stop(grace_seconds=5)  # closes its log; the process group may hold survivors
        if record.kind == "http":
            # Its workers (BentoML's, in sessions of their own) would keep its port taken. A
            # worker's children are flow runs: they finish on their own and report to Prefect.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(old.process.pid, signal.SIGKILL)
            leftovers = [pid for pid in record.children if pid_alive(pid)]
            if leftovers:
                stop_pids(leftovers, grace_seconds=5)
        component = self.starters[record.name]()
        record.pid = component.process.pid
        record.children = []
        record.restarts += 1
        self.running[index] = (component, record)
        self.say(f"started {component.name} again (restart {record.restarts}); pid {record.pid}")

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
        (self.home / STOPPED_FILE).unlink(missing_ok=True)
        self._prepare_environment()
        self._write_state(ready=False)
        self.say(f"state under {self.home}, logs under {self.logs}")
        self._start_servers()
        self._crash_unfinished_runs()
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
        made = local_secrets(settings, self.dotenv, embedded=self.plan.embedded_lakefs)
        try:
            self.project = find_project(settings.project)
        except (ProjectError, DocumentError) as error:
            raise StackError(str(error)) from None
        self.say(f"project {self.project.file}: model(s) {', '.join(self.project.names)}")
        self.env = {
            # The caller's .env: components run in the project folder, where pydantic-settings
            # would read another .env (or none), so its settings travel in their environment.
            **self._caller_dotenv(),
            "DRIFTLOOP_HOME": str(self.home),
            # Components run in the code folder: the project travels as an absolute path.
            "DRIFTLOOP_PROJECT": str(self.project.file),
            "BENTOML_HOME": str(settings.bentoml_home),
            "DRIFTLOOP_PREFECT__API_URL": api_url,
            "PREFECT_API_URL": api_url,
            "PREFECT_SERVER_EPHEMERAL_ENABLED": "false",
            "DRIFTLOOP_LAKEFS__ENDPOINT": str(settings.lakefs.endpoint).rstrip("/"),
            **self.extra_env,
        }
        # The components get these as their environment; this process (the bootstrap's flows)
        # gets the same values as settings, without touching its own environment.
        self.settings = settings_from_env({**self.env, **made})
        self.secrets = {**secret_values(self.settings), **made}

    def _caller_dotenv(self) -> dict[str, str]:
        """The DRIFTLOOP_ settings of the caller's .env that the environment does not override,
        secrets excepted (they go to the components that need them, by name)."""
        if self.dotenv is None or not self.dotenv.is_file():
            return {}
        from dotenv import dotenv_values

        hidden = secret_variables()
        return {
            name: value
            for name, value in dotenv_values(self.dotenv).items()
            if value is not None
            and name.upper().startswith("DRIFTLOOP_")
            and name not in os.environ
            and name.upper() not in hidden
        }

    def env_with(self, *secrets: str) -> dict[str, str]:
        """The components' environment with the named secrets that are set, and no others."""
        return {
            **self.env,
            **{name: self.secrets[name] for name in secrets if name in self.secrets},
        }

    def _start_servers(self) -> None:
        settings, endpoint = self.settings, self.plan.prefect

        def prefect_server() -> Component:
            return start_prefect_server(
                host=endpoint.host,
                port=endpoint.port,
                prefect_home=self.home / "prefect",
                log_path=self.logs / "prefect-server.log",
                auth_string=self.secrets["DRIFTLOOP_PREFECT__AUTH_STRING"],
                extra_env={"PREFECT_API_ENABLE_METRICS": "true"},
            )

        started = [
            (
                prefect_server,
                f"http://{endpoint.host}:{endpoint.port}",
                f"http://{endpoint.host}:{endpoint.port}/api/health",
            )
        ]
        if self.plan.embedded_lakefs:
            lakefs = settings.lakefs
            url = f"http://{lakefs.embedded_host}:{lakefs.embedded_port}"

            def lakefs_server() -> Component:
                return start_lakefs_server(
                    home=self.home,
                    host=lakefs.embedded_host,
                    port=lakefs.embedded_port,
                    log_path=self.logs / "lakefs.log",
                    access_key_id=self.secrets["DRIFTLOOP_LAKEFS__ACCESS_KEY_ID"],
                    secret_access_key=self.secrets["DRIFTLOOP_LAKEFS__SECRET_ACCESS_KEY"],
                )

            started.append((lakefs_server, url, f"{url}/api/v1/healthcheck"))
        components = [self._launch(starter, url, health) for starter, url, health in started]
        for component in components:
            self._wait(component)
        if not self.plan.embedded_lakefs:
            self._check_external_lakefs()

    def _crash_unfinished_runs(self) -> None:
        """Runs an earlier stack left pending or running (stopped, or killed, with them) will
        never finish: mark them crashed, or a stale retrain would hold the deployment's only
        slot and every new retrain would be cancelled."""
        try:
            crashed = crash_unfinished_runs(
                PrefectAccess.of(self.settings.prefect),
                "left unfinished when an earlier driftloop stack stopped; marked crashed by "
                "`driftloop up`",
            )
        except httpx.HTTPError as error:
            raise StackError(f"could not read the flow runs from Prefect: {error}") from None
        if crashed:
            self.say(
                f"marked {len(crashed)} flow run(s) an earlier stack left unfinished as crashed: "
                + ", ".join(crashed)
            )

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
            apply(self.settings, self.code)
        except DeployError as error:
            raise StackError(f"deployments: {error}") from None
        self.say("✓ deployments applied")

    def _bootstrap(self) -> None:
        ready = [ensure_production_model(self.settings, m, self.say) for m in self.project.models]
        self.has_model = all(ready)

    def _start_services(self) -> None:
        settings, api_url = self.settings, self.env["PREFECT_API_URL"]
        pool = settings.prefect.work_pool
        serving, monitor = settings.serving, settings.monitor

        def worker() -> Component:
            return start_process_worker(
                prefect=PrefectAccess.of(settings.prefect),
                pool=pool,
                log_path=self.logs / "worker.log",
                query_seconds=settings.prefect.worker_query_seconds,
                warm=settings.prefect.warm_runner,
                cwd=self.code,
                extra_env={
                    **self.env_with(*LAKEFS_KEYS, *PREFECT_KEYS, "DRIFTLOOP_GRAFANA__TOKEN"),
                    # Its flow runs write beside it, not through it: they outlive it.
                    "DRIFTLOOP_STACK__FLOW_RUN_LOG": str(self.logs / "worker.log"),
                },
            )

        def inference() -> Component:
            return start_inference_server(
                host=serving.host,
                port=serving.port,
                log_path=self.logs / "inference.log",
                env=self.env_with("DRIFTLOOP_SERVING__API_KEY"),
                cwd=self.code,
            )

        def monitor_server() -> Component:
            return start_monitor_server(
                host=monitor.host,
                port=monitor.port,
                log_path=self.logs / "monitor.log",
                env=self.env_with(
                    *LAKEFS_KEYS,
                    "DRIFTLOOP_MONITOR__ALERT_TOKEN",
                    "DRIFTLOOP_GRAFANA__TOKEN",
                    *PREFECT_KEYS,
                ),
                cwd=self.code,
            )

        worker_component = self._launch(
            worker,
            f"{api_url.removesuffix('/api')}/work-pools/work-pool/{pool}",
            f"{api_url}/work_pools/{pool}/workers/filter",
            kind="worker",
        )
        base = f"http://{serving.host}:{serving.port}"
        inference_component = self._launch(inference, base, f"{base}/readyz")
        monitor_url = f"http://{monitor.host}:{monitor.port}"
        monitor_component = self._launch(monitor_server, monitor_url, f"{monitor_url}/healthz")
        self._wait(worker_component)
        # Without a production model the service is alive but not ready: wait for /livez then.
        self._wait(inference_component, None if self.has_model else f"{base}/livez")
        self._wait(monitor_component)

    def _start_observability(self) -> None:
        settings = self.settings
        monitor_url = f"http://{settings.monitor.host}:{settings.monitor.port}"
        alertmanager_address = f"127.0.0.1:{settings.stack.alertmanager_port}"
        alertmanager_config = write_alertmanager_config(
            self.home / "alertmanager",
            monitor_url=monitor_url,
            token=self.secrets["DRIFTLOOP_MONITOR__ALERT_TOKEN"],
        )
        prefect = self.plan.prefect
        prometheus_config = write_prometheus_config(
            self.home / "prometheus",
            Targets(
                inference=f"{settings.serving.host}:{settings.serving.port}",
                monitor=f"{settings.monitor.host}:{settings.monitor.port}",
                prefect=f"{prefect.host}:{prefect.port}",
                alertmanager=alertmanager_address,
                prefect_auth_string=self.secrets["DRIFTLOOP_PREFECT__AUTH_STRING"],
            ),
        )

        def alertmanager() -> Component:
            return start_alertmanager(
                config=alertmanager_config,
                host="127.0.0.1",
                port=settings.stack.alertmanager_port,
                data=self.home / "alertmanager" / "data",
                log_path=self.logs / "alertmanager.log",
            )

        def prometheus() -> Component:
            return start_prometheus(
                config=prometheus_config,
                host="127.0.0.1",
                port=settings.stack.prometheus_port,
                data=self.home / "prometheus" / "data",
                log_path=self.logs / "prometheus.log",
            )

        started = [
            self._launch(alertmanager, f"http://{alertmanager_address}", ""),
            self._launch(prometheus, f"http://127.0.0.1:{settings.stack.prometheus_port}", ""),
        ]
        for component in started:
            self._wait(component)

    # -- bookkeeping ------------------------------------------------------------------------

    def _launch(
        self,
        starter: Callable[[], Component],
        url: str,
        health: str,
        kind: Literal["http", "worker"] = "http",
    ) -> Component:
        """Start a component with ``starter`` (kept, to start it again if it dies) and track it;
        ``health`` "" takes the component's own health URL."""
        component = starter()
        self.starters[component.name] = starter
        self._track(component, url, health or component.health_url, kind)
        return component

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
            health = check(record, self.settings)
            return health.healthy, health.detail

        try:
            component.wait_healthy(self.settings.stack.start_timeout_seconds, probe, tail_lines=20)
        except ComponentFailed as failed:
            raise StackError(str(failed)) from None
        self.say(f"✓ {component.name} healthy at {record.url}")

    def _write_state(self, *, ready: bool) -> None:
        write_state(self.home, self.records(), ready=ready)
