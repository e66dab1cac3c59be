"""The embedded stack on one machine: ``driftloop up``, ``driftloop down``, ``driftloop status``.

``driftloop up`` is a supervisor process. It starts every component as a child process of its own
(its own process group, its log under ``<home>/logs``), in order, waiting on each one's health:

1. the Prefect server (SQLite under ``<home>/prefect``, /api/metrics on) and the embedded
   lakeFS-compatible server (data under ``<home>/lakefs``; not started when
   ``DRIFTLOOP_LAKEFS__ENDPOINT`` names another lakeFS, which is then only checked);
2. the process work pool and the deployments of prefect.yaml (``driftloop deploy``);
3. a first model when there is no production model yet (``stack.bootstrap``): a built-in batch
   landed through its branch, then the train flow;
4. the process worker, the inference service (``bentoml serve``) and the monitor;
5. Alertmanager and Prometheus with the project's configuration for these ports, when their
   binaries are on PATH (``stack.observability``).

What runs is written to ``<home>/stack.json`` (pids, URLs, health URLs, logs) as it starts, so
``driftloop status`` and ``driftloop down`` in another shell find it, also halfway through a
start. On Ctrl-C or SIGTERM the supervisor stops the components in reverse order (SIGTERM, then
SIGKILL after a grace period) and removes the state file.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from driftloop.processes import (
    Component,
    ComponentFailed,
    become_subreaper,
    descendants,
    pid_alive,
    port_in_use,
    stop_pids,
)
from driftloop.settings import Settings, get_settings

STATE_FILE = "stack.json"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


class StackError(RuntimeError):
    """The stack cannot start or stopped; the message names the component and its log."""


@dataclass(frozen=True)
class Endpoint:
    """Where a component listens, and the setting that moves it."""

    name: str
    host: str
    port: int
    variable: str


@dataclass
class Record:
    """One running component as ``stack.json`` keeps it."""

    name: str
    pid: int
    log: str
    url: str
    health: str
    kind: Literal["http", "worker"] = "http"
    # Processes below it, as last seen: servers that put their workers in sessions of their
    # own (BentoML) would leave them running if they died.
    children: list[int] = field(default_factory=list)


@dataclass
class Health:
    """A component's health right now."""

    healthy: bool
    detail: str


class Stop(BaseException):
    """SIGTERM or SIGINT arrived: stop everything (a BaseException, so nothing swallows it)."""


def state_path(settings: Settings) -> Path:
    return settings.home.resolve() / STATE_FILE


def read_state(settings: Settings) -> dict[str, Any] | None:
    """The running stack's state, or None when no stack was started under ``settings.home``."""
    path = state_path(settings)
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return state


def check(record: Record, timeout: float = 3.0) -> Health:
    """Ask one component whether it is healthy: its process, then its health URL."""
    if not pid_alive(record.pid):
        return Health(False, f"not running (pid {record.pid} is gone); log: {record.log}")
    try:
        if record.kind == "worker":
            workers = httpx.post(record.health, json={}, timeout=timeout)
            online = workers.is_success and any(w["status"] == "ONLINE" for w in workers.json())
            return Health(online, "polling for flow runs" if online else "not online in the pool")
        answer = httpx.get(record.health, timeout=timeout)
    except httpx.HTTPError as error:
        return Health(False, f"not answering at {record.health} ({type(error).__name__})")
    if not answer.is_success:
        if record.name == "inference" and answer.status_code == 503:
            return Health(False, "answers, but has no production model to serve yet")
        return Health(False, f"{record.health} answered {answer.status_code}")
    if record.name == "inference":
        try:
            model = httpx.get(f"{record.url}/model", timeout=timeout).json()
            return Health(True, f"serving {model['name']}:{model['version']}")
        except (httpx.HTTPError, KeyError, ValueError):
            return Health(True, "ready")
    return Health(True, "healthy")


def status(settings: Settings) -> list[tuple[Record, Health]] | None:
    """Every component of the running stack with its health now; None when none was started."""
    state = read_state(settings)
    if state is None:
        return None
    return [(record, check(record)) for record in map(lambda r: Record(**r), state["components"])]


def down(settings: Settings, say: Callable[[str], None], grace_seconds: float = 60.0) -> bool:
    """Stop the stack started under ``settings.home``; False when there was none.

    The supervisor is asked to stop (SIGTERM) and does it in order; components it left behind
    (a supervisor that was killed) are stopped here, process group by process group.
    """
    state = read_state(settings)
    if state is None:
        return False
    supervisor = int(state["supervisor"])
    if pid_alive(supervisor):
        say(f"asking the stack's supervisor (pid {supervisor}) to stop every component ...")
        os.kill(supervisor, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        while pid_alive(supervisor) and time.monotonic() < deadline:
            time.sleep(0.2)
    for record in map(lambda r: Record(**r), reversed(state["components"])):
        if pid_alive(record.pid):
            say(f"stopping {record.name} (pid {record.pid}), left behind by the supervisor")
            _stop_group(record.pid)
        orphans = [pid for pid in record.children if pid_alive(pid)]
        if orphans:
            say(f"stopping {len(orphans)} worker process(es) of {record.name} left behind")
            stop_pids(orphans)
    state_path(settings).unlink(missing_ok=True)
    return True


def _stop_group(pid: int, grace_seconds: float = 10.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_seconds
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def local_secrets(settings: Settings, dotenv: Path | None, *, embedded: bool) -> dict[str, str]:
    """lakeFS keys for the embedded server and the Alertmanager webhook token.

    The configured values when there are any; otherwise new random ones, appended to ``dotenv``
    (created 0600) when given, so later commands (``driftloop ingest``, ``train``) reach the same
    server. Never printed. A lakeFS that is not the embedded one needs its keys configured.
    """
    lakefs, monitor = settings.lakefs, settings.monitor
    values: dict[str, str] = {}
    if (lakefs.access_key_id is None) != (lakefs.secret_access_key is None):
        raise StackError(
            "set both DRIFTLOOP_LAKEFS__ACCESS_KEY_ID and DRIFTLOOP_LAKEFS__SECRET_ACCESS_KEY, "
            "or neither (then `driftloop up` makes a pair for the embedded server)"
        )
    if lakefs.access_key_id and lakefs.secret_access_key:
        values["DRIFTLOOP_LAKEFS__ACCESS_KEY_ID"] = lakefs.access_key_id.get_secret_value()
        values["DRIFTLOOP_LAKEFS__SECRET_ACCESS_KEY"] = lakefs.secret_access_key.get_secret_value()
    elif not embedded:
        raise StackError(
            f"lakeFS at {lakefs.endpoint} (DRIFTLOOP_LAKEFS__ENDPOINT) is not the embedded "
            "server: set DRIFTLOOP_LAKEFS__ACCESS_KEY_ID and DRIFTLOOP_LAKEFS__SECRET_ACCESS_KEY"
        )
    if monitor.alert_token:
        values["DRIFTLOOP_MONITOR__ALERT_TOKEN"] = monitor.alert_token.get_secret_value()
    created = {
        "DRIFTLOOP_LAKEFS__ACCESS_KEY_ID": "AKIALOCAL" + secrets.token_hex(6).upper(),
        "DRIFTLOOP_LAKEFS__SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
        "DRIFTLOOP_MONITOR__ALERT_TOKEN": secrets.token_urlsafe(24),
    }
    new = {name: value for name, value in created.items() if name not in values}
    if new and dotenv is not None:
        existed = dotenv.exists()
        with dotenv.open("a") as file:
            if existed and dotenv.read_text()[-1:] not in ("", "\n"):
                file.write("\n")
            file.write("# written by `driftloop up` for the embedded stack\n")
            file.writelines(f"{name}={value}\n" for name, value in new.items())
        dotenv.chmod(0o600)
    return {**values, **new}


def _endpoint_of(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def observability_binaries(settings: Settings) -> bool:
    """Whether the stack runs Prometheus and Alertmanager (``stack.observability``)."""
    mode = settings.stack.observability
    found = shutil.which("prometheus") is not None and (
        shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    )
    if mode == "on" and not found:
        raise StackError(
            "DRIFTLOOP_STACK__OBSERVABILITY=on, but prometheus or prometheus-alertmanager is not "
            "on PATH (Debian packages: prometheus, prometheus-alertmanager)"
        )
    return mode != "off" and bool(found)


class LocalStack:
    """Start, supervise and stop the embedded stack for ``settings``.

    ``extra_env`` goes to every component and to this process (the demo shortens the monitor's
    cadence with it). This process's environment is updated with the stack's settings, so the
    flows it runs in-process (the bootstrap) reach the same servers.
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
        prefect_host, prefect_port = _endpoint_of(str(settings.prefect.api_url), 4200)
        lakefs_host, lakefs_port = _endpoint_of(str(settings.lakefs.endpoint), 8000)
        self.embedded_lakefs = (lakefs_port == settings.lakefs.embedded_port) and (
            lakefs_host in LOOPBACK or lakefs_host == settings.lakefs.embedded_host
        )
        self.observability = observability_binaries(settings)
        self.endpoints = [
            Endpoint("prefect-server", prefect_host, prefect_port, "DRIFTLOOP_PREFECT__API_URL"),
        ]
        if self.embedded_lakefs:
            self.endpoints.append(
                Endpoint(
                    "lakefs",
                    settings.lakefs.embedded_host,
                    lakefs_port,
                    "DRIFTLOOP_LAKEFS__EMBEDDED_PORT and DRIFTLOOP_LAKEFS__ENDPOINT",
                )
            )
        self.endpoints += [
            Endpoint(
                "inference", settings.serving.host, settings.serving.port, "DRIFTLOOP_SERVING__PORT"
            ),
            Endpoint(
                "monitor", settings.monitor.host, settings.monitor.port, "DRIFTLOOP_MONITOR__PORT"
            ),
        ]
        if self.observability:
            self.endpoints += [
                Endpoint(
                    "alertmanager",
                    "127.0.0.1",
                    settings.stack.alertmanager_port,
                    "DRIFTLOOP_STACK__ALERTMANAGER_PORT",
                ),
                Endpoint(
                    "prometheus",
                    "127.0.0.1",
                    settings.stack.prometheus_port,
                    "DRIFTLOOP_STACK__PROMETHEUS_PORT",
                ),
            ]

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

    def check_ports(self) -> None:
        """Every port the stack needs is free, or one StackError naming each taken one."""
        taken = [
            f"port {e.port} on {e.host} is taken, so {e.name} cannot start; stop what listens "
            f"there or set {e.variable}"
            for e in self.endpoints
            if port_in_use(e.host, e.port)
        ]
        if taken:
            raise StackError("\n".join(taken))

    def start(self) -> None:
        state = read_state(self.settings)
        if state is not None and pid_alive(int(state["supervisor"])):
            raise StackError(
                f"a stack is already running under {self.home} (supervisor pid "
                f"{state['supervisor']}); see `driftloop status`, stop it with `driftloop down`"
            )
        if state is not None:
            down(self.settings, self.say)  # the leftovers of a supervisor that was killed
        self.check_ports()
        self.home.mkdir(parents=True, exist_ok=True)
        self._prepare_environment()
        self._write_state(ready=False)
        self.say(f"state under {self.home}, logs under {self.logs}")
        self._start_servers()
        self._deploy()
        self._bootstrap()
        self._start_services()
        if self.observability:
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
        path = self.home / STATE_FILE
        state = read_state(self.settings)
        if state is not None and state.get("supervisor") == os.getpid():
            path.unlink(missing_ok=True)

    def records(self) -> list[Record]:
        return [record for _, record in self.running]

    # -- steps ------------------------------------------------------------------------------

    def _prepare_environment(self) -> None:
        settings = self.settings
        api_url = str(settings.prefect.api_url).rstrip("/")
        lakefs_secrets = local_secrets(settings, self.dotenv, embedded=self.embedded_lakefs)
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
        os.environ.update(self.env)
        self.settings = get_settings()

    def _start_servers(self) -> None:
        from driftloop.stack import start_lakefs_server, start_prefect_server

        settings, endpoint = self.settings, self.endpoints[0]
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
        if self.embedded_lakefs:
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
        if not self.embedded_lakefs:
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
        from driftloop.deploy import DeployError, apply

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
        from driftloop.datasets.spec import load_spec
        from driftloop.registry import ModelRegistry

        settings = self.settings
        spec = load_spec(settings.dataset)
        registry = ModelRegistry(settings.bentoml_home, settings.registry_database)
        production = registry.production(spec.model_name)
        self.has_model = production is not None
        if production is not None:
            self.say(f"✓ production model {production.tag}")
            return
        if not settings.stack.bootstrap:
            self.say(
                f"no production model of {spec.model_name} yet and DRIFTLOOP_STACK__BOOTSTRAP is "
                "off: inference starts without one; `driftloop train` makes one"
            )
            return
        from prefect.settings import temporary_settings

        from driftloop.stack import drain_prefect_client
        from flows.ingest import ingest
        from flows.train import train

        api_url = self.env["PREFECT_API_URL"]
        self.say(
            f"no production model of {spec.model_name} yet: landing a built-in batch and training "
            "the first model (runs in the Prefect UI) ..."
        )
        with temporary_settings(updates={"api.url": api_url, "server.ephemeral.enabled": False}):
            try:
                ingest(settings.dataset, "builtin:?seed=1", batch_id="bootstrap")
                outcome: dict[str, Any] = train(settings.dataset)
            finally:
                drain_prefect_client()
        self.has_model = outcome["stage"] == "production"
        self.say(
            f"✓ {outcome['model']}:{outcome['version']} trained on commit "
            f"{outcome['data_commit'][:12]}, stage {outcome['stage']}"
        )

    def _start_services(self) -> None:
        from driftloop.stack import (
            start_inference_server,
            start_monitor_server,
            start_process_worker,
        )

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
        from driftloop.observability import (
            Targets,
            write_alertmanager_config,
            write_prometheus_config,
        )
        from driftloop.stack import start_alertmanager, start_prometheus

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
        prefect = self.endpoints[0]
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
        state = {
            "supervisor": os.getpid(),
            "home": str(self.home),
            "ready": ready,
            "components": [asdict(record) for record in self.records()],
        }
        path = self.home / STATE_FILE
        partial = path.with_suffix(".tmp")
        partial.write_text(json.dumps(state, indent=2))
        partial.replace(path)
