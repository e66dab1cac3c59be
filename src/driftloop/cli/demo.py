"""``driftloop demo``: the whole loop on a fresh stack."""

from __future__ import annotations

from typing import Annotated

import typer

from driftloop.cli.root import app, console, fail, load_settings


@app.command()
def demo(
    keep_running: Annotated[
        bool,
        typer.Option(help="Keep the demo's stack running after the loop closed, until Ctrl-C."),
    ] = False,
    label_delay: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds over which each in-distribution window's labels trickle in after its "
            "predictions (the monitor estimates performance meanwhile).",
        ),
    ] = 0.0,
) -> None:
    """The whole loop on this machine: stack, data, model, traffic, drift, automatic retrain,
    a better model serving; a timeline at the end. Exits 0 only when the loop closed."""
    from driftloop.stack.demo import DemoFailed, run_demo

    try:
        run_demo(load_settings(), console, keep_running=keep_running, label_delay=label_delay)
    except DemoFailed as problem:
        fail(str(problem))
