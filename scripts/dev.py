#!/usr/bin/env python3
"""Set up the project from nothing but Python 3.11 and git, then run one of its jobs.

    python3 scripts/dev.py setup        # .venv with the locked dependencies (uv.lock)
    python3 scripts/dev.py test [ARGS]  # setup, then the whole test suite (ARGS go to pytest)
    python3 scripts/dev.py lint         # setup, then ruff check, ruff format --check, mypy
    python3 scripts/dev.py demo         # setup, then `driftloop demo`

Only the standard library is used here: this script runs before anything is installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
# The same version as uv.lock pins; `uv sync` keeps it, since the project depends on it.
UV_VERSION = "0.13.8"


def say(message: str) -> None:
    print(f"[dev] {message}", flush=True)


def run(*command: str | Path, env: dict[str, str] | None = None) -> int:
    say("$ " + " ".join(str(part) for part in command))
    return subprocess.call([str(part) for part in command], cwd=ROOT, env=env)


def must(*command: str | Path) -> None:
    code = run(*command)
    if code != 0:
        say(f"failed with exit code {code}: {' '.join(str(part) for part in command)}")
        sys.exit(code)


def setup() -> None:
    """Create .venv and install exactly the locked dependencies into it."""
    if sys.version_info[:2] != (3, 11):
        say(f"driftloop needs Python 3.11; this is {sys.version.split()[0]} ({sys.executable})")
        sys.exit(2)
    started = time.monotonic()
    if not (BIN / "python").exists():
        say(f"creating a virtual environment in {VENV}")
        venv.create(VENV, with_pip=True)
    if not _has_uv():
        say(f"installing uv {UV_VERSION} into {VENV}")
        must(BIN / "python", "-m", "pip", "install", "--quiet", f"uv=={UV_VERSION}")
    say("installing the locked dependencies (uv sync --frozen)")
    os.environ["VIRTUAL_ENV"] = str(VENV)
    # Keep urllib3-future (via grafana-client) from overwriting urllib3; see pyproject.toml.
    os.environ["URLLIB3_NO_OVERRIDE"] = "1"
    must(BIN / "uv", "sync", "--frozen", "--python", BIN / "python")
    say(f"environment ready in {time.monotonic() - started:.0f} s: {VENV}")


def _has_uv() -> bool:
    uv = BIN / "uv"
    if not uv.exists():
        return False
    found = subprocess.run([str(uv), "--version"], capture_output=True, text=True, check=False)
    return found.returncode == 0 and UV_VERSION in found.stdout


def test(args: list[str]) -> int:
    setup()
    code = run(BIN / "pytest", *args)
    if code == 5:
        say("pytest collected no tests: that is a failure")
        return 1
    return code


def lint() -> int:
    setup()
    failures = 0
    for command in (
        (BIN / "ruff", "check", "."),
        (BIN / "ruff", "format", "--check", "."),
        (BIN / "mypy",),
    ):
        failures += run(*command) != 0
    return 1 if failures else 0


def demo() -> int:
    setup()
    return run(BIN / "driftloop", "demo")


def main(argv: list[str]) -> int:
    job, args = (argv[0], argv[1:]) if argv else ("help", [])
    if job == "setup":
        setup()
        return 0
    if job == "test":
        return test(args)
    if job == "lint":
        return lint()
    if job == "demo":
        return demo()
    print(__doc__)
    return 0 if job in ("help", "-h", "--help") else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
