"""Running the installed `driftloop` command as a user does, for tests of the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


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
