"""HTTP layer of the lakeFS-compatible server: lakeFS API v1 routes over :class:`Store`.

Status codes, bodies and headers follow the real lakeFS API document, vendored in
``services/lakefs_local/openapi/`` and served at ``/openapi.json``; the conformance suite validates
every request and response against it.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from driftloop.http_bodies import BodyTooLarge, read_body
from services.lakefs_local.openapi import LAKEFS_VERSION, document_json
from services.lakefs_local.store import (
    BadRequest,
    Change,
    Commit,
    Entry,
    NotFound,
    Ref,
    Repository,
    Store,
    StoreError,
    TooLarge,
    crash_here,
    now,
)

API = "/api/v1"
METADATA_HEADER = "x-lakefs-meta-"
DEFAULT_AMOUNT = 100
MAX_AMOUNT = 1000
CHUNK = 1 << 20
# A JSON request body (a commit, a merge, a branch) is small; lakeFS's own API takes its JSON
# through a bounded decoder too. An object may be as large as one S3 PUT (5 GiB).
MAX_JSON_BYTES = 1 << 20
MAX_OBJECT_BYTES = 5 << 30
# Paths that answer without credentials, as in lakeFS.
OPEN_PATHS = frozenset({f"{API}/healthcheck", f"{API}/setup_lakefs"})


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status)


# -- request parsing -------------------------------------------------------------------------


def query_bool(request: Request, name: str, default: bool = False) -> bool:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise BadRequest(f"query parameter {name!r} must be true or false")


def query_amount(request: Request) -> int:
    value = request.query_params.get("amount")
    if value is None or value == "":
        return DEFAULT_AMOUNT
    try:
        amount = int(value)
    except ValueError:
        raise BadRequest("query parameter 'amount' must be an integer") from None
    if not -1 <= amount <= MAX_AMOUNT:
        raise BadRequest(f"query parameter 'amount' must be between -1 and {MAX_AMOUNT}")
    return DEFAULT_AMOUNT if amount in (-1, 0) else amount


def query_path(request: Request) -> str:
    path = request.query_params.get("path")
    if not path:
        raise BadRequest("query parameter 'path' is required")
    return path


async def json_body(request: Request, required: bool = True) -> dict[str, Any]:
    try:
        raw = await read_body(request, MAX_JSON_BYTES, "a JSON request body")
    except BodyTooLarge as problem:
        raise TooLarge(str(problem)) from None
    if not raw.strip():
        if required:
            raise BadRequest("request body is required")
        return {}
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as problem:
        raise BadRequest(f"request body is not valid JSON: {problem}") from None
    except RecursionError:
        raise BadRequest("request body is nested too deeply to be a lakeFS request") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def body_string(body: dict[str, Any], name: str, default: str | None = None) -> str:
    value = body.get(name, default)
    if value is None:
        raise BadRequest(f"field {name!r} is required")
    if not isinstance(value, str):
        raise BadRequest(f"field {name!r} must be a string")
    return value


def body_metadata(body: dict[str, Any]) -> dict[str, str]:
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in metadata.items()
    ):
        raise BadRequest("field 'metadata' must map strings to strings")
    return metadata


# -- response shapes -------------------------------------------------------------------------


def pagination(
    items: list[Any], has_more: bool, amount: int, key: Callable[[Any], str]
) -> dict[str, Any]:
    return {
        "has_more": has_more,
        "next_offset": key(items[-1]) if has_more and items else "",
        "results": len(items),
        "max_per_page": amount,
    }


def listing(
    items: list[Any],
    has_more: bool,
    amount: int,
    key: Callable[[Any], str],
    shape: Callable[[Any], dict[str, Any]],
) -> JSONResponse:
    return JSONResponse(
        {
            "pagination": pagination(items, has_more, amount, key),
            "results": [shape(i) for i in items],
        }
    )


def repository_json(repository: Repository) -> dict[str, Any]:
    return {
        "id": repository.id,
        "creation_date": repository.creation_date,
        "default_branch": repository.default_branch,
        "storage_namespace": repository.storage_namespace,
        "read_only": repository.read_only,
    }


def ref_json(ref: Ref) -> dict[str, Any]:
    return {"id": ref.id, "commit_id": ref.commit_id}


def commit_json(commit: Commit) -> dict[str, Any]:
    return {
        "id": commit.id,
        "parents": commit.parents,
        "committer": commit.committer,
        "message": commit.message,
        "creation_date": commit.creation_date,
        "meta_range_id": commit.meta_range_id,
        "metadata": commit.metadata,
        "generation": commit.generation,
        "version": 1,
    }


def object_json(
    store: Store, repository: Repository, entry: Entry, user_metadata: bool = True
) -> dict[str, Any]:
    stats: dict[str, Any] = {
        "path": entry.path,
        "path_type": "object",
        "physical_address": store.physical_address(repository, entry.checksum),
        "checksum": entry.checksum,
        "size_bytes": entry.size,
        "mtime": entry.mtime,
        "content_type": entry.content_type,
    }
    if user_metadata:
        stats["metadata"] = entry.metadata
    return stats


def prefix_json(prefix: str) -> dict[str, Any]:
    return {
        "path": prefix,
        "path_type": "common_prefix",
        "physical_address": "",
        "checksum": "",
        "mtime": 0,
    }


def diff_json(change: Change) -> dict[str, Any]:
    shape: dict[str, Any] = {
        "type": change.kind,
        "path": change.path,
        "path_type": "common_prefix" if change.is_prefix else "object",
    }
    if change.size is not None:
        shape["size_bytes"] = change.size
    return shape


def group_changes(changes: list[Change], prefix: str, delimiter: str) -> list[Change]:
    """Filter by prefix; with a delimiter, fold deeper paths into prefix_changed lines."""
    grouped: list[Change] = []
    for change in changes:
        if not change.path.startswith(prefix):
            continue
        rest = change.path[len(prefix) :]
        if delimiter and delimiter in rest:
            common = prefix + rest[: rest.index(delimiter) + len(delimiter)]
            if not grouped or grouped[-1].path != common:
                grouped.append(Change("prefix_changed", common, is_prefix=True))
        else:
            grouped.append(change)
    return grouped


def page_after(items: list[Change], after: str, amount: int) -> tuple[list[Change], bool]:
    remaining = [item for item in items if item.path > after]
    return remaining[:amount], len(remaining) > amount


# -- the application -------------------------------------------------------------------------


class LakeFSApp:
    """Routes of the lakeFS API v1 subset that driftloop and the `lakefs` package use."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def routes(self) -> list[Route]:
        r = Route
        return [
            # Outside /api/v1 and open, as in lakeFS: /openapi.json today, /swagger.json before.
            r("/openapi.json", self.api_document, methods=["GET"]),
            r("/swagger.json", self.api_document, methods=["GET"]),
            r(f"{API}/healthcheck", self.healthcheck, methods=["GET"]),
            r(f"{API}/setup_lakefs", self.setup_state, methods=["GET"]),
            r(f"{API}/setup_lakefs", self.setup, methods=["POST"]),
            r(f"{API}/config", self.config, methods=["GET"]),
            r(f"{API}/config/storage", self.storage_config, methods=["GET"]),
            r(f"{API}/config/version", self.version_config, methods=["GET"]),
            r(f"{API}/user", self.current_user, methods=["GET"]),
            r(f"{API}/repositories", self.list_repositories, methods=["GET"]),
            r(f"{API}/repositories", self.create_repository, methods=["POST"]),
            r(f"{API}/repositories/{{repository}}", self.get_repository, methods=["GET"]),
            r(f"{API}/repositories/{{repository}}", self.delete_repository, methods=["DELETE"]),
            r(f"{API}/repositories/{{repository}}/metadata", self.get_metadata, methods=["GET"]),
            r(f"{API}/repositories/{{repository}}/metadata", self.set_metadata, methods=["POST"]),
            r(
                f"{API}/repositories/{{repository}}/metadata",
                self.delete_metadata,
                methods=["DELETE"],
            ),
            r(f"{API}/repositories/{{repository}}/branches", self.list_branches, methods=["GET"]),
            r(f"{API}/repositories/{{repository}}/branches", self.create_branch, methods=["POST"]),
            r(
                f"{API}/repositories/{{repository}}/branches/{{branch}}",
                self.get_branch,
                methods=["GET"],
            ),
            r(
                f"{API}/repositories/{{repository}}/branches/{{branch}}",
                self.delete_branch,
                methods=["DELETE"],
            ),
            r(
                f"{API}/repositories/{{repository}}/branches/{{branch}}",
                self.reset_branch,
                methods=["PUT"],
            ),
            r(
                f"{API}/repositories/{{repository}}/branches/{{branch}}/diff",
                self.diff_branch,
                methods=["GET"],
            ),
            r(
                f"{API}/repositories/{{repository}}/branches/{{branch}}/commits",
                self.commit,
                methods=["POST"],
            ),
            r(
                f"{API}/repositories/{{repository}}/branches/{{branch}}/objects",
                self.upload_object,
                methods=["POST"],
            ),
            r(
                f"{API}/repositories/{{repository}}/branches/{{branch}}/objects",
                self.delete_object,
                methods=["DELETE"],
            ),
            r(
                f"{API}/repositories/{{repository}}/branches/{{branch}}/objects/delete",
                self.delete_objects,
                methods=["POST"],
            ),
            r(
                f"{API}/repositories/{{repository}}/refs/{{ref}}/objects",
                self.get_object,
                methods=["GET", "HEAD"],
            ),
            r(
                f"{API}/repositories/{{repository}}/refs/{{ref}}/objects/stat",
                self.stat_object,
                methods=["GET"],
            ),
            r(
                f"{API}/repositories/{{repository}}/refs/{{ref}}/objects/ls",
                self.list_objects,
                methods=["GET"],
            ),
            r(
                f"{API}/repositories/{{repository}}/refs/{{ref}}/commits",
                self.log_commits,
                methods=["GET"],
            ),
            r(
                f"{API}/repositories/{{repository}}/commits/{{commit}}",
                self.get_commit,
                methods=["GET"],
            ),
            r(
                f"{API}/repositories/{{repository}}/refs/{{left}}/diff/{{right}}",
                self.diff_refs,
                methods=["GET"],
            ),
            r(
                f"{API}/repositories/{{repository}}/refs/{{source}}/merge/{{destination}}",
                self.merge,
                methods=["POST"],
            ),
            r(
                f"{API}/repositories/{{repository}}/refs/{{source}}/merge/{{destination}}",
                self.merge_base,
                methods=["GET"],
            ),
            r(f"{API}/repositories/{{repository}}/tags", self.list_tags, methods=["GET"]),
            r(f"{API}/repositories/{{repository}}/tags", self.create_tag, methods=["POST"]),
            r(f"{API}/repositories/{{repository}}/tags/{{tag}}", self.get_tag, methods=["GET"]),
            r(
                f"{API}/repositories/{{repository}}/tags/{{tag}}",
                self.delete_tag,
                methods=["DELETE"],
            ),
        ]

    # -- setup, config, user --------------------------------------------------------------------

    async def healthcheck(self, request: Request) -> Response:
        return Response(status_code=204)

    async def api_document(self, request: Request) -> Response:
        body = await run_in_threadpool(document_json)
        return Response(body, media_type="application/json")

    async def setup_state(self, request: Request) -> Response:
        initialized = await run_in_threadpool(self.store.is_initialized)
        return JSONResponse(
            {
                "state": "initialized" if initialized else "not_initialized",
                "comm_prefs_missing": False,
            }
        )

    async def setup(self, request: Request) -> Response:
        body = await json_body(request)
        username = body_string(body, "username")
        key = body.get("key") or {}
        if not isinstance(key, dict):
            raise BadRequest("field 'key' must be an object")
        access_key_id, secret = key.get("access_key_id"), key.get("secret_access_key")
        if bool(access_key_id) != bool(secret):
            raise BadRequest("key needs both access_key_id and secret_access_key")
        key_id, secret_key, created = await run_in_threadpool(
            self.store.setup, username, access_key_id, secret
        )
        return JSONResponse(
            {"access_key_id": key_id, "secret_access_key": secret_key, "creation_date": created}
        )

    def _storage(self) -> dict[str, Any]:
        return {
            "blockstore_type": "local",
            "blockstore_namespace_example": "local://example-bucket/",
            "blockstore_namespace_ValidityRegex": "^local://",
            "default_namespace_prefix": "local://",
            "pre_sign_support": False,
            "pre_sign_support_ui": False,
            "import_support": False,
            "import_validity_regex": "^local://",
            "pre_sign_multipart_upload": False,
        }

    def _version(self) -> dict[str, Any]:
        return {"version": LAKEFS_VERSION, "version_context": "lakefs_local (driftloop)"}

    async def config(self, request: Request) -> Response:
        return JSONResponse({"version_config": self._version(), "storage_config": self._storage()})

    async def storage_config(self, request: Request) -> Response:
        return JSONResponse(self._storage())

    async def version_config(self, request: Request) -> Response:
        return JSONResponse(self._version())

    async def current_user(self, request: Request) -> Response:
        return JSONResponse(
            {"user": {"id": request.state.user_id, "creation_date": request.state.user_created}}
        )

    # -- repositories -----------------------------------------------------------------------

    async def list_repositories(self, request: Request) -> Response:
        amount = query_amount(request)
        params = request.query_params
        items, more = await run_in_threadpool(
            self.store.list_repositories,
            params.get("prefix", ""),
            params.get("after", ""),
            amount,
            params.get("search", ""),
        )
        return listing(items, more, amount, lambda r: r.id, repository_json)

    async def create_repository(self, request: Request) -> Response:
        body = await json_body(request)
        repository = await run_in_threadpool(
            self.store.create_repository,
            body_string(body, "name"),
            body_string(body, "storage_namespace"),
            body_string(body, "default_branch", "main"),
            bool(body.get("read_only", False)),
            request.state.user_id,
        )
        return JSONResponse(repository_json(repository), status_code=201)

    async def get_repository(self, request: Request) -> Response:
        repository = await run_in_threadpool(
            self.store.get_repository, request.path_params["repository"]
        )
        return JSONResponse(repository_json(repository))

    async def delete_repository(self, request: Request) -> Response:
        await run_in_threadpool(self.store.delete_repository, request.path_params["repository"])
        return Response(status_code=204)

    async def get_metadata(self, request: Request) -> Response:
        metadata = await run_in_threadpool(
            self.store.repository_metadata, request.path_params["repository"]
        )
        return JSONResponse(metadata)

    async def set_metadata(self, request: Request) -> Response:
        body = await json_body(request)
        await run_in_threadpool(
            self.store.set_repository_metadata,
            request.path_params["repository"],
            body_metadata(body),
        )
        return Response(status_code=204)

    async def delete_metadata(self, request: Request) -> Response:
        body = await json_body(request)
        keys = body.get("keys")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise BadRequest("field 'keys' must be a list of strings")
        await run_in_threadpool(
            self.store.delete_repository_metadata, request.path_params["repository"], keys
        )
        return Response(status_code=204)

    # -- branches -----------------------------------------------------------------------------

    async def list_branches(self, request: Request) -> Response:
        amount = query_amount(request)
        params = request.query_params
        items, more = await run_in_threadpool(
            self.store.list_branches,
            request.path_params["repository"],
            params.get("prefix", ""),
            params.get("after", ""),
            amount,
            query_bool(request, "show_hidden"),
        )
        return listing(items, more, amount, lambda r: r.id, ref_json)

    async def create_branch(self, request: Request) -> Response:
        body = await json_body(request)
        commit_id = await run_in_threadpool(
            self.store.create_branch,
            request.path_params["repository"],
            body_string(body, "name"),
            body_string(body, "source"),
            bool(body.get("hidden", False)),
            bool(body.get("force", False)),
        )
        return PlainTextResponse(commit_id, status_code=201, media_type="text/html")

    async def get_branch(self, request: Request) -> Response:
        ref = await run_in_threadpool(
            self.store.get_branch, request.path_params["repository"], request.path_params["branch"]
        )
        return JSONResponse(ref_json(ref))

    async def delete_branch(self, request: Request) -> Response:
        await run_in_threadpool(
            self.store.delete_branch,
            request.path_params["repository"],
            request.path_params["branch"],
        )
        return Response(status_code=204)

    async def reset_branch(self, request: Request) -> Response:
        body = await json_body(request)
        kind = body_string(body, "type")
        if kind not in ("reset", "object", "common_prefix"):
            raise BadRequest("field 'type' must be reset, object or common_prefix")
        path = None if kind == "reset" else body_string(body, "path")
        await run_in_threadpool(
            self.store.reset_branch,
            request.path_params["repository"],
            request.path_params["branch"],
            path,
            kind == "common_prefix",
        )
        return Response(status_code=204)

    async def diff_branch(self, request: Request) -> Response:
        changes = await run_in_threadpool(
            self.store.diff_branch, request.path_params["repository"], request.path_params["branch"]
        )
        return self._diff_listing(request, changes)

    def _diff_listing(self, request: Request, changes: list[Change]) -> Response:
        amount = query_amount(request)
        params = request.query_params
        grouped = group_changes(changes, params.get("prefix", ""), params.get("delimiter", ""))
        items, more = page_after(grouped, params.get("after", ""), amount)
        return listing(items, more, amount, lambda c: c.path, diff_json)

    # -- commits ------------------------------------------------------------------------------

    async def commit(self, request: Request) -> Response:
        body = await json_body(request)
        date = body.get("date")
        if date is not None and not isinstance(date, int):
            raise BadRequest("field 'date' must be an integer (seconds since the epoch)")
        commit = await run_in_threadpool(
            self.store.commit,
            request.path_params["repository"],
            request.path_params["branch"],
            body_string(body, "message"),
            body_metadata(body),
            request.state.user_id,
            date,
            bool(body.get("allow_empty", False)),
        )
        return JSONResponse(commit_json(commit), status_code=201)

    async def get_commit(self, request: Request) -> Response:
        commit = await run_in_threadpool(
            self.store.get_commit, request.path_params["repository"], request.path_params["commit"]
        )
        return JSONResponse(commit_json(commit))

    async def log_commits(self, request: Request) -> Response:
        amount = query_amount(request)
        params = request.query_params
        since = params.get("since")
        since_epoch = None
        if since:
            try:
                since_epoch = int(datetime.fromisoformat(since.replace("Z", "+00:00")).timestamp())
            except ValueError:
                raise BadRequest("query parameter 'since' must be a date-time") from None
        items, more = await run_in_threadpool(
            self.store.log,
            request.path_params["repository"],
            request.path_params["ref"],
            params.get("after", ""),
            amount,
            query_bool(request, "first_parent"),
            query_bool(request, "limit"),
            params.getlist("objects"),
            params.getlist("prefixes"),
            params.get("stop_at") or None,
            since_epoch,
        )
        return listing(items, more, amount, lambda c: c.id, commit_json)

    # -- objects ------------------------------------------------------------------------------

    async def upload_object(self, request: Request) -> Response:
        repo, branch = request.path_params["repository"], request.path_params["branch"]
        path = query_path(request)
        if_none_match = request.headers.get("if-none-match")
        if if_none_match is not None and if_none_match != "*":
            raise BadRequest("If-None-Match supports only '*'")
        metadata = {
            name[len(METADATA_HEADER) :]: value
            for name, value in request.headers.items()
            if name.lower().startswith(METADATA_HEADER)
        }
        # The branch first: an upload to nowhere is refused before its body is read.
        await run_in_threadpool(self.store.get_branch, repo, branch)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_OBJECT_BYTES:
            raise TooLarge(f"an object of {declared} bytes; at most {MAX_OBJECT_BYTES}")
        content_type = request.headers.get("content-type", "application/octet-stream")
        if content_type.startswith("multipart/form-data"):
            upload, checksum, size, content_type = await self._receive_multipart(request)
        else:
            upload, checksum, size = await self._receive(self._chunks_of_request(request))
        try:
            await run_in_threadpool(self.store.adopt_blob, upload, checksum)
        finally:
            upload.unlink(missing_ok=True)
        entry = Entry(path, checksum, size, now(), content_type, metadata)
        await run_in_threadpool(
            self.store.put_object,
            repo,
            branch,
            entry,
            if_none_match == "*",
            request.headers.get("if-match"),
        )
        repository = await run_in_threadpool(self.store.get_repository, repo)
        return JSONResponse(object_json(self.store, repository, entry), status_code=201)

    async def _chunks_of_request(self, request: Request) -> AsyncIterator[bytes]:
        async for chunk in request.stream():
            yield chunk

    async def _receive(self, chunks: AsyncIterator[bytes]) -> tuple[Path, str, int]:
        """Write chunks to a temporary file beside the blob store, hashing as they arrive."""
        digest = hashlib.sha256()
        size = 0
        handle, name = tempfile.mkstemp(dir=self.store.upload_root, prefix="upload-")
        try:
            with os.fdopen(handle, "wb") as sink:
                async for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    if size > MAX_OBJECT_BYTES:
                        raise TooLarge(f"an object over {MAX_OBJECT_BYTES} bytes")
                    sink.write(chunk)
                    crash_here("upload", self.store.crash_at)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        return Path(name), digest.hexdigest(), size

    async def _receive_multipart(self, request: Request) -> tuple[Path, str, int, str]:
        form = await request.form(max_part_size=1 << 40)
        try:
            content = form.get("content")
            if not isinstance(content, UploadFile):
                raise BadRequest("multipart body needs a 'content' file part")

            async def chunks() -> AsyncIterator[bytes]:
                while block := await content.read(CHUNK):
                    yield block

            upload, checksum, size = await self._receive(chunks())
            return upload, checksum, size, content.content_type or "application/octet-stream"
        finally:
            await form.close()

    async def delete_object(self, request: Request) -> Response:
        path = query_path(request)
        missing = await run_in_threadpool(
            self.store.delete_objects,
            request.path_params["repository"],
            request.path_params["branch"],
            [path],
        )
        if missing:
            raise NotFound(f"object not found: {path}")
        return Response(status_code=204)

    async def delete_objects(self, request: Request) -> Response:
        body = await json_body(request)
        paths = body.get("paths")
        if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
            raise BadRequest("field 'paths' must be a list of paths")
        # Like S3 and lakeFS, deleting a path that does not exist is not an error in bulk.
        await run_in_threadpool(
            self.store.delete_objects,
            request.path_params["repository"],
            request.path_params["branch"],
            paths,
        )
        return JSONResponse({"errors": []})

    async def stat_object(self, request: Request) -> Response:
        repository, entry = await run_in_threadpool(
            self.store.stat_object,
            request.path_params["repository"],
            request.path_params["ref"],
            query_path(request),
        )
        return JSONResponse(
            object_json(self.store, repository, entry, query_bool(request, "user_metadata", True))
        )

    async def list_objects(self, request: Request) -> Response:
        amount = query_amount(request)
        params = request.query_params
        user_metadata = query_bool(request, "user_metadata", True)
        repository, items, more = await run_in_threadpool(
            self.store.list_objects,
            request.path_params["repository"],
            request.path_params["ref"],
            params.get("prefix", ""),
            params.get("after", ""),
            amount,
            params.get("delimiter", ""),
        )

        def shape(item: Entry | str) -> dict[str, Any]:
            if isinstance(item, str):
                return prefix_json(item)
            return object_json(self.store, repository, item, user_metadata)

        return listing(items, more, amount, lambda i: i if isinstance(i, str) else i.path, shape)

    async def get_object(self, request: Request) -> Response:
        head = request.method == "HEAD"
        try:
            _, entry = await run_in_threadpool(
                self.store.stat_object,
                request.path_params["repository"],
                request.path_params["ref"],
                query_path(request),
            )
        except StoreError as problem:
            if head:
                return Response(status_code=problem.status)
            raise
        headers = {
            "ETag": f'"{entry.checksum}"',
            "Last-Modified": email.utils.formatdate(entry.mtime, usegmt=True),
            "Accept-Ranges": "bytes",
        }
        blob = self.store.blob_path(entry.checksum)
        start, end, status = 0, entry.size - 1, 200
        range_header = request.headers.get("range")
        if range_header:
            parsed = parse_range(range_header, entry.size)
            if parsed is None:
                headers["Content-Range"] = f"bytes */{entry.size}"
                if head:
                    return Response(status_code=416, headers=headers)
                return JSONResponse(
                    {"message": f"requested range not satisfiable: {range_header}"},
                    status_code=416,
                    headers=headers,
                )
            start, end = parsed
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
        headers["Content-Length"] = str(max(0, end - start + 1))
        media_type = entry.content_type or "application/octet-stream"
        if head:
            return Response(status_code=status, headers=headers, media_type=media_type)
        return StreamingResponse(
            read_blob(blob, start, end), status_code=status, headers=headers, media_type=media_type
        )

    # -- diff and merge -----------------------------------------------------------------------

    async def diff_refs(self, request: Request) -> Response:
        kind = request.query_params.get("type", "three_dot") or "three_dot"
        if kind not in ("two_dot", "three_dot"):
            raise BadRequest("query parameter 'type' must be two_dot or three_dot")
        changes = await run_in_threadpool(
            self.store.diff_refs,
            request.path_params["repository"],
            request.path_params["left"],
            request.path_params["right"],
            kind == "three_dot",
        )
        return self._diff_listing(request, changes)

    async def merge(self, request: Request) -> Response:
        body = await json_body(request, required=False)
        try:
            commit = await run_in_threadpool(
                self.store.merge,
                request.path_params["repository"],
                request.path_params["source"],
                request.path_params["destination"],
                body_string(body, "message", ""),
                body_metadata(body),
                body_string(body, "strategy", ""),
                request.state.user_id,
                bool(body.get("allow_empty", False)),
                bool(body.get("squash_merge", False)),
            )
        except StoreError as problem:
            if problem.status == 409:
                # The spec says MergeResult (deprecated) while lakeFS sends Error: carry both.
                return JSONResponse({"message": str(problem), "reference": ""}, status_code=409)
            raise
        return JSONResponse({"reference": commit.id})

    async def merge_base(self, request: Request) -> Response:
        source, destination, base = await run_in_threadpool(
            self.store.merge_base,
            request.path_params["repository"],
            request.path_params["source"],
            request.path_params["destination"],
        )
        return JSONResponse(
            {
                "source_commit_id": source,
                "destination_commit_id": destination,
                "base_commit_id": base,
            }
        )

    # -- tags ---------------------------------------------------------------------------------

    async def list_tags(self, request: Request) -> Response:
        amount = query_amount(request)
        params = request.query_params
        items, more = await run_in_threadpool(
            self.store.list_tags,
            request.path_params["repository"],
            params.get("prefix", ""),
            params.get("after", ""),
            amount,
        )
        return listing(items, more, amount, lambda r: r.id, ref_json)

    async def create_tag(self, request: Request) -> Response:
        body = await json_body(request)
        ref = await run_in_threadpool(
            self.store.create_tag,
            request.path_params["repository"],
            body_string(body, "id"),
            body_string(body, "ref"),
            bool(body.get("force", False)),
        )
        return JSONResponse(ref_json(ref), status_code=201)

    async def get_tag(self, request: Request) -> Response:
        ref = await run_in_threadpool(
            self.store.get_tag, request.path_params["repository"], request.path_params["tag"]
        )
        return JSONResponse(ref_json(ref))

    async def delete_tag(self, request: Request) -> Response:
        await run_in_threadpool(
            self.store.delete_tag, request.path_params["repository"], request.path_params["tag"]
        )
        return Response(status_code=204)


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The first byte range of a ``Range: bytes=...`` header, or None when unsatisfiable."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or not spec:
        return None
    first = spec.split(",")[0].strip()
    start_text, _, end_text = first.partition("-")
    try:
        if not start_text:
            length = int(end_text)
            if length <= 0 or size == 0:
                return None
            return max(0, size - length), size - 1
        start = int(start_text)
        end = int(end_text) if end_text else size - 1
    except ValueError:
        return None
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)


def read_blob(path: Path, start: int, end: int) -> Iterator[bytes]:
    with path.open("rb") as source:
        source.seek(start)
        remaining = end - start + 1
        while remaining > 0:
            block = source.read(min(CHUNK, remaining))
            if not block:
                break
            remaining -= len(block)
            yield block


async def store_errors(request: Request, problem: Exception) -> Response:
    assert isinstance(problem, StoreError)
    return error(problem.status, str(problem))


def create_app(
    root: Path,
    *,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    username: str = "admin",
    crash_at: str = "",
) -> Starlette:
    """The server's ASGI app over the store at ``root``; given keys are installed at start.

    ``crash_at`` is for the crash-consistency tests only: the process kills itself there.
    """
    store = Store(root, crash_at=crash_at)
    if access_key_id and secret_access_key:
        store.ensure_credentials(username, access_key_id, secret_access_key)
    app = Starlette(
        routes=LakeFSApp(store).routes(),
        middleware=[Middleware(BasicAuth, store=store)],
        exception_handlers={StoreError: store_errors, HTTPException: http_errors},
    )
    return app


class BasicAuth:
    """Basic auth on every API path except the open ones; 401 without valid credentials."""

    def __init__(self, app: ASGIApp, store: Store) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(API) or path in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        user = await self._user(Headers(scope=scope).get("authorization", ""))
        if isinstance(user, str):
            await error(401, f"error authenticating request: {user}")(scope, receive, send)
            return
        scope.setdefault("state", {})
        scope["state"]["user_id"], scope["state"]["user_created"] = user
        await self.app(scope, receive, send)

    async def _user(self, header: str) -> tuple[str, int] | str:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            return "missing basic auth credentials"
        try:
            key, _, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return "malformed basic auth header"
        user = await run_in_threadpool(self.store.authenticate, key, secret)
        return "invalid credentials" if user is None else user


async def http_errors(request: Request, problem: Exception) -> Response:
    assert isinstance(problem, HTTPException)
    return error(problem.status_code, problem.detail)
