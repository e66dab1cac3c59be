"""The lakeFS API document the lakeFS-compatible server implements (vendored; see NOTICE.md)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml

DOCUMENT = Path(__file__).with_name("lakefs-openapi.yml")
# The lakeFS release the document comes from, and the file's SHA-256 as vendored.
LAKEFS_VERSION = "1.84.0"
SHA256 = "b0e9baa646f72d1966e19cad85d3113ae58457f5c363abf7118c8637d5bc4dc3"


@cache
def document() -> dict[str, Any]:
    """The API document, parsed once."""
    loaded: dict[str, Any] = yaml.safe_load(DOCUMENT.read_text())
    return loaded


@cache
def document_json() -> bytes:
    """The API document as the JSON lakeFS serves at ``/openapi.json``."""
    return json.dumps(document()).encode()
