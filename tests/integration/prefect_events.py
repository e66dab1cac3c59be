"""Reading Prefect events back through the server's API, in tests."""

from __future__ import annotations

from typing import Any

import httpx

from driftloop.prefect_api import PrefectAccess
from tests.polling import eventually

# Prefect serves events in pages of at most 50; a test reads at most this many pages.
PAGES = 20


def events_named(
    prefect: PrefectAccess,
    name: str,
    *,
    since: str | None = None,
    resource: str | None = None,
    **payload: object,
) -> list[dict[str, Any]]:
    """Events called ``name`` (occurred after ``since``, an ISO time; about ``resource``) whose
    payload has every value of ``payload``. Tests share the session's server: the payload tells
    theirs apart."""
    event_filter: dict[str, Any] = {"event": {"name": [name]}}
    if since is not None:
        event_filter["occurred"] = {"since": since}
    if resource is not None:
        event_filter["resource"] = {"id": [resource]}
    response = prefect.post("/events/filter", {"filter": event_filter, "limit": 50})
    found: list[dict[str, Any]] = []
    for _ in range(PAGES):
        response.raise_for_status()
        page = response.json()
        found += page["events"]
        if not page.get("next_page"):
            break
        response = httpx.get(page["next_page"], headers=prefect.headers(), timeout=10)
    return [
        event
        for event in found
        if all(event["payload"].get(key) == value for key, value in payload.items())
    ]


def wait_for_event(
    prefect: PrefectAccess,
    name: str,
    *,
    timeout: float = 20.0,
    since: str | None = None,
    **payload: object,
) -> dict[str, Any]:
    """The newest event ``name`` with ``payload``'s values, once Prefect has it."""
    found = eventually(
        lambda: events_named(prefect, name, since=since, **payload),
        f"a {name} event with {payload}",
        timeout=timeout,
    )
    return max(found, key=lambda event: event["occurred"])
