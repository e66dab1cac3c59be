"""``<home>/stack.json``: what runs, so ``driftloop status`` and ``down`` find it from any shell.

The supervisor writes it as components start (also halfway through a start) and removes it when
it has stopped everything. ``down`` stops what a killed supervisor left behind from it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from driftloop.settings import Settings
from driftloop.stack.processes import pid_alive, stop_pids

STATE_FILE = "stack.json"


@dataclass
class Record:
    """One running component as ``stack.json`` keeps it."""

    name: str
    pid: int
    log: str
    url: str
    health: str
    kind: Literal["http", "worker"] = "http"
    # Processes below it, as last seen: servers that put their workers in sessions of their
    # own (BentoML) would leave them running if they died.
    children: list[int] = field(default_factory=list)
    restarts: int = 0
    last_exit: str = ""  # how it last ended, e.g. "killed by SIGKILL at 09:12:03"


def state_path(settings: Settings) -> Path:
    return settings.home.resolve() / STATE_FILE


def read_state(settings: Settings) -> dict[str, Any] | None:
    """The running stack's state, or None when no stack was started under ``settings.home``."""
    path = state_path(settings)
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return state


def records(state: dict[str, Any]) -> list[Record]:
    """The components of a state, in the order they started."""
    return [Record(**record) for record in state["components"]]


def write_state(home: Path, running: Iterable[Record], *, ready: bool) -> None:
    """Replace ``<home>/stack.json`` at once (a reader never sees half a file)."""
    state = {
        "supervisor": os.getpid(),
        "home": str(home),
        "ready": ready,
        "components": [asdict(record) for record in running],
    }
    path = home / STATE_FILE
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(state, indent=2))
    partial.replace(path)


STOPPED_FILE = "stack-stopped.json"


def record_stop(home: Path, reason: str) -> None:
    """Keep why the stack stopped on its own, for ``driftloop status`` to say."""
    (home / STOPPED_FILE).write_text(
        json.dumps({"at": time.strftime("%Y-%m-%d %H:%M:%S"), "reason": reason})
    )


def last_stop(settings: Settings) -> dict[str, str] | None:
    """Why the last stack under ``settings.home`` stopped on its own, if it did."""
    try:
        found: dict[str, str] = json.loads((settings.home.resolve() / STOPPED_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return found


def remove_own_state(settings: Settings) -> None:
    """Remove the state file if this process wrote it (a newer supervisor's stays)."""
    state = read_state(settings)
    if state is not None and state.get("supervisor") == os.getpid():
        state_path(settings).unlink(missing_ok=True)


def down(settings: Settings, say: Callable[[str], None], grace_seconds: float = 60.0) -> bool:
    """Stop the stack started under ``settings.home``; False when there was none.

    The supervisor is asked to stop (SIGTERM) and does it in order; components it left behind
    (a supervisor that was killed) are stopped here, process group by process group.
    """
    state = read_state(settings)
    if state is None:
        return False
    supervisor = int(state["supervisor"])
    if pid_alive(supervisor):
        say(f"asking the stack's supervisor (pid {supervisor}) to stop every component ...")
        os.kill(supervisor, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        while pid_alive(supervisor) and time.monotonic() < deadline:
            time.sleep(0.2)
    for record in reversed(records(state)):
        if pid_alive(record.pid):
            say(f"stopping {record.name} (pid {record.pid}), left behind by the supervisor")
            _stop_group(record.pid)
        orphans = [pid for pid in record.children if pid_alive(pid)]
        if orphans:
            say(f"stopping {len(orphans)} worker process(es) of {record.name} left behind")
            stop_pids(orphans)
    state_path(settings).unlink(missing_ok=True)
    return True


def _stop_group(pid: int, grace_seconds: float = 10.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_seconds
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
