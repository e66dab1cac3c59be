"""The stack's worker: Prefect's process worker, with the flows kept warm.

    python -m driftloop.stack.worker --pool POOL [--cold]

The same worker as ``prefect worker start --pool POOL --type process`` (it polls the pool,
proposes each run's states, heartbeats, cancels runs with SIGTERM, shows in the UI), with one
change: each flow run starts from a process that imported the flows once (``flow_runner.py``,
started by this worker as its child) instead of a new interpreter that imports them every
time. ``--cold``, or DRIFTLOOP_PREFECT__WARM_RUNNER=false, leaves the runner out: about 300 MB
(RSS) less held while idle, and each run starts as Prefect's own worker starts it, 8-15 s later.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import subprocess
import sys
import warnings
from typing import Any

from prefect.utilities.processutils import command_to_string, setup_signal_handlers_worker

from driftloop.stack.flow_runner import say_to_stderr

log = logging.getLogger("driftloop.worker")


class FlowRunner:
    """The flow runner process (``flow_runner.py``), this process's child: started at once,
    started again (under a new address) when a run finds it gone."""

    def __init__(self) -> None:
        self.process, self.address = self._start()

    @staticmethod
    def _start() -> tuple[subprocess.Popen[bytes], str]:
        address = f"driftloop-flow-runner-{os.getpid()}-{secrets.token_hex(4)}"
        # Its output goes where this process's goes (the worker's log).
        command = [sys.executable, "-m", "driftloop.stack.flow_runner", address]
        return subprocess.Popen(command), address

    def current(self) -> str:
        """The address to hand a run to. A runner that died is started again; until it has
        imported the flows, runs start cold."""
        code = self.process.poll()
        if code is not None:
            log.warning("the flow runner exited (%s); starting it again", code)
            self.process, self.address = self._start()
        return self.address

    def stop(self) -> None:
        """SIGTERM: it takes no more runs and ends once the runs it forked have ended."""
        if self.process.poll() is None:
            self.process.terminate()


with warnings.catch_warnings():
    # The subclass takes over the "process" type in this process's registry of worker types:
    # that is the point (this worker is started directly, never looked up by type).
    warnings.simplefilter("ignore", UserWarning)
    from prefect.workers.process import ProcessJobConfiguration, ProcessWorker

    class WarmProcessWorker(ProcessWorker):
        """A process worker whose flow runs ``runner`` forks; None: started as Prefect starts
        them."""

        def __init__(self, *args: Any, runner: FlowRunner | None = None, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.runner = runner

        async def run(
            self,
            flow_run: Any,
            configuration: ProcessJobConfiguration,
            task_status: Any = None,
        ) -> Any:
            # A command the deployment or the pool sets is theirs; otherwise the run's process
            # is the client, which hands the run to the runner (or starts it cold).
            if self.runner is not None and not configuration._command_configured:
                configuration.command = command_to_string(
                    [sys.executable, "-m", "driftloop.stack.flow_client", self.runner.current()]
                )
                configuration._command_configured = True
            return await super().run(flow_run, configuration, task_status)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", required=True, help="the process work pool to poll")
    parser.add_argument("--name", default=None, help="the worker's name (Prefect makes one)")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="no flow runner: runs start cold (default: DRIFTLOOP_PREFECT__WARM_RUNNER)",
    )
    args = parser.parse_args(argv)

    from prefect.settings import PREFECT_WORKER_HEARTBEAT_SECONDS

    from driftloop.settings import get_settings

    say_to_stderr(log)
    cold = args.cold or not get_settings().prefect.warm_runner
    runner = None if cold else FlowRunner()
    setup_signal_handlers_worker(os.getpid(), "the process worker", log.info)
    worker = WarmProcessWorker(
        name=args.name,
        work_pool_name=args.pool,
        heartbeat_interval_seconds=int(PREFECT_WORKER_HEARTBEAT_SECONDS.value()),
        runner=runner,
    )
    log.info(
        "polling pool %r; flow runs %s",
        args.pool,
        "forked by the flow runner" if runner else "started cold",
    )
    try:
        asyncio.run(worker.start(printer=log.info))
    except (KeyboardInterrupt, asyncio.CancelledError):
        log.info("worker %r stopped", worker.name)
    finally:
        if runner is not None:
            runner.stop()


if __name__ == "__main__":
    main()
