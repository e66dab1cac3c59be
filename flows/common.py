"""What every flow needs: settings, the lakeFS client, and sending events to its Prefect server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.settings import get_current_settings, temporary_settings

from driftloop.datasets.sources import SourceError
from driftloop.events import Event, send_event
from driftloop.lakefs_client import LakeFSClient, LakeFSError
from driftloop.prefect_api import PrefectAccess
from driftloop.project import ProjectModel, find_project
from driftloop.settings import Settings, get_settings

# Settings handed to flows run in this process (the stack's bootstrap, the demo, the CLI):
# they win over the environment, so a caller never passes values through os.environ.
_given: ContextVar[Settings | None] = ContextVar("driftloop_flow_settings", default=None)


def worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    """Whether a failed I/O task may pass on another try: a server that was down or timed out,
    yes; a refusal (lakeFS's 4xx: no such ref, a conflict) or a bad input, never."""
    error = getattr(state, "data", None)
    if isinstance(error, LakeFSError):
        return error.status == 0 or error.status >= 500 or error.status == 429
    return not isinstance(error, SourceError | ValueError | KeyError | TypeError)


# Tasks that talk to lakeFS or a database: a transient failure is retried with a backoff.
# Batches are large and clients hold sockets, so nothing here is cached.
IO_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": [2, 5, 15],
    "retry_condition_fn": worth_retrying,
    "cache_policy": NO_CACHE,
}


def settings() -> Settings:
    """The settings a flow works with: those given by :func:`in_process`, else the environment's
    (a worker's flow run)."""
    return _given.get() or get_settings()


def project_model(config: Settings, name: str | None) -> ProjectModel:
    """The model ``name`` of the configured project (its only model when ``name`` is None)."""
    project = find_project(config.project)
    project.make_importable()  # the registry loads models pickled with the project's code
    return project.model(name)


def lakefs(config: Settings) -> LakeFSClient:
    return LakeFSClient.from_settings(config.lakefs)


def run_url() -> str | None:
    """The Prefect UI address of the running flow run, when there is one."""
    url = flow_run.ui_url
    return str(url) if url else None


def emit(event: Event, config: Settings) -> None:
    """Send ``event`` to the Prefect server this flow reports to, checking that it arrived."""
    send_event(reporting_to(config), event)


def reporting_to(config: Settings) -> PrefectAccess:
    """The Prefect server this process's client reports to and its credentials (a worker's
    flow run has them in Prefect's own variables), else the configured one."""
    current, configured = get_current_settings().api, PrefectAccess.of(config.prefect)
    if not current.url:
        return configured
    return PrefectAccess(
        current.url,
        current.key.get_secret_value() if current.key else configured.api_key,
        current.auth_string.get_secret_value() if current.auth_string else configured.auth_string,
    )


@contextmanager
def prefect_api(prefect: PrefectAccess) -> Iterator[None]:
    """Point this process's Prefect client at ``prefect`` (flows run in-process report there),
    with its credentials.

    The throwaway server Prefect starts when it has no URL is turned off, so a wrong URL fails
    loudly instead of running against an empty database.
    """
    updates: dict[str, object] = {"api.url": prefect.url, "server.ephemeral.enabled": False}
    if prefect.api_key is not None:
        updates["api.key"] = prefect.api_key
    if prefect.auth_string is not None:
        updates["api.auth_string"] = prefect.auth_string
    with temporary_settings(updates=updates):  # type: ignore[arg-type]
        yield


@contextmanager
def in_process(config: Settings) -> Iterator[None]:
    """Run flows in this process with ``config``: they report to its Prefect server (with its
    API key) and read their settings from it."""
    token = _given.set(config)
    try:
        with prefect_api(PrefectAccess.of(config.prefect)):
            yield
    finally:
        _given.reset(token)
