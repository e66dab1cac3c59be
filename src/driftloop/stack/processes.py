"""Child processes of the local stack: start with a log file, wait until healthy, stop cleanly.

The test harness and ``driftloop up`` both run real servers (Prefect, the lakeFS-compatible
server, BentoML, the monitor) as subprocesses; this module is the one place that knows how.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx


class ComponentFailed(RuntimeError):
    """A component exited or never became healthy; the message says which and where its log is."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports on ``host`` that nothing listens on right now.

    Held open together while they are picked: one :func:`free_port` after another may hand out
    the same port twice, since nothing is bound to it in between.
    """
    probes = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for probe in probes:
            probe.bind((host, 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def port_in_use(host: str, port: int) -> bool:
    """Whether something already accepts connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


@dataclass
class Component:
    """One running server process, its log file and the URL that says it is healthy."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    health_url: str
    _log_file: object = field(default=None, repr=False)

    def log_tail(self, lines: int = 60) -> str:
        """The last lines of the component's log, for error messages and test reports."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def is_healthy(self, timeout: float = 2.0) -> bool:
        """Whether the health URL answers 2xx right now."""
        try:
            return httpx.get(self.health_url, timeout=timeout).is_success
        except httpx.HTTPError:
            return False

    def wait_healthy(
        self,
        timeout: float,
        probe: Callable[[], tuple[bool, str]] | None = None,
        tail_lines: int = 60,
    ) -> None:
        """Block until the health URL answers 2xx, or until ``probe`` says (healthy, detail).

        Raises:
            ComponentFailed: the process exited, or ``timeout`` seconds passed; the message
                names the component, its log and the log's last ``tail_lines`` lines.
        """
        probe = probe or (lambda: (self.is_healthy(), f"at {self.health_url}"))
        deadline, detail = time.monotonic() + timeout, "not checked yet"
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise ComponentFailed(
                    f"{self.name} exited with code {code} before it was healthy; "
                    f"log: {self.log_path}\n{self.log_tail(tail_lines)}"
                )
            healthy, detail = probe()
            if healthy:
                return
            time.sleep(0.25)
        raise ComponentFailed(
            f"{self.name} was not healthy after {timeout:.0f} s ({detail}); "
            f"log: {self.log_path}\n{self.log_tail(tail_lines)}"
        )

    def stop(self, grace_seconds: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after the grace period."""
        if self.process.poll() is None:
            _signal_group(self.process, signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                _signal_group(self.process, signal.SIGKILL)
                self.process.wait(timeout=5)
        close = getattr(self._log_file, "close", None)
        if close is not None:
            close()


def start_component(
    name: str,
    command: Sequence[str],
    *,
    health_url: str,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Component:
    """Start ``command`` in its own process group, with stdout and stderr going to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = log_path.open("ab")
    process = subprocess.Popen(
        list(command),
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**inherited_environment(), **(env or {})},
        cwd=cwd,
        start_new_session=True,
    )
    return Component(name, process, log_path, health_url, log_file)


def inherited_environment() -> dict[str, str]:
    """This process's environment without any secret: a component gets the secrets it needs
    from its caller, by name, and no others (Prometheus none at all)."""
    from driftloop.settings import secret_variables

    hidden = secret_variables()
    return {name: value for name, value in os.environ.items() if name.upper() not in hidden}


def descendants(pid: int) -> list[int]:
    """Every living process below ``pid`` (children, their children, ...), from /proc."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, frontier = [], [pid]
    while frontier:
        children = parents.get(frontier.pop(), [])
        found += children
        frontier += children
    return found


@dataclass(frozen=True)
class Usage:
    """What a component's processes hold and have used: resident memory and CPU time."""

    rss_bytes: int
    cpu_seconds: float
    processes: int
    pss_bytes: int = 0
    """Proportional memory: each page shared by n processes counts 1/n in each (what the
    machine pays; 0 where /proc/<pid>/smaps_rollup cannot be read)."""


def usage(pids: Iterable[int]) -> Usage:
    """Resident memory (summed: pages two processes share count twice, as ``ps`` shows them),
    proportional memory and CPU time so far of ``pids`` and every living process below them,
    from /proc."""
    page, tick = os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_CLK_TCK")
    every = set(pids)
    for pid in list(every):
        every.update(descendants(pid))
    rss = pss = ticks = found = 0
    for pid in every:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone while we looked
        # After the command: state, ppid, ..., utime (index 11), stime (12), ..., rss (21).
        ticks += int(fields[11]) + int(fields[12])
        rss += int(fields[21]) * page
        pss += _pss_bytes(pid)
        found += 1
    return Usage(rss, ticks / tick, found, pss)


def _pss_bytes(pid: int) -> int:
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    for line in rollup.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def become_subreaper() -> bool:
    """Make this process adopt its orphaned descendants (Linux ``PR_SET_CHILD_SUBREAPER``).

    A server that daemonizes its workers into sessions of their own (BentoML's do) leaves them
    running if it dies; adopted, they stay findable with :func:`descendants` and can be stopped.
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(36, 1, 0, 0, 0)) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def stop_pids(pids: list[int], grace_seconds: float = 10.0) -> None:
    """SIGTERM ``pids``, then SIGKILL those still there after ``grace_seconds``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for pid in pids:
            try:
                os.kill(pid, sig)
                alive.append(pid)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_seconds
        while alive and time.monotonic() < deadline:
            alive = [pid for pid in alive if pid_alive(pid)]
            time.sleep(0.1)
        if not alive:
            return
        pids = alive


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (an exited process not reaped yet).

    It never reaps: a zombie child belongs to whoever waits for it (``Popen.poll`` reads its
    exit code from it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
