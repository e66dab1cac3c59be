"""The command a warm worker's flow runs start with: hand the run to the flow runner, or go cold.

    python -m driftloop.stack.flow_client ADDRESS

Prefect's process worker runs this instead of ``python -m prefect.engine`` (``worker.py``). It
sends the flow runner at ``ADDRESS`` (an abstract Unix socket) its environment, working folder and
standard streams, and the runner forks a process with the flows already imported that runs
Prefect's engine for the run (``flow_runner.py``). This process then stands in for that one
towards the worker: it passes on the signals it gets (SIGTERM is how Prefect cancels a run) and
exits as the run's process exits, with its code or its signal. When the runner does not answer,
it becomes ``python -m prefect.engine`` itself (exec): the run starts cold, as without a runner.

Only the standard library on the way to a run: this runs for every flow run, before anything
else is imported.
"""

from __future__ import annotations

import array
import json
import os
import signal
import socket
import sys
import time

# A request is one SOCK_SEQPACKET message: JSON, with the three standard streams attached.
MAX_REQUEST_BYTES = 1 << 20
WARM_REQUEST = {"warm": True}  # asks the runner to import the flows (no streams attached)
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1)


def request(address: str) -> socket.socket | None:
    """Ask the runner at ``address`` to start this run; the connection, or None if it is not
    there."""
    body = json.dumps({"cwd": os.getcwd(), "env": dict(os.environ), "argv": sys.argv[2:]}).encode()
    if len(body) > MAX_REQUEST_BYTES:
        return None
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        connection.connect("\0" + address)
        streams = array.array("i", [0, 1, 2])
        connection.sendmsg([body], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, streams)])
    except OSError:
        connection.close()
        return None
    return connection


def ask_to_warm(address: str) -> bool:
    """Ask the runner at ``address`` to import the flows now (a run is coming); whether it took
    the request. It does not wait for the imports: the runner answers runs once it has them."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as connection:
        try:
            connection.connect("\0" + address)
            connection.send(json.dumps(WARM_REQUEST).encode())
        except OSError:
            return False
    return True


def started(connection: socket.socket) -> int | None:
    """The run's process id, or None when the runner did not start it (it says why)."""
    answer = connection.recv(256).decode()
    if answer.startswith("pid "):
        return int(answer.split()[1])
    sys.stderr.write(f"flow runner: {answer or 'no answer'}; starting the run cold\n")
    return None


def stand_in(connection: socket.socket, pid: int) -> int:
    """Wait for the run's process ``pid``, passing signals on; its exit status as a return
    code."""

    def forward(number: int, frame: object) -> None:
        try:
            os.kill(pid, number)
        except ProcessLookupError:
            pass

    for number in FORWARDED:
        signal.signal(number, forward)
    ended = connection.recv(64).decode()  # a forwarded signal does not cut it short (PEP 475)
    if ended.startswith("exit "):
        return int(ended.split()[1])
    # The runner stopped before the run did: the run carries on (it reports its own state to
    # Prefect); wait for it, then say its end is unknown. (Orphaned, the run may end a zombie
    # nobody reaps soon: only a zombie-aware check sees it gone.)
    from driftloop.stack.processes import pid_alive

    while pid_alive(pid):
        time.sleep(0.5)
    sys.stderr.write(f"the flow runner stopped while run process {pid} ran; its exit is unknown\n")
    return 1


def cold() -> None:
    """Become ``python -m prefect.engine``: what the worker runs without a runner."""
    os.execv(sys.executable, [sys.executable, "-m", "prefect.engine", *sys.argv[2:]])


def exit_as(code: int) -> None:
    """Exit as the run's process did: a signal it died of kills this process too."""
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python -m driftloop.stack.flow_client ADDRESS")
    connection = request(sys.argv[1])
    if connection is None:
        sys.stderr.write(f"flow runner {sys.argv[1]!r} not answering: starting the run cold\n")
        cold()
        return
    with connection:
        pid = started(connection)
        if pid is None:
            connection.close()
            cold()
            return
        code = stand_in(connection, pid)
    exit_as(code)


if __name__ == "__main__":
    main()
