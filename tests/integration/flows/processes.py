"""Flows for the flow runner's tests: each says which process ran it and how warm it was."""

import os
import sys
import time
from pathlib import Path

from prefect import flow, get_run_logger

# What this run's process had imported before this file: a run the flow runner forked has the
# project's flows (and scikit-learn) in memory already; a cold `python -m prefect.engine` not.
WARM_AT_IMPORT = "sklearn" in sys.modules and "flows.retrain" in sys.modules


@flow(name="runner-where", persist_result=True)
def where() -> dict[str, object]:
    """The run's process id, its parent's, and whether it started warm."""
    get_run_logger().info("running in process %d", os.getpid())
    return {"pid": os.getpid(), "ppid": os.getppid(), "warm": WARM_AT_IMPORT}


@flow(name="runner-sleepy")
def sleepy(seconds: float, pid_file: str) -> float:
    """Write this process's id to ``pid_file``, then sleep ``seconds``."""
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(seconds)
    return seconds
