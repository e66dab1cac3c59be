"""What BentoML wraps around every request of this service, trimmed to what the service uses.

BentoML (1.4) builds the same middleware stack for every service: request metrics, an
OpenTelemetry span, a request timeout and a context that backs ``bentoml.Context`` in
``@bentoml.api`` methods. On one core these layers cost more than a prediction does (measured
with bench/serve.py). This service answers through its own routes, so :func:`install` keeps:

- BentoML's request metrics (``bentoml_service_request_*``): the same series, through
  :func:`request_metrics`, which keeps each label set's children instead of looking them up
  (four ``labels()`` calls with keyword arguments a request: up to 4.7 µs each, measured);
- the request timeout, as :class:`RequestTimeout`: the same contract as BentoML's (no response
  started within ``traffic.timeout``: cancelled and answered 504 with BentoML's message; a
  response under way is left alone) without a new task and a 60 s timer left behind per request;
- the OpenTelemetry middleware only when DRIFTLOOP_SERVING__TRACE_REQUESTS is on;

and leaves out the ``bentoml.Context`` middleware, which only ``@bentoml.api`` methods read (this
service has none). BentoML reads these classes when it builds the app: call :func:`install`
before that, at import of the service module.
"""

from __future__ import annotations

import asyncio
import logging
from timeit import default_timer
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

LEFT_OUT_ALWAYS = frozenset({"ContextMiddleware"})
LEFT_OUT_UNTRACED = frozenset({"OpenTelemetryMiddleware"})


class RequestTimeout:
    """Answers 504 when a request has not started its response within ``timeout`` seconds."""

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started = False
        deadline: Any = None

        async def started_send(message: Message) -> None:
            nonlocal started
            if not started:
                started = True
                deadline.reschedule(None)  # a response under way is not cut off
            await send(message)

        try:
            async with asyncio.timeout(self.timeout) as deadline:
                await self.app(scope, receive, started_send)
        except TimeoutError:
            if started or not deadline.expired():
                raise
            answer = JSONResponse(
                {"error": f"Not able to process the request in {self.timeout} seconds"},
                status_code=504,
            )
            await answer(scope, receive, send)


def request_metrics(base: type[Any]) -> type[Any]:
    """BentoML's request-metrics middleware (``base``), with the same series and labels, whose
    children are looked up once per endpoint and status code and kept.

    Websockets and the paths it skips go through BentoML's own code unchanged.
    """

    class RequestMetrics(base):  # type: ignore[misc,valid-type]
        KEPT = 1_000  # endpoints kept (a scan of unknown paths must not grow it for ever)

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._kept: dict[str, tuple[Any, Any]] = {}
            self._outcomes: dict[tuple[str, int], tuple[Any, Any]] = {}

        @staticmethod
        def _service() -> dict[str, str | None]:
            """The labels BentoML puts on every series: which service and Bento."""
            from bentoml._internal.context import server_context

            return {
                "service_name": server_context.bento_name,
                "service_version": server_context.bento_version,
                "runner_name": server_context.service_name,
            }

        def _children(self, endpoint: str) -> tuple[Any, Any]:
            """The last-request time (None for a skipped path) and in-progress gauges."""
            found = self._kept.get(endpoint)
            if found is not None:
                return found  # type: ignore[no-any-return]
            names = self._service()
            last = (
                None
                if endpoint.startswith(tuple(self.skip_paths))
                else self.metrics_last_request_timestamp.labels(**names)
            )
            found = (last, self.metrics_request_in_progress.labels(endpoint=endpoint, **names))
            if len(self._kept) < self.KEPT:
                self._kept[endpoint] = found
            return found

        def _outcome(self, endpoint: str, status: int) -> tuple[Any, Any]:
            """The request counter and the duration histogram of one endpoint and status."""
            found = self._outcomes.get((endpoint, status))
            if found is not None:
                return found  # type: ignore[no-any-return]
            names = {**self._service(), "endpoint": endpoint, "http_response_code": status}
            found = (
                self.metrics_request_total.labels(**names),
                self.metrics_request_duration.labels(**names),
            )
            if len(self._outcomes) < self.KEPT:
                self._outcomes[(endpoint, status)] = found
            return found

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or scope["path"] == "/metrics":
                await super().__call__(scope, receive, send)
                return
            if not self._is_setup:
                self._setup()
            endpoint = scope["path"]
            last, in_progress = self._children(endpoint)
            if last is not None:
                last.set_to_current_time()
            start = default_timer()
            status = 0

            async def counted_send(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                elif message["type"] == "http.response.body" and not message.get("more_body"):
                    total, duration = self._outcome(endpoint, status)
                    total.inc()
                    duration.observe(max(default_timer() - start, 0))
                await send(message)

            in_progress.inc()
            try:
                await self.app(scope, receive, counted_send)
            finally:
                in_progress.dec()

    return RequestMetrics


def install(service_name: str, *, trace_requests: bool) -> bool:
    """Trim the middleware BentoML builds for ``service_name``; False if BentoML changed shape.

    Other services in the same process keep BentoML's stack as it is.
    """
    try:
        from _bentoml_impl.server.app import ServiceAppFactory
        from bentoml._internal.server.http import instruments, traffic
    except ImportError:
        log.warning("BentoML's app factory moved; serving with its full middleware stack")
        return False
    build = getattr(ServiceAppFactory, "middlewares", None)
    if not isinstance(build, property) or build.fget is None:
        log.warning("BentoML's middleware list changed shape; serving with its full stack")
        return False
    original = build.fget
    if getattr(original, "__driftloop_trimmed__", False):
        return True
    left_out = LEFT_OUT_ALWAYS | (frozenset() if trace_requests else LEFT_OUT_UNTRACED)
    metrics = request_metrics(instruments.RunnerTrafficMetricsMiddleware)

    def middlewares(factory: Any) -> list[Any]:
        stack = original(factory)
        if factory.service.name != service_name:
            return stack
        kept = []
        for middleware in stack:
            name = getattr(middleware.cls, "__name__", "")
            if name in left_out:
                continue
            if middleware.cls is traffic.TimeoutMiddleware:
                middleware.cls = RequestTimeout
            elif middleware.cls is instruments.RunnerTrafficMetricsMiddleware:
                middleware.cls = metrics
            kept.append(middleware)
        return kept

    middlewares.__driftloop_trimmed__ = True  # type: ignore[attr-defined]
    ServiceAppFactory.middlewares = property(middlewares)  # type: ignore[method-assign,assignment]
    return True
