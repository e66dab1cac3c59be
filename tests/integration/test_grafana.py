"""`driftloop grafana sync` and event annotations through grafana-client, over real HTTP.

No Grafana server can run on these machines, so the other end is a small local HTTP double of
Grafana's API that records every request and answers like Grafana does (404 for what does not
exist yet); the tests check the exact requests grafana-client sends.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from driftloop.dashboards import dashboards
from driftloop.grafana import annotate_if_configured
from driftloop.settings import Settings
from tests.commands import run_driftloop as driftloop

TOKEN = "glsa_test_token"


class GrafanaDouble:
    """Records requests; knows which datasources and folders exist."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any, str]] = []
        self.datasources: set[str] = set()
        self.folders: set[str] = set()
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                auth = self.headers.get("Authorization", "")
                double.requests.append((method, self.path, body, auth))
                if auth != f"Bearer {TOKEN}":
                    return self._answer(401, {"message": "Unauthorized"})
                path = self.path
                if method == "GET" and path.startswith("/api/datasources/uid/"):
                    uid = path.rsplit("/", 1)[1]
                    if uid in double.datasources:
                        return self._answer(200, {"uid": uid, "id": 1})
                    return self._answer(404, {"message": "Data source not found"})
                if method == "POST" and path == "/api/datasources":
                    double.datasources.add(body["uid"])
                    return self._answer(200, {"id": 1, "message": "Datasource added"})
                if method == "PUT" and path.startswith("/api/datasources/uid/"):
                    return self._answer(200, {"message": "Datasource updated"})
                if method == "GET" and path.startswith("/api/folders/"):
                    uid = path.rsplit("/", 1)[1]
                    if uid in double.folders:
                        return self._answer(200, {"uid": uid})
                    return self._answer(404, {"message": "folder not found"})
                if method == "POST" and path == "/api/folders":
                    double.folders.add(body["uid"])
                    return self._answer(200, {"uid": body["uid"]})
                if method == "POST" and path == "/api/dashboards/db":
                    return self._answer(200, {"status": "success", "uid": body["dashboard"]["uid"]})
                if method == "POST" and path == "/api/annotations":
                    return self._answer(200, {"id": 7, "message": "Annotation added"})
                return self._answer(404, {"message": "not found"})

            def do_GET(self) -> None:  # noqa: N802
                self._handle("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._handle("POST")

            def do_PUT(self) -> None:  # noqa: N802
                self._handle("PUT")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def grafana() -> Iterator[GrafanaDouble]:
    double = GrafanaDouble()
    try:
        yield double
    finally:
        double.server.shutdown()


def test_sync_creates_then_updates_the_datasource_and_pushes_every_dashboard(
    grafana: GrafanaDouble, tmp_path: Path
) -> None:
    env = {
        "DRIFTLOOP_GRAFANA__TOKEN": TOKEN,
        "DRIFTLOOP_GRAFANA__PROMETHEUS_URL": "http://prom:9090",
    }

    first = driftloop("grafana", "sync", "--url", grafana.url, cwd=tmp_path, env=env)
    first_requests = list(grafana.requests)
    grafana.requests.clear()
    again = driftloop("grafana", "sync", "--url", grafana.url, cwd=tmp_path, env=env)

    assert first.returncode == 0, first.stdout + first.stderr
    assert again.returncode == 0, again.stdout + again.stderr
    assert "created datasource driftloop-prometheus" in first.stdout
    assert "updated datasource driftloop-prometheus" in again.stdout
    assert all(auth == f"Bearer {TOKEN}" for *_, auth in first_requests)
    calls = [(method, path) for method, path, _, _ in first_requests]
    assert calls[:5] == [
        ("GET", "/api/datasources/uid/driftloop-prometheus"),
        ("POST", "/api/datasources"),
        ("GET", "/api/folders/driftloop"),
        ("POST", "/api/folders"),
        ("POST", "/api/dashboards/db"),
    ]
    created = first_requests[1][2]
    assert created["uid"] == "driftloop-prometheus" and created["url"] == "http://prom:9090"
    pushed = [body for method, path, body, _ in first_requests if path == "/api/dashboards/db"]
    expected = dashboards()
    assert sorted(b["dashboard"]["uid"] for b in pushed) == sorted(
        m["uid"] for m in expected.values()
    )
    for body in pushed:
        assert body["overwrite"] is True and body["folderUid"] == "driftloop"
        model = next(m for m in expected.values() if m["uid"] == body["dashboard"]["uid"])
        assert body["dashboard"]["panels"] == model["panels"]
    second = [(method, path) for method, path, _, _ in grafana.requests]
    assert ("PUT", "/api/datasources/uid/driftloop-prometheus") in second
    assert ("POST", "/api/folders") not in second


def test_a_wrong_token_is_a_clear_error(grafana: GrafanaDouble, tmp_path: Path) -> None:
    result = driftloop(
        "grafana",
        "sync",
        "--url",
        grafana.url,
        cwd=tmp_path,
        env={"DRIFTLOOP_GRAFANA__TOKEN": "wrong"},
    )

    assert result.returncode == 1
    assert f"Grafana at {grafana.url}" in result.stderr


def test_promotions_and_drift_become_annotations_only_when_configured(
    grafana: GrafanaDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTLOOP_GRAFANA__URL", grafana.url)
    monkeypatch.setenv("DRIFTLOOP_GRAFANA__TOKEN", TOKEN)
    annotate_if_configured(Settings(), "promoted m:v2", ["promotion", "m"])
    monkeypatch.delenv("DRIFTLOOP_GRAFANA__URL")
    annotate_if_configured(Settings(), "not sent", ["drift", "m"])

    sent = [(path, body) for method, path, body, _ in grafana.requests if method == "POST"]
    assert len(sent) == 1
    path, body = sent[0]
    assert path == "/api/annotations"
    assert body["tags"] == ["driftloop", "promotion", "m"] and body["text"] == "promoted m:v2"
    assert body["time"] == body["timeEnd"] and body["time"] > 1_700_000_000_000


def test_an_unreachable_grafana_never_fails_the_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_GRAFANA__URL", "http://127.0.0.1:9")

    annotate_if_configured(Settings(), "promoted m:v3", ["promotion"])  # logs, does not raise
