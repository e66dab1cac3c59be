"""Where code comes from: the git commit a model was trained with."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_sha(configured: str | None = None) -> str:
    """``configured`` (the setting DRIFTLOOP_GIT_SHA: images have no .git) if given, else HEAD
    of the source tree."""
    if configured:
        return configured
    try:
        found = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    sha = found.stdout.strip()
    return sha if found.returncode == 0 and sha else "unknown"
