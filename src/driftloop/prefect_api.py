"""Prefect's REST API, for the few calls driftloop makes without Prefect's client.

The monitor posts events (``driftloop.events``) and reads how the latest retrain ended
(:func:`latest_finished_run`) over plain HTTP: it runs outside any flow, and Prefect's client
would start a throwaway server of its own when misconfigured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

FAILED_STATES = ("FAILED", "CRASHED")
FINISHED_STATES = ("COMPLETED", *FAILED_STATES)


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The ``Authorization`` header for Prefect's API: a bearer key (Prefect Cloud, or a
    server behind a proxy that wants one), or nothing."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


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
    api_url: str,
    flow_name: str,
    *,
    parameters: dict[str, Any] | None = None,
    defaults: dict[str, Any] | None = None,
    api_key: str | None = None,
    timeout_seconds: float = 10.0,
) -> FlowRunOutcome | None:
    """The most recently ended run of ``flow_name`` (completed, failed or crashed) whose
    parameters include ``parameters`` (a parameter a run did not set counts as its value in
    ``defaults``); None when there is none among the latest 50.

    Raises:
        httpx.HTTPError: Prefect did not answer, or answered with an error.
    """
    response = httpx.post(
        f"{api_url.rstrip('/')}/flow_runs/filter",
        json={
            "flows": {"name": {"any_": [flow_name]}},
            "flow_runs": {"state": {"type": {"any_": list(FINISHED_STATES)}}},
            "sort": "END_TIME_DESC",
            "limit": 50,
        },
        headers=auth_headers(api_key),
        timeout=timeout_seconds,
    )
    response.raise_for_status()
    wanted = parameters or {}
    for run in response.json():
        given = {**(defaults or {}), **(run.get("parameters") or {})}
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
