"""``driftloop monitor``: the drift monitor."""

from __future__ import annotations

import typer

from driftloop.cli.root import app, console, fail, load_settings
from driftloop.stack.processes import port_in_use

monitor_app = typer.Typer(help="The drift monitor.", no_args_is_help=True)
app.add_typer(monitor_app, name="monitor")


@monitor_app.command("serve")
def monitor_serve() -> None:
    """Run the monitor: drift checks every DRIFTLOOP_MONITOR__INTERVAL_SECONDS, /metrics,
    /status, /healthz and the Alertmanager webhook /alerts on DRIFTLOOP_MONITOR__PORT."""
    from services.monitor.server import main

    settings = load_settings()
    monitor = settings.monitor
    if port_in_use(monitor.host, monitor.port):
        fail(f"port {monitor.port} on {monitor.host} is taken; set DRIFTLOOP_MONITOR__PORT.")
    console.print(
        f"monitor on http://{monitor.host}:{monitor.port} (status: /status, metrics: /metrics); "
        f"checks every {monitor.interval_seconds:g} s against lakeFS {settings.lakefs.endpoint}, "
        f"events to {settings.prefect.api_url}",
        highlight=False,
        soft_wrap=True,
    )
    main()
