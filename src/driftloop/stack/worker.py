"""The stack's worker: Prefect's process worker, with the flows kept warm.

    python -m driftloop.stack.worker --pool POOL [--cold]

The same worker as ``prefect worker start --pool POOL --type process`` (it polls the pool,
proposes each run's states, heartbeats, cancels runs with SIGTERM, shows in the UI), with one
change: each flow run starts from a process that imported the flows once (``flow_runner.py``,
started by this worker as its child) instead of a new interpreter that imports them every
time. ``--cold``, or DRIFTLOOP_PREFECT__WARM_RUNNER=false, leaves the runner out: each run
starts as Prefect's own worker starts it, 8-15 s later.

The runner cools after DRIFTLOOP_PREFECT__RUNNER_COOL_SECONDS without a run (it lets the flows'
imports go: about 85 MB RSS held instead of 310). This worker follows Prefect's event stream for
the events that start its pool's deployments (the ``expect`` of every enabled automation that
runs one of them, read again every minute) and asks the runner to warm up on each: drift
declared, an alert firing. The run the event starts reaches the runner a second or more later
and is forked once the flows are imported.
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

from driftloop.stack.flow_client import ask_to_warm
from driftloop.stack.flow_runner import Options, say_to_stderr

log = logging.getLogger("driftloop.worker")


class FlowRunner:
    """The flow runner process (``flow_runner.py``), this process's child: started at once,
    started again (under a new address) when a run finds it gone."""

    def __init__(self, cool_after: float = 0.0) -> None:
        self.cool_after = cool_after
        self.process, self.address = self._start()

    def _start(self) -> tuple[subprocess.Popen[bytes], str]:
        address = f"driftloop-flow-runner-{os.getpid()}-{secrets.token_hex(4)}"
        # Its output goes where this process's goes (the worker's log).
        return subprocess.Popen(Options(address, self.cool_after).argv()), address

    def warm(self, why: str) -> None:
        """Ask the runner to import the flows now (it does nothing if it holds them)."""
        if ask_to_warm(self.current()):
            log.info("%s: the flow runner warms up", why)

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


# How often the events that warm the runner are read again from the automations, and how long
# to wait after the event stream failed (the server restarting, say).
EVENTS_REFRESH_SECONDS = 60.0
EVENTS_RETRY_SECONDS = 10.0
# An event older than this is not a reason to warm (the stream replays the last minute).
EVENT_MAX_AGE_SECONDS = 30.0


async def triggering_events(pool: str) -> frozenset[str]:
    """The event names (``*`` ends a prefix) that start a run of one of ``pool``'s deployments:
    what every enabled automation that runs one of them expects."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName

    async with get_client() as client:
        pool_filter = WorkPoolFilter(name=WorkPoolFilterName(any_=[pool]))
        deployments = {d.id for d in await client.read_deployments(work_pool_filter=pool_filter)}
        automations = await client.read_automations()
    names: set[str] = set()
    for automation in automations:
        targets = {getattr(action, "deployment_id", None) for action in automation.actions}
        if automation.enabled and targets & deployments:
            names |= _expected(automation.trigger)
    return frozenset(names)


def _expected(trigger: Any) -> set[str]:
    """The events a trigger (or the triggers inside a compound one) expects."""
    names = set(getattr(trigger, "expect", None) or ())
    for inner in getattr(trigger, "triggers", None) or ():
        names |= _expected(inner)
    return names


def _matches(event: str, names: frozenset[str]) -> bool:
    return any(
        event.startswith(name[:-1]) if name.endswith("*") else event == name for name in names
    )


async def warm_on_events(pool: str, runner: FlowRunner) -> None:
    """Ask ``runner`` to warm up on every event that starts one of ``pool``'s deployments, until
    cancelled; a failing stream is logged and tried again."""
    while True:
        try:
            names = await triggering_events(pool)
            if names:
                await _follow(names, runner)
            else:
                await asyncio.sleep(EVENTS_REFRESH_SECONDS)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning(
                "could not follow the events that warm the flow runner (%s); again in %.0f s",
                error,
                EVENTS_RETRY_SECONDS,
            )
            await asyncio.sleep(EVENTS_RETRY_SECONDS)


async def _follow(names: frozenset[str], runner: FlowRunner) -> None:
    """Warm ``runner`` on each event named in ``names`` for EVENTS_REFRESH_SECONDS."""
    from datetime import UTC, datetime, timedelta

    from prefect.events.clients import get_events_subscriber
    from prefect.events.filters import EventFilter, EventNameFilter

    # Every name as a prefix on the server (a name is a prefix of itself), exactly here.
    server_filter = EventNameFilter(prefix=sorted(name.rstrip("*") for name in names))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + EVENTS_REFRESH_SECONDS
    async with get_events_subscriber(filter=EventFilter(event=server_filter)) as subscriber:
        while (left := deadline - loop.time()) > 0:
            try:
                event = await asyncio.wait_for(anext(subscriber), left)
            except TimeoutError:
                return
            too_old = datetime.now(UTC) - timedelta(seconds=EVENT_MAX_AGE_SECONDS)
            if _matches(event.event, names) and event.occurred >= too_old:
                runner.warm(f"event {event.event}")


async def work(worker: WarmProcessWorker, pool: str) -> None:
    """Run ``worker``, and beside it the warming of its runner (if it has one)."""
    warming = (
        None
        if worker.runner is None or worker.runner.cool_after <= 0
        else asyncio.create_task(warm_on_events(pool, worker.runner))
    )
    try:
        await worker.start(printer=log.info)
    finally:
        if warming is not None:
            warming.cancel()


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
    settings = get_settings().prefect
    cold = args.cold or not settings.warm_runner
    runner = None if cold else FlowRunner(settings.runner_cool_seconds)
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
        asyncio.run(work(worker, args.pool))
    except (KeyboardInterrupt, asyncio.CancelledError):
        log.info("worker %r stopped", worker.name)
    finally:
        if runner is not None:
            runner.stop()


if __name__ == "__main__":
    main()
