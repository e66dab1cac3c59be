"""``driftloop lakefs``: the embedded lakeFS-compatible server."""

from __future__ import annotations

from typing import Annotated

import typer

from driftloop.cli.root import app, fail, load_settings
from driftloop.stack.processes import port_in_use

lakefs_app = typer.Typer(help="The embedded lakeFS-compatible server.", no_args_is_help=True)
app.add_typer(lakefs_app, name="lakefs")


@lakefs_app.command("serve")
def lakefs_serve(
    host: Annotated[
        str | None, typer.Option(help="Bind address [DRIFTLOOP_LAKEFS__EMBEDDED_HOST]")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port [DRIFTLOOP_LAKEFS__EMBEDDED_PORT]")] = None,
    crash_at: Annotated[
        str,
        typer.Option(
            hidden=True,
            help="Crash-consistency tests only: SIGKILL this process at upload, commit or merge.",
        ),
    ] = "",
) -> None:
    """Serve the lakeFS-compatible API from DRIFTLOOP_HOME/lakefs (for local use and tests)."""
    from services.lakefs_local.server import main

    lakefs = load_settings().lakefs  # a bad setting fails here, named
    bind_host, bind_port = host or lakefs.embedded_host, port or lakefs.embedded_port
    if port_in_use(bind_host, bind_port):
        fail(
            f"port {bind_port} on {bind_host} is taken; pass --port or set "
            "DRIFTLOOP_LAKEFS__EMBEDDED_PORT."
        )
    main(
        [
            "--host",
            bind_host,
            "--port",
            str(bind_port),
            *(["--crash-at", crash_at] * bool(crash_at)),
        ]
    )
