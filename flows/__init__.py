"""Prefect flows: thin orchestration over functions of ``driftloop``; deployed by prefect.yaml."""

from __future__ import annotations

import os
import sys


def write_output_to_own_log() -> None:
    """Send this flow run's output to ``DRIFTLOOP_STACK__FLOW_RUN_LOG`` (appended) when a worker
    started it and that setting names a file.

    A process worker reads its flow runs' output through a pipe. When the worker dies, the next
    line a run prints hits a broken pipe, which Prefect's console log handler turns into
    SystemExit: a retrain crashed a second after its worker was killed. Written to a file, the
    run carries on (and still reports to Prefect). The output before this module is imported
    (the deployment's pull step) still goes through the worker. Read from the environment, not
    the settings: this runs on import, before anything else of driftloop is loaded, and again
    in each run the warm flow runner forks (``driftloop.stack.flow_runner``).
    """
    path = os.environ.get("DRIFTLOOP_STACK__FLOW_RUN_LOG")
    if not path or not os.environ.get("PREFECT__FLOW_RUN_ID"):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(descriptor, sys.stdout.fileno())
    os.dup2(descriptor, sys.stderr.fileno())
    os.close(descriptor)


write_output_to_own_log()
