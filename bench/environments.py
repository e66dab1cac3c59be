"""Environments of their own for the tools the benches compare driftloop with.

A peer's pins must not touch the project's lock: each gets a virtual environment under
``~/.cache/driftloop-bench/<name>``, created with uv on first use and reused after.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path.home() / ".cache" / "driftloop-bench"


def python_of(name: str, packages: list[str]) -> Path:
    """The Python of the environment ``name`` holding ``packages`` (created once)."""
    folder = ROOT / name
    python = folder / "bin" / "python"
    done = folder / ".installed"
    wanted = "\n".join(packages)
    if done.exists() and done.read_text() == wanted:
        return python
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    print(f"[bench] creating the environment {folder} (once): {' '.join(packages)}", flush=True)
    started = time.monotonic()
    subprocess.run(
        [uv, "venv", "-q", "--clear", "--python", sys.executable, str(folder)], check=True
    )
    subprocess.run([uv, "pip", "install", "-q", "--python", str(python), *packages], check=True)
    done.write_text(wanted)
    print(f"[bench] {name} installed in {time.monotonic() - started:.0f} s", flush=True)
    return python
