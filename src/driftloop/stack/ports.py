"""The stack's port plan: which component listens where, and the setting that moves it."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from urllib.parse import urlsplit

from driftloop.settings import Settings
from driftloop.stack.errors import StackError
from driftloop.stack.processes import port_in_use

LOOPBACK = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


@dataclass(frozen=True)
class Endpoint:
    """Where a component listens, and the setting that moves it."""

    name: str
    host: str
    port: int
    variable: str

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class PortPlan:
    """Every endpoint the stack will listen on, decided from the settings before anything starts.

    ``embedded_lakefs``: the lakeFS endpoint is the embedded server's (else it is only checked).
    ``observability``: Prometheus and Alertmanager run (``DRIFTLOOP_STACK__OBSERVABILITY``).
    """

    prefect: Endpoint
    endpoints: tuple[Endpoint, ...]
    embedded_lakefs: bool
    observability: bool

    @classmethod
    def of(cls, settings: Settings) -> PortPlan:
        prefect_host, prefect_port = endpoint_of(str(settings.prefect.api_url), 4200)
        lakefs_host, lakefs_port = endpoint_of(str(settings.lakefs.endpoint), 8000)
        embedded = (lakefs_port == settings.lakefs.embedded_port) and (
            lakefs_host in LOOPBACK or lakefs_host == settings.lakefs.embedded_host
        )
        observability = observability_binaries(settings)
        prefect = Endpoint(
            "prefect-server", prefect_host, prefect_port, "DRIFTLOOP_PREFECT__API_URL"
        )
        endpoints = [prefect]
        if embedded:
            endpoints.append(
                Endpoint(
                    "lakefs",
                    settings.lakefs.embedded_host,
                    lakefs_port,
                    "DRIFTLOOP_LAKEFS__EMBEDDED_PORT and DRIFTLOOP_LAKEFS__ENDPOINT",
                )
            )
        serving, monitor, stack = settings.serving, settings.monitor, settings.stack
        endpoints += [
            Endpoint("inference", serving.host, serving.port, "DRIFTLOOP_SERVING__PORT"),
            Endpoint("monitor", monitor.host, monitor.port, "DRIFTLOOP_MONITOR__PORT"),
        ]
        if observability:
            endpoints += [
                Endpoint(
                    "alertmanager",
                    "127.0.0.1",
                    stack.alertmanager_port,
                    "DRIFTLOOP_STACK__ALERTMANAGER_PORT",
                ),
                Endpoint(
                    "prometheus",
                    "127.0.0.1",
                    stack.prometheus_port,
                    "DRIFTLOOP_STACK__PROMETHEUS_PORT",
                ),
            ]
        return cls(prefect, tuple(endpoints), embedded, observability)

    def check_free(self) -> None:
        """Every port the stack needs is free, or one StackError naming each taken one."""
        taken = [
            f"port {e.port} on {e.host} is taken, so {e.name} cannot start; stop what listens "
            f"there or set {e.variable}"
            for e in self.endpoints
            if port_in_use(e.host, e.port)
        ]
        if taken:
            raise StackError("\n".join(taken))


def endpoint_of(url: str, default_port: int) -> tuple[str, int]:
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
