"""schemathesis against the inference service's own OpenAPI document: no 5xx, whatever comes in."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftloop.stack.processes import Component
from tests.integration.test_inference import MODEL, Home, serve, url


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Component]:
    home = Home(tmp_path_factory.mktemp("schemathesis-home"))
    home.registry.promote(MODEL, home.versions[0], "test")
    component = serve(home.path, "inference.log")
    try:
        component.wait_healthy(timeout=120)
        yield component
    finally:
        component.stop()


def test_no_server_error_in_at_least_500_generated_requests(
    server: Component, tmp_path: Path
) -> None:
    schemathesis = str(Path(sys.executable).with_name("schemathesis"))

    result = subprocess.run(
        [
            schemathesis,
            "run",
            url(server, "/openapi.json"),
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "300",
            "--seed",
            "20261126",
            "--generation-database",
            "none",
            "--workers",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=tmp_path,
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    generated = sum(int(n) for n in re.findall(r"(\d+) generated", output))
    assert generated >= 500, output[-4000:]
