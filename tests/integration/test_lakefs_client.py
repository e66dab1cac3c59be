"""driftloop's lakeFS client against the real (embedded) server: typed errors and retries."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from driftloop.lakefs_client import (
    ConflictError,
    LakeFSClient,
    MergeConflictError,
    NotFoundError,
    NothingToCommitError,
    PreconditionFailedError,
    UnavailableError,
)
from driftloop.stack.processes import free_port
from tests.integration.conftest import LakeFSServer


@pytest.fixture
def lake(lakefs_server: LakeFSServer) -> LakeFSClient:
    client = lakefs_server.client(f"cli-{uuid.uuid4().hex[:10]}")
    client.ensure_repository("local://client-tests")
    return client


def test_typed_errors(lake: LakeFSClient) -> None:
    lake.create_branch("work", "main")
    lake.upload("work", "a.txt", b"a", if_absent=True)

    with pytest.raises(NotFoundError):
        lake.download("main", "a.txt")
    with pytest.raises(NotFoundError):
        lake.branch_head("nope")
    with pytest.raises(ConflictError):
        lake.create_branch("work", "main")
    with pytest.raises(PreconditionFailedError):
        lake.upload("work", "a.txt", b"again", if_absent=True)
    lake.commit("work", "a")
    with pytest.raises(NothingToCommitError):
        lake.commit("work", "nothing new")


def test_merge_conflict_is_a_typed_error_naming_the_paths(lake: LakeFSClient) -> None:
    for path in ("shared/x.parquet", "shared/y.parquet", "only-main.txt"):
        lake.upload("main", path, b"base")
    lake.commit("main", "base")
    lake.create_branch("left", "main")
    lake.create_branch("right", "main")
    lake.upload("left", "shared/x.parquet", b"left x")
    lake.upload("left", "shared/y.parquet", b"same y")
    lake.upload("left", "left-only.txt", b"l")
    lake.commit("left", "left")
    lake.upload("right", "shared/x.parquet", b"right x")
    lake.upload("right", "shared/y.parquet", b"same y")  # same change on both sides: no conflict
    lake.commit("right", "right")
    lake.merge("left", "main")
    head = lake.branch_head("main")

    with pytest.raises(MergeConflictError) as conflict:
        lake.merge("right", "main")

    assert conflict.value.paths == ["shared/x.parquet"]
    assert "shared/x.parquet" in str(conflict.value)
    assert lake.branch_head("main") == head
    assert lake.merge("right", "main", strategy="source-wins")
    assert lake.download("main", "shared/x.parquet") == b"right x"


class FaultyProxy:
    """A fault-injecting HTTP proxy in front of the real server (a test double for outages).

    It answers the first ``failures`` requests itself with ``status``, then forwards every
    request to the real lakeFS-compatible server.
    """

    def __init__(self, upstream: str, failures: int, status: int) -> None:
        self.upstream, self.failures, self.status = upstream, failures, status
        self.seen: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                proxy.seen.append(f"{self.command} {self.path}")
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if len(proxy.seen) <= proxy.failures:
                    self.send_response(proxy.status)
                    self.send_header("Content-Type", "application/json")
                    payload = b'{"message": "injected failure"}'
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                answer = httpx.request(
                    self.command, proxy.upstream + self.path, headers=headers, content=body
                )
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_DELETE = do_PUT = _handle

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def proxy_factory(lakefs_server: LakeFSServer) -> Iterator[object]:
    proxies: list[FaultyProxy] = []

    def make(failures: int, status: int) -> tuple[FaultyProxy, LakeFSClient]:
        proxy = FaultyProxy(lakefs_server.endpoint, failures, status)
        proxies.append(proxy)
        client = LakeFSClient(
            proxy.url,
            lakefs_server.access_key_id,
            lakefs_server.secret_access_key,
            f"retry-{uuid.uuid4().hex[:8]}",
            retries=3,
            backoff_seconds=0.05,
        )
        return proxy, client

    yield make
    for proxy in proxies:
        proxy.close()


def test_reads_are_retried_through_5xx(proxy_factory) -> None:  # type: ignore[no-untyped-def]
    proxy, client = proxy_factory(failures=2, status=503)

    client.ensure_repository("local://retry")

    assert client.branch_head("main")
    assert proxy.seen[:3] == [proxy.seen[0]] * 3  # the same request, sent three times


def test_a_commit_is_not_resent_after_a_500(proxy_factory, lakefs_server: LakeFSServer) -> None:  # type: ignore[no-untyped-def]
    proxy, client = proxy_factory(failures=0, status=500)
    client.ensure_repository("local://retry")
    client.upload("main", "f.txt", b"f")
    head = client.branch_head("main")
    proxy.failures = len(proxy.seen) + 1  # the next request (the commit) fails with 500

    with pytest.raises(UnavailableError):
        client.commit("main", "once")

    assert sum(1 for line in proxy.seen if "/commits" in line) == 1
    assert client.branch_head("main") == head


def test_unreachable_server_gives_up_after_the_retries() -> None:
    client = LakeFSClient(
        f"http://127.0.0.1:{free_port()}", "key", "secret", "repo", retries=2, backoff_seconds=0.01
    )

    with pytest.raises(UnavailableError, match="unreachable"):
        client.branch_head("main")
