"""The vendored lakeFS API document is the file of the release it names, unedited."""

import hashlib

from services.lakefs_local.openapi import DOCUMENT, LAKEFS_VERSION, SHA256, document


def test_the_vendored_document_is_the_one_recorded() -> None:
    assert hashlib.sha256(DOCUMENT.read_bytes()).hexdigest() == SHA256
    notice = (DOCUMENT.parent / "NOTICE.md").read_text()
    assert SHA256 in notice and f"v{LAKEFS_VERSION}" in notice and "Apache" in notice


def test_the_document_keeps_its_license() -> None:
    assert document()["info"]["license"]["name"] == "Apache 2.0"
