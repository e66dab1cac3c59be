"""Validation of HTTP exchanges against the real lakeFS API document (vendored in the project).

Every request the conformance suite sends and every response it gets back is validated with
openapi-core against ``lakefs-openapi.yml``: status code declared for the operation, body schema
(required fields, types, enums), and declared headers. The operations seen are recorded, so the
suite can show that it covered every route the server implements.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import requests
import requests.structures
from openapi_core import OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse

from services.lakefs_local.openapi import DOCUMENT as SPEC
from services.lakefs_local.openapi import document

BASE = "/api/v1"
# RFC 9110 Content-Range of a satisfied single range, as lakeFS (Go's http package) sends it.
CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


@cache
def openapi() -> OpenAPI:
    return OpenAPI.from_file_path(str(SPEC))


@cache
def operation_patterns() -> list[tuple[re.Pattern[str], str, str]]:
    """(path regex, method, operationId) for every operation in the document."""
    patterns = []
    for template, item in document()["paths"].items():
        regex = re.compile("^" + re.sub(r"\{[^/}]+\}", "[^/]+", template) + "$")
        for method, operation in item.items():
            if method in ("get", "put", "post", "delete", "head", "patch"):
                patterns.append((regex, method.upper(), operation["operationId"]))
    return patterns


def operation_id(method: str, path: str) -> str:
    relative = path[len(BASE) :] if path.startswith(BASE) else path
    for regex, candidate_method, op_id in operation_patterns():
        if candidate_method == method and regex.match(relative):
            return op_id
    raise AssertionError(f"{method} {path} is not an operation of the lakeFS API")


@dataclass
class SpecCheckedSession:
    """An HTTP session whose every exchange is validated against the lakeFS API document."""

    base_url: str
    auth: tuple[str, str] | None
    covered: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.session = requests.Session()
        if self.auth is not None:
            self.session.auth = self.auth

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = self.session.request(method, f"{self.base_url}{BASE}{path}", **kwargs)
        self.validate(response)
        return response

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    def head(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("HEAD", path, **kwargs)

    def validate(self, response: requests.Response) -> None:
        prepared = response.request
        assert prepared.method is not None and prepared.path_url is not None
        path = prepared.path_url.split("?")[0]
        self.covered.add(operation_id(prepared.method, path))
        checked_response = RequestsOpenAPIResponse(response)
        if response.status_code == 206:
            # The document's pattern for Content-Range ("bytes=...") is the Range *request* syntax;
            # lakeFS answers with the RFC 9110 form. Check that form here, the rest by the document.
            content_range = response.headers.get("Content-Range", "")
            assert CONTENT_RANGE.match(content_range), f"bad Content-Range {content_range!r}"
            stripped = requests.Response()
            stripped.__dict__.update(response.__dict__)
            stripped.headers = requests.structures.CaseInsensitiveDict(
                {k: v for k, v in response.headers.items() if k.lower() != "content-range"}
            )
            checked_response = RequestsOpenAPIResponse(stripped)
        if prepared.method != "HEAD":
            if response.status_code < 400:
                # Negative tests send invalid requests on purpose; the others must be valid too.
                openapi().validate_request(RequestsOpenAPIRequest(prepared))
            openapi().validate_response(RequestsOpenAPIRequest(prepared), checked_response)
        else:
            self._validate_head(prepared.path_url, response)
        if response.status_code >= 400 and prepared.method != "HEAD":
            body = response.json()
            assert isinstance(body.get("message"), str) and body["message"], body

    def _validate_head(self, path_url: str, response: requests.Response) -> None:
        """HEAD answers have no body; the document lists their status codes."""
        relative = path_url.split("?")[0][len(BASE) :]
        for template, item in document()["paths"].items():
            regex = "^" + re.sub(r"\{[^/}]+\}", "[^/]+", template) + "$"
            if "head" in item and re.match(regex, relative):
                declared = {str(code) for code in item["head"]["responses"]}
                assert str(response.status_code) in declared, (response.status_code, declared)
                assert response.content == b""
                return
        raise AssertionError(f"HEAD {path_url} is not an operation of the lakeFS API")
