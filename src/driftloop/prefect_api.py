"""Prefect's REST API, for the few calls driftloop makes without Prefect's client.

The monitor posts events (``driftloop.events``) and reads how the latest retrain ended
(:func:`latest_finished_run`) over plain HTTP: it runs outside any flow, and Prefect's client
would start a throwaway server of its own when misconfigured. :class:`PrefectAccess` is where the
server is and how to sign in, for these calls and for the environment of Prefect's own clients.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from driftloop.settings import PrefectSettings

FAILED_STATES = ("FAILED", "CRASHED")
FINISHED_STATES = ("COMPLETED", *FAILED_STATES)
UNFINISHED_STATES = ("PENDING", "RUNNING", "CANCELLING")


@dataclass(frozen=True)
class PrefectAccess:
    """Where Prefect's API is and how to sign in to it: the server's basic auth
    (``auth_string``, what ``PREFECT_SERVER_API_AUTH_STRING`` is set to), or a bearer key
    (Prefect Cloud, or a proxy that wants one), or neither."""

    url: str
    api_key: str | None = None
    auth_string: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", self.url.rstrip("/"))

    @classmethod
    def of(cls, prefect: PrefectSettings) -> PrefectAccess:
        """The access driftloop's ``prefect.*`` settings describe."""
        return cls(
            str(prefect.api_url),
            prefect.api_key.get_secret_value() if prefect.api_key else None,
            prefect.auth_string.get_secret_value() if prefect.auth_string else None,
        )

    def headers(self) -> dict[str, str]:
        """The ``Authorization`` header Prefect's server checks (basic auth first, as Prefect's
        own client does), or none."""
        if self.auth_string:
            token = base64.b64encode(self.auth_string.encode()).decode()
            return {"Authorization": f"Basic {token}"}
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def client_env(self) -> dict[str, str]:
        """Environment of a process that uses Prefect's own client against this server.

        A client without an API URL would otherwise start a throwaway server of its own and
        lose its work silently; with ephemeral mode off, a missing URL fails loudly instead.
        """
        env = {
            "PREFECT_API_URL": self.url,
            "PREFECT_SERVER_EPHEMERAL_ENABLED": "false",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
        }
        if self.api_key:
            env["PREFECT_API_KEY"] = self.api_key
        if self.auth_string:
            env["PREFECT_API_AUTH_STRING"] = self.auth_string
        return env

    def problem(self) -> str | None:
        """Why this server cannot be used (it does not answer, or refuses these credentials),
        in one line; None when it can."""
        try:
            httpx.get(f"{self.url}/health", timeout=5).raise_for_status()
        except httpx.HTTPError as error:
            return (
                f"no Prefect server answers at {self.url} ({error}); start one (driftloop up) "
                "or set DRIFTLOOP_PREFECT__API_URL"
            )
        try:
            answer = self.post("/flows/filter", {"limit": 1}, timeout=10)
        except httpx.HTTPError as error:
            return f"the Prefect server at {self.url} did not answer ({error})"
        if answer.status_code in (401, 403):
            given = "refused" if self.auth_string or self.api_key else "wants"
            return (
                f"the Prefect server at {self.url} {given} credentials (HTTP "
                f"{answer.status_code}): set DRIFTLOOP_PREFECT__AUTH_STRING to its "
                "PREFECT_SERVER_API_AUTH_STRING (DRIFTLOOP_PREFECT__API_KEY for Prefect Cloud)"
            )
        return None

    def post(self, path: str, body: Any, *, timeout: float = 10.0) -> httpx.Response:
        """``POST`` ``body`` as JSON to ``path`` (``/flow_runs/filter``), signed in."""
        return httpx.post(f"{self.url}{path}", json=body, headers=self.headers(), timeout=timeout)

    def get(self, path: str, *, timeout: float = 10.0) -> httpx.Response:
        """``GET`` ``path``, signed in."""
        return httpx.get(f"{self.url}{path}", headers=self.headers(), timeout=timeout)


@dataclass(frozen=True)
class FlowRunOutcome:
    """How one flow run ended."""

    id: str
    name: str
    state: str
    message: str
    end_time: str | None
    parameters: dict[str, Any]

    @property
    def failed(self) -> bool:
        return self.state in FAILED_STATES


def latest_finished_run(
    prefect: PrefectAccess,
    flow_name: str,
    *,
    parameters: dict[str, Any] | None = None,
    defaults: dict[str, Any] | None = None,
    timeout_seconds: float = 10.0,
) -> FlowRunOutcome | None:
    """The most recently ended run of ``flow_name`` (completed, failed or crashed) whose
    parameters include ``parameters`` (a parameter a run did not set, or set to None, counts as
    its value in ``defaults``); None when there is none among the latest 50.

    Raises:
        httpx.HTTPError: Prefect did not answer, or answered with an error.
    """
    response = prefect.post(
        "/flow_runs/filter",
        {
            "flows": {"name": {"any_": [flow_name]}},
            "flow_runs": {"state": {"type": {"any_": list(FINISHED_STATES)}}},
            "sort": "END_TIME_DESC",
            "limit": 50,
        },
        timeout=timeout_seconds,
    )
    response.raise_for_status()
    wanted = parameters or {}
    for run in response.json():
        set_ = {k: v for k, v in (run.get("parameters") or {}).items() if v is not None}
        given = {**(defaults or {}), **set_}
        if all(given.get(name) == value for name, value in wanted.items()):
            state = run.get("state") or {}
            return FlowRunOutcome(
                id=str(run["id"]),
                name=str(run.get("name", "")),
                state=str(state.get("type", run.get("state_type", ""))),
                message=str(state.get("message") or ""),
                end_time=run.get("end_time"),
                parameters=given,
            )
    return None


def crash_unfinished_runs(prefect: PrefectAccess, message: str) -> list[str]:
    """Mark every flow run that is pending, running or cancelling as crashed, with ``message``;
    the names of those runs.

    For a server whose every worker and flow-run process is known to be gone (the embedded
    stack at start): such a run will never finish, and it would keep its deployment's
    concurrency slot, so a retrain with collision strategy CANCEL_NEW would cancel every later
    one. Forced, as Prefect's UI does: its minimal policy still releases the slot.

    Raises:
        httpx.HTTPError: Prefect did not answer, or answered with an error.
    """
    runs = prefect.post(
        "/flow_runs/filter",
        {"flow_runs": {"state": {"type": {"any_": list(UNFINISHED_STATES)}}}, "limit": 200},
    )
    runs.raise_for_status()
    crashed = []
    for run in runs.json():
        state = {"type": "CRASHED", "name": "Crashed", "message": message}
        prefect.post(
            f"/flow_runs/{run['id']}/set_state", {"state": state, "force": True}
        ).raise_for_status()
        crashed.append(str(run["name"]))
    return crashed
