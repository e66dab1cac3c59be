"""The inference service's trimmed BentoML middleware: the timeout keeps BentoML's contract, the
metrics stay, and only the named service loses the layers it does not use."""

from __future__ import annotations

import asyncio
from typing import Any

import bentoml
import orjson
import pytest
from starlette.responses import JSONResponse
from starlette.routing import Route, Router

from services.inference.middleware import RequestTimeout, install


def run(app: Any) -> list[dict[str, Any]]:
    """One GET through ``app``; the ASGI messages it sent."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}
    asyncio.run(app(scope, receive, send))
    return sent


def test_a_request_with_no_response_in_time_gets_bentomls_504() -> None:
    async def slow(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(5)

    sent = run(RequestTimeout(slow, timeout=0.05))

    assert sent[0]["status"] == 504
    assert orjson.loads(sent[1]["body"]) == {
        "error": "Not able to process the request in 0.05 seconds"
    }


def test_a_response_under_way_is_not_cut_off() -> None:
    async def streaming(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.2)  # longer than the timeout, after the response started
        await send({"type": "http.response.body", "body": b"done"})

    sent = run(RequestTimeout(streaming, timeout=0.05))

    assert [m.get("status") for m in sent][:1] == [200]
    assert sent[-1]["body"] == b"done"


def test_a_timeout_raised_by_the_app_itself_is_not_taken_for_the_deadline() -> None:
    async def failing(scope: Any, receive: Any, send: Any) -> None:
        raise TimeoutError("the database did not answer")

    with pytest.raises(TimeoutError, match="database"):
        run(RequestTimeout(failing, timeout=5))


async def hello(request: Any) -> JSONResponse:
    return JSONResponse({"hello": "world"})


@bentoml.service(name="trimmed-probe")
@bentoml.asgi_app(Router([Route("/", hello)]), path="/")
class Trimmed:
    pass


@bentoml.service(name="untouched-probe")
@bentoml.asgi_app(Router([Route("/", hello)]), path="/")
class Untouched:
    pass


def stack(service: Any) -> list[str]:
    app = service.to_asgi(is_main=True)
    return [getattr(m.cls, "__name__", str(m.cls)) for m in app.user_middleware]


def test_install_trims_only_the_named_service_and_keeps_bentomls_metrics() -> None:
    assert install("trimmed-probe", trace_requests=False)

    trimmed, untouched = stack(Trimmed), stack(Untouched)

    assert {"RequestMetrics", "RequestTimeout"} <= set(trimmed)
    assert not {"ContextMiddleware", "OpenTelemetryMiddleware", "TimeoutMiddleware"} & set(trimmed)
    assert {"ContextMiddleware", "OpenTelemetryMiddleware", "TimeoutMiddleware"} <= set(untouched)
    assert "RunnerTrafficMetricsMiddleware" in untouched
