"""The monitor's HTTP face: /metrics, /healthz, /status and the Alertmanager webhook /alerts.

``/alerts`` takes Alertmanager's webhook (version 4) with ``Authorization: Bearer <token>``
(DRIFTLOOP_MONITOR__ALERT_TOKEN): a missing or wrong token gets 401, a body that is not JSON 400,
JSON of the wrong shape 422 naming the field. Each alert becomes ``driftloop.alert.firing`` or
``driftloop.alert.resolved`` about the model its ``model`` label names (the monitored model when
it has none), if the registry knows that model; alerts about other models are logged, counted
(``driftloop_monitor_alerts_ignored_total``) and answered under ``ignored``. The event id is
derived from the alert's fingerprint, status and start, so a webhook Alertmanager retries does
not become two events. When Prefect does not take the events the webhook answers 503 and
Alertmanager sends it again. A body over 1 MiB gets 413 (Alertmanager's own ``max_alerts``
keeps a real one far smaller).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from driftloop.events import ALERT_FIRING, ALERT_RESOLVED, Event, EventNotDelivered, model_resource
from driftloop.http_bodies import BodyTooLarge, read_body
from services.monitor.monitor import Monitor

log = logging.getLogger("driftloop.monitor")

MAX_WEBHOOK_BYTES = 1 << 20
ALERT_NAMESPACE = uuid.UUID("5f0f3a52-9d3e-4a53-8f6e-1b2c0a7d9e41")


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def problem(status: int, message: str, **extra: Any) -> Response:
    return json_response({"detail": message, **extra}, status)


def alert_events(body: Any, default_model: str | None) -> list[Event] | Response:
    """Alertmanager's webhook body as events, or the 422 naming what is wrong with it."""
    if not isinstance(body, dict):
        return problem(422, "the webhook body must be a JSON object", field="(body)")
    alerts = body.get("alerts")
    if not isinstance(alerts, list):
        return problem(422, "alerts must be a list", field="alerts")
    events = []
    for index, alert in enumerate(alerts):
        where = f"alerts[{index}]"
        if not isinstance(alert, dict):
            return problem(422, f"{where} must be an object", field=where)
        status = alert.get("status")
        if status not in ("firing", "resolved"):
            return problem(
                422, f"{where}.status must be firing or resolved", field=f"{where}.status"
            )
        labels = alert.get("labels")
        if not isinstance(labels, dict) or not isinstance(labels.get("alertname"), str):
            return problem(
                422, f"{where}.labels.alertname is required", field=f"{where}.labels.alertname"
            )
        annotations = alert.get("annotations") or {}
        if not isinstance(annotations, dict):
            return problem(
                422, f"{where}.annotations must be an object", field=f"{where}.annotations"
            )
        model = labels.get("model") or default_model
        if not model:
            return problem(422, f"{where}.labels.model is required", field=f"{where}.labels.model")
        identity = f"{alert.get('fingerprint', '')}|{status}|{alert.get('startsAt', '')}"
        if not alert.get("fingerprint"):
            identity += "|" + orjson.dumps(labels, option=orjson.OPT_SORT_KEYS).decode()
        events.append(
            Event(
                event=ALERT_FIRING if status == "firing" else ALERT_RESOLVED,
                resource_id=model_resource(str(model)),
                id=str(uuid.uuid5(ALERT_NAMESPACE, identity)),
                payload={
                    "model": str(model),
                    "alertname": labels["alertname"],
                    "status": status,
                    "labels": {str(k): str(v) for k, v in labels.items()},
                    "annotations": {str(k): str(v) for k, v in annotations.items()},
                    "starts_at": alert.get("startsAt"),
                    "ends_at": alert.get("endsAt"),
                    "generator_url": alert.get("generatorURL"),
                    "fingerprint": alert.get("fingerprint"),
                },
            )
        )
    return events


def create_app(
    monitor: Monitor | list[Monitor],
    *,
    registry: CollectorRegistry,
    send: Callable[[list[Event]], None],
    alert_token: str | None,
    interval_seconds: float,
    known_models: Callable[[], set[str]],
) -> Starlette:
    """The monitor's app; its lifespan runs a check of each model's monitor every
    ``interval_seconds``. With one monitor /status is its status; with several (one per model of
    the project) it is ``{"models": {name: status}}`` and ``/status/<model>`` is one of them.

    ``known_models`` names the models the registry holds: an alert about any other model is
    logged and counted, never sent, so a webhook cannot fan out into retrains of made-up models
    (each model has its own retrain trigger and cooldown).
    """
    monitors = monitor if isinstance(monitor, list) else [monitor]
    by_model = {m.model_name: m for m in monitors}
    stop = threading.Event()
    ignored = Counter(
        "driftloop_monitor_alerts_ignored",
        "Alerts the webhook received and did not pass on to Prefect, by reason.",
        ["reason"],
        registry=registry,
    )

    def loop() -> None:
        while not stop.is_set():
            for each in monitors:
                each.check()
            stop.wait(interval_seconds)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        return json_response({"status": "ok"})

    async def status(request: Request) -> Response:
        if len(monitors) == 1:
            return json_response(monitors[0].status.as_dict())
        return json_response({"models": {n: m.status.as_dict() for n, m in by_model.items()}})

    async def model_status(request: Request) -> Response:
        name = request.path_params["model"]
        if name not in by_model:
            return problem(
                404, f"no model {name!r} is monitored here; models: {', '.join(by_model)}"
            )
        return json_response(by_model[name].status.as_dict())

    async def alerts(request: Request) -> Response:
        if alert_token is None:
            return problem(503, "the alert webhook is off: set DRIFTLOOP_MONITOR__ALERT_TOKEN")
        given = request.headers.get("authorization", "")
        expected = f"Bearer {alert_token}"
        if not secrets.compare_digest(given.encode(), expected.encode()):
            return problem(401, "missing or wrong bearer token")
        try:
            body = orjson.loads(await read_body(request, MAX_WEBHOOK_BYTES, "the webhook body"))
        except BodyTooLarge as error:
            return problem(413, str(error))
        except orjson.JSONDecodeError as error:
            return problem(400, f"request body is not valid JSON: {error}")
        # An alert without a model label is about the monitored model, while one is monitored
        # (a project of one model; with several, an alert must say which).
        default_model = monitors[0].status.model if len(monitors) == 1 else None
        found = alert_events(body, default_model)
        if isinstance(found, Response):
            return found
        try:
            known = await run_in_threadpool(known_models)
        except Exception as error:  # the registry is unreachable: Alertmanager sends it again
            log.error("alert webhook: cannot read the registry's models: %s", error)
            return problem(503, "the model registry is unavailable; send the webhook again")
        unknown = [event for event in found if event.payload["model"] not in known]
        if unknown:
            ignored.labels("unknown model").inc(len(unknown))
            log.warning(
                "alert webhook: %d alerts about models the registry does not know, ignored: %s",
                len(unknown),
                ", ".join(sorted({str(event.payload["model"]) for event in unknown})[:10]),
            )
            found = [event for event in found if event.payload["model"] in known]
        if found:
            try:
                await run_in_threadpool(send, found)
            except EventNotDelivered as error:
                log.error("alert webhook: %s", error)
                return problem(503, "Prefect did not accept the events; send the webhook again")
        return json_response(
            {
                "events": [event.event for event in found],
                "ignored": [
                    {"model": event.payload["model"], "alertname": event.payload["alertname"]}
                    for event in unknown
                ],
            }
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        checks = threading.Thread(target=loop, name="drift-checks", daemon=True)
        checks.start()
        yield
        stop.set()
        checks.join(timeout=30)

    return Starlette(
        routes=[
            Route("/metrics", metrics),
            Route("/healthz", healthz),
            Route("/status", status),
            Route("/status/{model}", model_status),
            Route("/alerts", alerts, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
