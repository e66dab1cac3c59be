"""The flow runner: every flow run of the worker forked from a process that imported the flows.

    python -m driftloop.stack.flow_runner ADDRESS

Prefect's process worker starts each flow run as ``python -m prefect.engine``: a new interpreter
that imports Prefect, pandas, scikit-learn and the flows before the run's first step (about 8 s
on this project's two-core machine, 15 s while it serves traffic; Prefect's own supervisor
process adds more, prefect#21944). The flow runner imports all of that once, when the worker
starts, and then waits on the abstract Unix socket ``ADDRESS``. For each flow run the worker
starts :mod:`driftloop.stack.flow_client`, which hands over the run's environment, working folder
and standard streams; the runner forks, and the child runs Prefect's engine for the run exactly
as ``python -m prefect.engine`` would, in a process of its own: Prefect proposes its states,
sends its logs, keeps its artifacts, enforces the deployment's concurrency limit and cancels it
with SIGTERM as for any run. A run that crashes or is killed takes nothing else with it, and
every run starts from the same freshly imported state (nothing one run leaves in memory reaches
the next).

The runner itself runs nothing but ``fork``: one thread, no Prefect client, no event loop, so a
fork is safe. It answers only processes of its own user (``SO_PEERCRED``). A run outlives the
runner (it is a child, not a thread), and the runner ends when the worker that started it does,
once its running children have ended.

Warm and cool. Warm, the runner holds what the flows import (``WARM_MODULES``, about 310 MB
RSS); cool, only Prefect's engine (``ENGINE_MODULES``, about 85 MB), and a run it forks then
imports the rest itself. It starts warm, and cools after ``--cool-after`` seconds without a run
or a warm request: it cannot unload modules, so it execs itself cool, keeping its process id and
its listening socket (a request waiting meanwhile is answered by the cool runner). A warm
request (``flow_client.ask_to_warm``) makes it import the flows again; the worker sends one when
an event arrives that starts one of its pool's deployments (``driftloop.stack.worker``), so a
retrain that drift starts finds the runner warm, or warming, when it arrives.
"""

from __future__ import annotations

import array
import importlib
import json
import logging
import os
import selectors
import signal
import socket
import struct
import sys
import time
import warnings
from dataclasses import dataclass

from driftloop.stack.flow_client import MAX_REQUEST_BYTES, WARM_REQUEST

log = logging.getLogger("driftloop.flow_runner")


def say_to_stderr(logger: logging.Logger) -> None:
    """``logger``'s INFO lines on stderr, timed, and nothing else changed: the root logger stays
    as Prefect sets it up (a forked run, or the worker's own requests, would otherwise log every
    HTTP call)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


# What every flow run imports: Prefect's engine, held warm or cool.
ENGINE_MODULES = ("prefect.engine", "prefect.flow_engine", "prefect.task_engine")
# What the project's flows import, held while warm. Each is what a run would import itself: a
# module missing here only costs that run its import, and a module here that a run never needs
# costs memory only.
WARM_MODULES = (
    "flows.ingest",
    "flows.train",
    "flows.retrain",
    "flows.judge",
    "flows.package",
    "bentoml",
    "bentoml.sklearn",
    "pyarrow.parquet",
    "sklearn.ensemble",
    "sklearn.linear_model",
    "sklearn.isotonic",
    "driftloop.estimation",
    "driftloop.reports",
)


@dataclass(frozen=True)
class RunRequest:
    """What a flow run's process is to be: its working folder, environment, engine arguments and
    standard streams (descriptors received from the client)."""

    cwd: str
    env: dict[str, str]
    argv: list[str]
    streams: list[int]


def warm(modules: tuple[str, ...]) -> list[str]:
    """Import ``modules``; the ones that could not be imported, with why."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as error:  # a run that needs it fails with its own traceback
            missing.append(f"{name} ({type(error).__name__}: {error})")
    return missing


@dataclass(frozen=True)
class CodeOnDisk:
    """The files of the project's own modules this process imported (driftloop, flows,
    services, and any under the working folder), with their modification times.

    A run forked from the runner uses these modules as they were when the runner imported them;
    a run started cold would read the files again. So a change on disk makes the runner stand
    down: a stack whose flows or driftloop code were edited runs the edited code from the next
    run on, as it did without a runner."""

    times: dict[str, int]

    @classmethod
    def of_imported(cls, roots: tuple[str, ...] | None = None) -> CodeOnDisk:
        roots = roots or _project_roots()
        installed = (sys.prefix + os.sep, sys.base_prefix + os.sep)  # a .venv in the folder
        times = {}
        for module in list(sys.modules.values()):
            path = getattr(module, "__file__", None)
            if path and path.startswith(roots) and not path.startswith(installed):
                try:
                    times[path] = os.stat(path).st_mtime_ns
                except OSError:
                    continue
        return cls(times)

    def changed(self) -> str | None:
        """A file that changed or went away since, or None."""
        for path, mtime in self.times.items():
            try:
                if os.stat(path).st_mtime_ns != mtime:
                    return path
            except OSError:
                return path
        return None


def _project_roots() -> tuple[str, ...]:
    """Where the project's own code lives: each of its packages' folders, and the working
    folder (the code folder the worker runs in)."""
    roots = {os.getcwd() + os.sep}
    for name in ("driftloop", "flows", "services"):
        module = sys.modules.get(name)
        for folder in getattr(module, "__path__", []):
            roots.add(str(folder) + os.sep)
    return tuple(sorted(roots))


@dataclass(frozen=True)
class Options:
    """How the runner was started: at ``address``; ``cool_after`` seconds without a run or a
    warm request before it cools (0: never); ``warm``: holding the flows' imports;
    ``listener``: the listening socket's descriptor, inherited over a cool-down exec."""

    address: str
    cool_after: float = 0.0
    warm: bool = True
    listener: int | None = None

    def argv(self) -> list[str]:
        """The command line that starts a runner with these options."""
        command = [sys.executable, "-m", "driftloop.stack.flow_runner", self.address]
        command += ["--cool-after", str(self.cool_after)]
        if not self.warm:
            command.append("--cool")
        if self.listener is not None:
            command += ["--listen-fd", str(self.listener)]
        return command


def serve(options: Options) -> RunRequest | None:
    """Start a flow run for each request on ``options.address`` until SIGTERM, SIGINT or the end
    of the parent process, then return None once every run has ended. In each forked child it
    returns at once, with the request that child is to run. Cooling execs this process anew."""
    return _Server(options).loop()


class _Server:
    """The runner's one thread: a listening socket, a pipe that signals wake, and one connection
    per running run (to its client)."""

    def __init__(self, options: Options) -> None:
        self.options = options
        if options.listener is None:
            self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            self.listener.bind("\0" + options.address)
            self.listener.listen(16)
        else:  # the runner before this exec bound it: what waits in it is ours to answer
            self.listener = socket.socket(fileno=options.listener)
            os.set_inheritable(self.listener.fileno(), False)
        self.listener.setblocking(False)
        self.warm = options.warm
        self.last_active = time.monotonic()
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(self.wake_write, False)
        self.previous_wakeup = signal.set_wakeup_fd(self.wake_write)
        self.stopping = False
        self.handlers = {
            signal.SIGTERM: signal.signal(signal.SIGTERM, self._stop),
            signal.SIGINT: signal.signal(signal.SIGINT, self._stop),
            signal.SIGCHLD: signal.signal(signal.SIGCHLD, lambda number, frame: None),
        }
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.selector.register(self.wake_read, selectors.EVENT_READ)
        self.runs: dict[int, socket.socket | None] = {}  # run pid -> its client's connection
        self.parent = os.getppid()
        self.code = CodeOnDisk.of_imported()

    def _stop(self, number: int, frame: object) -> None:
        self.stopping = True

    def loop(self) -> RunRequest | None:
        try:
            while not (self.stopping and not self.runs):
                if self.stopping and self.listener.fileno() != -1:
                    self.selector.unregister(self.listener)
                    self.listener.close()
                for key, _ in self.selector.select(timeout=1.0):
                    if key.fileobj is self.listener:
                        request = self._start_run()
                        if request is not None:  # this is the forked child
                            return request
                    elif key.fileobj == self.wake_read:
                        self._drain_wake()
                    else:
                        self._client_closed(key.data)
                self._reap()
                if os.getppid() != self.parent:  # the worker is gone
                    self.stopping = True
                elif self._cool_due():
                    self._cool()
        finally:
            if self.listener.fileno() != -1:
                self.listener.close()
        return None

    def _cool_due(self) -> bool:
        idle = time.monotonic() - self.last_active
        return (
            self.warm
            and not self.runs
            and not self.stopping
            and self.options.cool_after > 0
            and idle >= self.options.cool_after
        )

    def _cool(self) -> None:
        """Let the flows' imports go: exec this runner anew, cool, with the same process id and
        listening socket (nothing is running: ``_cool_due``)."""
        log.info(
            "no flow run for %.0f s: cooling (pid %d keeps only Prefect's engine imported)",
            time.monotonic() - self.last_active,
            os.getpid(),
        )
        os.set_inheritable(self.listener.fileno(), True)
        signal.set_wakeup_fd(-1)
        sys.stdout.flush()
        sys.stderr.flush()
        options = Options(
            self.options.address, self.options.cool_after, False, self.listener.fileno()
        )
        os.execv(sys.executable, options.argv())

    def _warm_up(self, why: str) -> None:
        """Import the flows, unless they are imported already."""
        self.last_active = time.monotonic()
        if self.warm:
            return
        started = time.monotonic()
        for problem in warm(WARM_MODULES):
            log.warning("could not import %s", problem)
        self.warm = True
        self.code = CodeOnDisk.of_imported()
        self.last_active = time.monotonic()
        log.info(
            "pid %d: flows imported in %.1f s (%s); each flow run is forked from here",
            os.getpid(),
            self.last_active - started,
            why,
        )

    def _start_run(self) -> RunRequest | None:
        """Fork a run for the next request; the request in the child, None in the runner."""
        accepted = _accept(self.listener)
        if accepted is None:
            return None
        connection, request = accepted
        if request is None:  # a warm request: warm up, say so, hang up
            self._warm_up("asked to warm")
            refuse(connection, "warm")
            return None
        self.last_active = time.monotonic()
        changed = self.code.changed()
        if changed is not None:
            # What a run would import has changed on disk since this runner imported it: this
            # run starts cold (and fresh), and the runner stops; the worker starts a new one.
            for stream in request.streams:
                os.close(stream)
            refuse(connection, f"{changed} changed since the flow runner imported it")
            log.info("%s changed on disk: stopping, the worker starts a fresh runner", changed)
            self.stopping = True
            return None
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            connection.close()
            self._forget()
            return request
        for stream in request.streams:
            os.close(stream)
        self.runs[pid] = connection
        self.selector.register(connection, selectors.EVENT_READ, pid)
        try:
            connection.send(f"pid {pid}".encode())
        except OSError:  # the client died meanwhile: so does its run
            self._client_closed(pid)
        return None

    def _forget(self) -> None:
        """In a forked child: drop the runner's sockets and signal handling."""
        self.selector.close()
        self.listener.close()
        for connection in self.runs.values():
            if connection is not None:
                connection.close()
        os.close(self.wake_read)
        os.close(self.wake_write)
        signal.set_wakeup_fd(self.previous_wakeup)
        for number, handler in self.handlers.items():
            signal.signal(number, handler)

    def _drain_wake(self) -> None:
        while True:
            try:
                if not os.read(self.wake_read, 512):
                    return
            except BlockingIOError:
                return

    def _client_closed(self, pid: int) -> None:
        """A client's connection is readable: it only ever closes (its process is gone)."""
        connection = self.runs.get(pid)
        if connection is None:
            return
        try:
            closed = not connection.recv(64)
        except OSError:
            closed = True
        if closed:
            self.selector.unregister(connection)
            connection.close()
            self.runs[pid] = None
            # Prefect killed the client (SIGKILL ends a cancelled run that ignored SIGTERM):
            # the run goes with it.
            _kill(pid)

    def _reap(self) -> None:
        """Tell each ended run's client how it ended."""
        while self.runs:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            connection = self.runs.pop(pid, None)
            self.last_active = time.monotonic()
            if connection is None:
                continue
            self.selector.unregister(connection)
            try:
                connection.send(f"exit {os.waitstatus_to_exitcode(status)}".encode())
            except OSError:
                pass  # the client is gone
            connection.close()


def _accept(listener: socket.socket) -> tuple[socket.socket, RunRequest | None] | None:
    """The next request, from a process of this user (None in its place: a warm request); None
    when there is none or it is not."""
    try:
        connection, _ = listener.accept()
    except BlockingIOError:
        return None
    credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    _, uid, _ = struct.unpack("3i", credentials)
    if uid != os.getuid():
        log.warning("refused a request from uid %d (this runner's is %d)", uid, os.getuid())
        connection.close()
        return None
    connection.settimeout(5.0)  # a client sends its request at once; none holds the runner up
    streams = array.array("i")
    try:
        data, ancillary, _, _ = connection.recvmsg(
            MAX_REQUEST_BYTES, socket.CMSG_SPACE(3 * streams.itemsize)
        )
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                streams.frombytes(payload[: len(payload) - len(payload) % streams.itemsize])
        body = json.loads(data)
        if body == WARM_REQUEST and not streams:
            return connection, None
        request = RunRequest(str(body["cwd"]), dict(body["env"]), list(body["argv"]), [*streams])
        if len(request.streams) != 3:
            raise ValueError(f"{len(request.streams)} standard streams attached, not 3")
    except (OSError, ValueError, KeyError, TypeError) as problem:
        for stream in streams:
            os.close(stream)
        refuse(connection, str(problem))
        return None
    return connection, request


def refuse(connection: socket.socket, why: str) -> None:
    """Tell the client no (it starts the run cold) and hang up."""
    try:
        connection.send(f"refused: {why}".encode()[:200])
    except OSError:
        pass  # the client is gone already
    connection.close()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run(request: RunRequest) -> int:
    """In a forked child: become the flow run's process and run Prefect's engine for it, as
    ``python -m prefect.engine`` does; the engine's exit code."""
    import runpy

    for number, stream in enumerate(request.streams):
        os.dup2(stream, number)
        if stream > 2:
            os.close(stream)
    os.chdir(request.cwd)
    os.environ.clear()
    os.environ.update(request.env)
    sys.argv = [sys.argv[0], *request.argv]
    if "numpy" in sys.modules:  # the runner's random state would repeat in every run
        sys.modules["numpy"].random.seed()
    if "flows" in sys.modules:  # its output goes where a cold run's would
        sys.modules["flows"].write_output_to_own_log()

    from prefect.context import SettingsContext, get_settings_context
    from prefect.settings import Settings

    # Settings from the run's environment, as Prefect's own subprocess runs read them.
    with SettingsContext(profile=get_settings_context().profile, settings=Settings()):
        try:
            with warnings.catch_warnings():  # run as __main__ although imported: that is the point
                warnings.filterwarnings("ignore", "'prefect.engine' found in sys.modules")
                runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
        except SystemExit as ended:
            code = ended.code
            if code is None or isinstance(code, int):
                return code or 0
            sys.stderr.write(f"{code}\n")
            return 1
    return 0


def parse(argv: list[str]) -> Options:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m driftloop.stack.flow_runner")
    parser.add_argument("address", help="the abstract Unix socket to listen on")
    parser.add_argument(
        "--cool-after",
        type=float,
        default=0.0,
        help="seconds without a run or a warm request before the runner lets the flows' "
        "imports go (0: never)",
    )
    parser.add_argument("--cool", action="store_true", help="start cool: Prefect's engine only")
    parser.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    return Options(args.address, args.cool_after, not args.cool, args.listen_fd)


def main() -> None:
    options = parse(sys.argv[1:])
    say_to_stderr(log)
    started = time.monotonic()
    for problem in warm(ENGINE_MODULES + (WARM_MODULES if options.warm else ())):
        log.warning("could not import %s", problem)
    if options.warm:
        log.info(
            "pid %d: flows imported in %.1f s; each flow run is forked from here",
            os.getpid(),
            time.monotonic() - started,
        )
    else:
        log.info(
            "pid %d: cool, Prefect's engine imported in %.1f s; flow runs are forked from here "
            "and import the flows themselves until a warm request",
            os.getpid(),
            time.monotonic() - started,
        )
    request = serve(options)
    if request is not None:
        sys.exit(run(request))


if __name__ == "__main__":
    main()
