"""Reading Prefect events back through the server's API, in tests."""

from __future__ import annotations

from typing import Any

import httpx

from tests.polling import eventually


def events_named(
    api_url: str, name: str, *, since: str | None = None, limit: int = 200, **payload: object
) -> list[dict[str, Any]]:
    """Events called ``name`` (occurred after ``since``, an ISO time) whose payload has every
    value of ``payload``. Tests share the session's server: the payload tells theirs apart."""
    event_filter: dict[str, Any] = {"event": {"name": [name]}}
    if since is not None:
        event_filter["occurred"] = {"since": since}
    response = httpx.post(
        f"{api_url}/events/filter", json={"filter": event_filter, "limit": limit}, timeout=10
    )
    response.raise_for_status()
    return [
        event
        for event in response.json()["events"]
        if all(event["payload"].get(key) == value for key, value in payload.items())
    ]


def wait_for_event(
    api_url: str, name: str, *, timeout: float = 20.0, since: str | None = None, **payload: object
) -> dict[str, Any]:
    """The newest event ``name`` with ``payload``'s values, once Prefect has it."""
    found = eventually(
        lambda: events_named(api_url, name, since=since, **payload),
        f"a {name} event with {payload}",
        timeout=timeout,
    )
    return max(found, key=lambda event: event["occurred"])
