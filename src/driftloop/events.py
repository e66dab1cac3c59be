"""Prefect events, sent with ``POST /api/events`` and checked.

``prefect.events.emit_event`` goes over a websocket and drops events silently when the server is
down; an event that starts a retrain must not vanish, so driftloop posts events itself, checks
for the 204, retries with backoff, and raises :class:`EventNotDelivered` when it cannot deliver.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from driftloop.prefect_api import PrefectAccess

log = logging.getLogger(__name__)

INGEST_MERGED = "driftloop.ingest.merged"
INGEST_REJECTED = "driftloop.ingest.rejected"
DRIFT_DETECTED = "driftloop.drift.detected"
ALERT_FIRING = "driftloop.alert.firing"
ALERT_RESOLVED = "driftloop.alert.resolved"
MODEL_PROMOTED = "driftloop.model.promoted"
MODEL_REJECTED = "driftloop.model.rejected"
ROLLOUT_STARTED = "driftloop.rollout.started"
FEEDBACK_PROGRESS = "driftloop.feedback.progress"
PERFORMANCE_DEGRADED = "driftloop.performance.degraded"


class EventNotDelivered(RuntimeError):
    """The Prefect server did not accept an event after every retry."""


def model_resource(model_name: str) -> str:
    """The resource id events about a model carry: ``driftloop.model.<model name>``."""
    return f"driftloop.model.{model_name}"


@dataclass(frozen=True)
class Event:
    """One Prefect event: name, resource, payload and related resources."""

    event: str
    resource_id: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    related: tuple[Mapping[str, str], ...] = ()
    resource_labels: Mapping[str, str] = field(default_factory=dict)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    occurred: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "occurred": self.occurred.isoformat(),
            "event": self.event,
            "resource": {"prefect.resource.id": self.resource_id, **self.resource_labels},
            "related": [dict(item) for item in self.related],
            "payload": dict(self.payload),
        }


def send_events(
    prefect: PrefectAccess,
    events: list[Event],
    *,
    retries: int = 5,
    backoff_seconds: float = 0.5,
    timeout_seconds: float = 10.0,
) -> None:
    """POST ``events`` to the Prefect server ``prefect``; raise unless it answers 204.

    The same event ids are sent on every retry, so a retry after a lost answer does not make
    the server see two different events.
    """
    body = [event.to_json() for event in events]
    headers, url = prefect.headers(), f"{prefect.url}/events"
    problem = ""
    for attempt in range(retries + 1):
        try:
            response = httpx.post(url, json=body, headers=headers, timeout=timeout_seconds)
            if response.status_code == 204:
                return
            problem = f"HTTP {response.status_code}: {response.text[:200]}"
            if response.status_code < 500 and response.status_code != 429:
                break  # the server refused the events themselves: retrying will not help
        except httpx.HTTPError as error:
            problem = f"{type(error).__name__}: {error}"
        if attempt < retries:
            delay = backoff_seconds * 2**attempt
            log.warning(
                "sending events failed (%s); retry %d in %.1f s", problem, attempt + 1, delay
            )
            time.sleep(delay)
    names = ", ".join(sorted({event.event for event in events}))
    raise EventNotDelivered(f"Prefect at {prefect.url} did not accept {names}: {problem}")


def send_event(prefect: PrefectAccess, event: Event, **options: Any) -> None:
    """Send one event; see :func:`send_events`."""
    send_events(prefect, [event], **options)
