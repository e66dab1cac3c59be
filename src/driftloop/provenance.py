"""Where code comes from: the git commit a model was trained with."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def git_sha() -> str:
    """DRIFTLOOP_GIT_SHA if set (images have no .git), else HEAD of the source tree."""
    if sha := os.environ.get("DRIFTLOOP_GIT_SHA"):
        return sha
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
