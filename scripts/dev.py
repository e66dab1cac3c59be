#!/usr/bin/env python3
"""Set up the project from nothing but Python 3.11 and git, then run one of its jobs.

    python3 scripts/dev.py setup        # .venv with the locked dependencies (uv.lock)
    python3 scripts/dev.py test [ARGS]  # setup, Debian's prometheus and prometheus-alertmanager
                                        # (installed when root or passwordless sudo allows),
                                        # then the whole test suite (ARGS go to pytest)
    python3 scripts/dev.py lint         # setup, then ruff check, ruff format --check, mypy and
                                        # the import contracts (lint-imports)
    python3 scripts/dev.py demo         # setup, then `driftloop demo`

Only the standard library is used here: this script runs before anything is installed.
"""

from __future__ import annotations

import os
import shutil
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


# Programs the integration tests run, and the Debian package that has each.
SYSTEM_TOOLS = {
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "amtool": "prometheus-alertmanager",
}


def system_tools() -> None:
    """Install the Debian packages the integration tests need, or stop naming the command."""
    missing = sorted({package for tool, package in SYSTEM_TOOLS.items() if not shutil.which(tool)})
    if not missing:
        return
    command = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    if os.geteuid() != 0:
        passwordless = shutil.which("sudo") and subprocess.call(
            ["sudo", "-n", "true"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if passwordless != 0:
            say(f"the integration tests need Debian's {' and '.join(missing)}; install them with")
            say(f"    sudo apt-get install {' '.join(missing)}")
            say("and run this again (nothing was tested)")
            sys.exit(2)
        command.insert(0, "sudo")
    say(f"installing Debian's {' and '.join(missing)} (the integration tests run them)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if run(*command, env=env) != 0:
        # A new machine may have no package lists yet.
        update = [*command[: command.index("apt-get") + 1], "update", "-q"]
        if run(*update, env=env) != 0 or run(*command, env=env) != 0:
            say(f"installing {' and '.join(missing)} failed; the output is above")
            sys.exit(2)
    still = sorted(tool for tool in SYSTEM_TOOLS if not shutil.which(tool))
    if still:
        say(f"installed, but still not on PATH: {', '.join(still)}")
        sys.exit(2)


def runs_integration_tests(args: list[str]) -> bool:
    """False only when every path given lies in the tests that start no processes."""
    paths = [arg for arg in args if not arg.startswith("-") and arg.startswith("tests")]
    return not paths or not all(path.startswith(("tests/unit", "tests/model")) for path in paths)


def parallel(args: list[str]) -> list[str]:
    """pytest-xdist options for the whole suite: one worker per core (at most 4), each taking
    whole modules (a module's fixtures start its servers once). None when ARGS name tests or
    choose workers themselves."""
    if any(not arg.startswith("-") for arg in args) or any(arg.startswith("-n") for arg in args):
        return []
    workers = max(1, min(4, os.cpu_count() or 1))
    return ["-n", str(workers), "--dist", "loadfile"] if workers > 1 else []


def test(args: list[str]) -> int:
    setup()
    if runs_integration_tests(args):
        system_tools()
    code = run(BIN / "pytest", *parallel(args), *args)
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
        # The import contracts of pyproject.toml: the layers point one way.
        (BIN / "lint-imports",),
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
