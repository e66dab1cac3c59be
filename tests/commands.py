"""Running the installed `driftloop` command as a user does, for tests of the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from driftloop.stack.processes import free_ports


def run_driftloop(
    *args: str, env: dict[str, str] | None = None, cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run `driftloop ARGS` in ``cwd`` with only ``env`` as its DRIFTLOOP_/PREFECT_ settings."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DRIFTLOOP_", "PREFECT_"))}
    return subprocess.run(
        [str(Path(sys.executable).with_name("driftloop")), *args],
        env={**base, "COLUMNS": "200", **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# The components of the local stack that listen on a port.
STACK_PORTS = ("prefect-server", "lakefs", "inference", "monitor", "prometheus", "alertmanager")


def stack_ports() -> dict[str, int]:
    """A distinct free port for each component of a stack."""
    return dict(zip(STACK_PORTS, free_ports(len(STACK_PORTS)), strict=True))


def stack_env(ports: dict[str, int]) -> dict[str, str]:
    """A user's shell for `driftloop up` / `demo`: none of the test session's settings, only the
    stack's ports moved to ``ports`` (component name -> port), so tests collide with nothing."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DRIFTLOOP_", "PREFECT_", "BENTOML_", "VIRTUAL_ENV"))
    }
    return {
        **base,
        "COLUMNS": "250",
        "DRIFTLOOP_PREFECT__API_URL": f"http://127.0.0.1:{ports['prefect-server']}/api",
        "DRIFTLOOP_LAKEFS__EMBEDDED_PORT": str(ports["lakefs"]),
        "DRIFTLOOP_LAKEFS__ENDPOINT": f"http://127.0.0.1:{ports['lakefs']}",
        "DRIFTLOOP_SERVING__PORT": str(ports["inference"]),
        "DRIFTLOOP_MONITOR__PORT": str(ports["monitor"]),
        "DRIFTLOOP_STACK__PROMETHEUS_PORT": str(ports["prometheus"]),
        "DRIFTLOOP_STACK__ALERTMANAGER_PORT": str(ports["alertmanager"]),
    }
