"""Asking a component of a running stack whether it is healthy."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from driftloop.prefect_api import PrefectAccess
from driftloop.settings import Settings
from driftloop.stack.processes import pid_alive
from driftloop.stack.state import Record, read_state, records


@dataclass
class Health:
    """A component's health right now."""

    healthy: bool
    detail: str


def check(record: Record, settings: Settings, timeout: float = 3.0) -> Health:
    """Ask one component whether it is healthy: its process, then its health URL (the worker:
    whether Prefect lists it online, asked with the stack's Prefect credentials; the inference
    service: which model it serves, with the serving API key when it wants one)."""
    if not pid_alive(record.pid):
        return Health(False, f"not running (pid {record.pid} is gone); log: {record.log}")
    try:
        if record.kind == "worker":
            headers = PrefectAccess.of(settings.prefect).headers()
            workers = httpx.post(record.health, json={}, headers=headers, timeout=timeout)
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
            key = settings.serving.api_key
            headers = {"X-API-Key": key.get_secret_value()} if key else {}
            models = httpx.get(f"{record.url}/models", headers=headers, timeout=timeout).json()
            serving = ", ".join(f"{m['name']}:{m['version']}" for m in models["models"])
            return Health(True, f"serving {serving}")
        except (httpx.HTTPError, KeyError, ValueError):
            return Health(True, "ready")
    return Health(True, "healthy")


def status(settings: Settings) -> list[tuple[Record, Health]] | None:
    """Every component of the running stack with its health now; None when none was started."""
    state = read_state(settings)
    if state is None:
        return None
    return [(record, check(record, settings)) for record in records(state)]
