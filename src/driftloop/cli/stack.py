"""``driftloop up``, ``status``, ``down`` and ``deploy``: the embedded stack."""

from __future__ import annotations

import dataclasses
import subprocess
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from driftloop.cli.root import (
    JsonOption,
    app,
    console,
    errors,
    fail,
    load_settings,
    print_json,
    say,
    show_table,
)
from driftloop.settings import Settings
from driftloop.stack.deploy import DeployError, apply, code_dir
from driftloop.stack.errors import StackError, Stop
from driftloop.stack.health import status as stack_status
from driftloop.stack.processes import Usage, pid_alive, usage
from driftloop.stack.servers import driftloop_executable
from driftloop.stack.state import Record, last_stop, read_state
from driftloop.stack.state import down as stop_stack


@app.command()
def up(
    detach: Annotated[
        bool,
        typer.Option(
            "--detach", "-d", help="Run in the background; return once every component is healthy."
        ),
    ] = False,
) -> None:
    """Start the embedded stack: Prefect server and worker with the deployments, the lakeFS-
    compatible server, inference, monitor, Prometheus and Alertmanager (when on PATH).

    Waits until each is healthy, prints where everything is, and runs until Ctrl-C or SIGTERM
    (or `driftloop down`), then stops everything. Logs: DRIFTLOOP_HOME/logs."""
    # The supervisor brings Prefect and the flows (the bootstrap runs them): loaded when it runs.
    from driftloop.stack.supervisor import LocalStack

    settings = load_settings()
    if detach:
        up_detached(settings)
        return
    try:
        stack = LocalStack(settings, code=code_dir(), say=say, dotenv=Path(".env"))
        with stack.running_stack():
            show_stack(settings)
            console.print(
                "the stack is up; Ctrl-C here or `driftloop down` elsewhere stops it",
                highlight=False,
            )
            stack.supervise()
    except Stop:
        console.print("stopped every component", highlight=False)
    except (StackError, DeployError) as error:
        fail(str(error))


def up_detached(settings: Settings) -> None:
    """``driftloop up`` in its own session, its output in logs/up.log; wait until it is ready."""
    logs = settings.home.resolve() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / "up.log"
    offset = log.stat().st_size if log.exists() else 0
    with log.open("ab") as output:
        supervisor = subprocess.Popen(
            [driftloop_executable(), "up"],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    console.print(
        f"starting the stack in the background (supervisor pid {supervisor.pid}; its output: "
        f"{log})",
        highlight=False,
        soft_wrap=True,
    )
    while True:
        with log.open("rb") as text:
            text.seek(offset)
            new = text.read()
        offset += len(new)
        for line in new.decode(errors="replace").splitlines():
            console.print(f"  {line}", highlight=False, soft_wrap=True)
        if supervisor.poll() is not None:
            fail(f"the stack did not start (exit code {supervisor.returncode}); see {log}")
        state = read_state(settings)
        if state and state["ready"] and state["supervisor"] == supervisor.pid:
            break
        time.sleep(0.5)
    if not pid_alive(supervisor.pid):
        fail(f"the stack stopped right after starting; see {log}")
    show_stack(settings)
    console.print("stop it with `driftloop down`", highlight=False)


@app.command()
def status(as_json: JsonOption = False) -> None:
    """Show the embedded stack's components with their health; exit 0 only when all are."""
    settings = load_settings()
    state = read_state(settings)
    if state is None:
        stopped = last_stop(settings)
        why = f"; the last one stopped at {stopped['at']}: {stopped['reason']}" if stopped else ""
        fail(
            f"no stack is running under {settings.home.resolve()}{why}; start one with "
            "`driftloop up`"
        )
    if as_json:
        rows = stack_status(settings) or []
        used = resources([record for record, _ in rows])
        print_json(
            {
                "home": str(settings.home.resolve()),
                "supervisor": state["supervisor"],
                "ready": state["ready"],
                "components": [
                    {
                        **dataclasses.asdict(record),
                        **dataclasses.asdict(health),
                        **dataclasses.asdict(used[record.name][0]),
                        "cpu_percent": round(used[record.name][1], 1),
                    }
                    for record, health in rows
                ],
                "rss_bytes": sum(usage.rss_bytes for usage, _ in used.values()),
            }
        )
        healthy = bool(rows) and all(health.healthy for _, health in rows)
    else:
        healthy = show_stack(settings)
    if not state["ready"]:
        fail("the stack is still starting (or stopped while starting); see `driftloop up`'s output")
    if not healthy:
        raise typer.Exit(code=1)


@app.command()
def down() -> None:
    """Stop the embedded stack that `driftloop up` started (in this or another shell)."""
    settings = load_settings()
    if stop_stack(settings, say):
        console.print("stopped every component", highlight=False)
    else:
        console.print(f"no stack is running under {settings.home.resolve()}", highlight=False)


SAMPLE_SECONDS = 0.3


def resources(running: list[Record]) -> dict[str, tuple[Usage, float]]:
    """Each component's memory and CPU time (its processes and theirs), and the share of one
    core it used over the next ``SAMPLE_SECONDS`` (percent)."""
    first = {record.name: usage([record.pid, *record.children]) for record in running}
    time.sleep(SAMPLE_SECONDS)
    shown = {}
    for record in running:
        now = usage([record.pid, *record.children])
        busy = max(now.cpu_seconds - first[record.name].cpu_seconds, 0.0)
        shown[record.name] = (now, 100 * busy / SAMPLE_SECONDS)
    return shown


def show_stack(settings: Settings) -> bool:
    """Print the stack's components with their health now, memory and CPU; whether all are
    healthy."""
    rows = stack_status(settings) or []
    used = resources([record for record, _ in rows])
    table = Table(
        title=f"driftloop stack (state and logs under {settings.home.resolve()})",
        title_justify="left",
    )
    table.add_column("component", no_wrap=True)
    table.add_column("health", overflow="fold")
    table.add_column("url", no_wrap=True)
    table.add_column("memory", justify="right", no_wrap=True)
    table.add_column("CPU now / so far", justify="right", no_wrap=True)
    table.add_column("restarts", overflow="fold")
    table.add_column("log", no_wrap=True)
    home = settings.home.resolve()
    for record, health in rows:
        mark = "[green]✓[/]" if health.healthy else "[red]✗[/]"
        log = Path(record.log)
        shown = str(log.relative_to(home)) if log.is_relative_to(home) else str(log)
        last = f" (last: {record.last_exit})" if record.last_exit else ""
        restarts = f"{record.restarts}{last}"
        taken, busy = used[record.name]
        memory = f"{taken.rss_bytes / 2**20:.0f} MB" if taken.processes else "-"
        cpu = f"{busy:.0f} % / {taken.cpu_seconds:.0f} s" if taken.processes else "-"
        table.add_row(
            record.name, f"{mark} {health.detail}", record.url, memory, cpu, restarts, shown
        )
    show_table(table)
    total = sum(taken.rss_bytes for taken, _ in used.values())
    console.print(
        f"memory of all components: {total / 2**20:.0f} MB (resident, summed over processes)",
        highlight=False,
    )
    return bool(rows) and all(health.healthy for _, health in rows)


@app.command()
def deploy() -> None:
    """Apply prefect.yaml to the Prefect server: the process work pool, the ingest, train,
    retrain and judge deployments, the trigger that starts retrain on drift and alerts, and the
    one that judges a rollout when labelled traffic arrives."""
    settings = load_settings()
    try:
        project = code_dir()
        console.print(
            f"applying {project / 'prefect.yaml'} to {settings.prefect.api_url} "
            f"(work pool {settings.prefect.work_pool}) ...",
            highlight=False,
            soft_wrap=True,
        )
        apply(settings, project)
    except DeployError as error:
        errors.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=1) from None
    ui = str(settings.prefect.api_url).rstrip("/").removesuffix("/api")
    console.print(
        "deployed ingest, train and retrain (retrain starts on driftloop.drift.detected and "
        "driftloop.alert.firing) and judge (on the schedule "
        f"{settings.prefect.judge_cron!r} and on driftloop.feedback.progress); "
        f"see {ui}/deployments and {ui}/automations",
        highlight=False,
        soft_wrap=True,
    )
