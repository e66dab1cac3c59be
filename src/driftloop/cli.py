"""The ``driftloop`` command line."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from driftloop import __version__
from driftloop.processes import ComponentFailed, port_in_use
from driftloop.settings import Settings, SettingsError, effective_settings, get_settings
from driftloop.stack import ensure_process_pool, start_prefect_server

app = typer.Typer(
    name="driftloop",
    help="Event-driven MLOps loop: versioned data, training, serving, drift, retraining.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect driftloop's settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")
lakefs_app = typer.Typer(help="The embedded lakeFS-compatible server.", no_args_is_help=True)
app.add_typer(lakefs_app, name="lakefs")

console = Console()
errors = Console(stderr=True)


def load_settings() -> Settings:
    """Settings for a command, or a clear message naming the bad variable and exit code 2."""
    try:
        return get_settings()
    except SettingsError as error:
        errors.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None


@app.command()
def version() -> None:
    """Print driftloop's version."""
    console.print(f"driftloop {__version__}", highlight=False)


@config_app.command("show")
def config_show(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    describe: Annotated[
        bool, typer.Option("--describe", help="Add a column saying what each setting does.")
    ] = False,
) -> None:
    """Print the effective settings (environment, .env, defaults) with secrets masked."""
    settings = load_settings()
    rows = list(effective_settings(settings))
    if as_json:
        console.print_json(json.dumps({name: value for name, value, _ in rows}))
        return
    table = Table(title="driftloop settings", title_justify="left")
    table.add_column("variable", style="cyan", no_wrap=True)
    table.add_column("value", overflow="fold")
    if describe:
        table.add_column("description", style="dim")
    for name, value, description in rows:
        table.add_row(name, value, *([description] if describe else []))
    console.print(table)


@lakefs_app.command("serve")
def lakefs_serve(
    host: Annotated[
        str | None, typer.Option(help="Bind address [DRIFTLOOP_LAKEFS__EMBEDDED_HOST]")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port [DRIFTLOOP_LAKEFS__EMBEDDED_PORT]")] = None,
) -> None:
    """Serve the lakeFS-compatible API from DRIFTLOOP_HOME/lakefs (for local use and tests)."""
    from services.lakefs_local.server import serve

    settings = load_settings()
    root = (settings.home / "lakefs").resolve()
    lakefs = settings.lakefs
    bind_host, bind_port = host or lakefs.embedded_host, port or lakefs.embedded_port
    if port_in_use(bind_host, bind_port):
        errors.print(
            f"[bold red]error:[/] port {bind_port} on {bind_host} is taken; pass --port or set "
            "DRIFTLOOP_LAKEFS__EMBEDDED_PORT.",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(code=1)
    key = lakefs.access_key_id.get_secret_value() if lakefs.access_key_id else None
    secret = lakefs.secret_access_key.get_secret_value() if lakefs.secret_access_key else None
    console.print(
        f"lakeFS-compatible server on http://{bind_host}:{bind_port} (API /api/v1), data in {root}"
        + ("" if key else "; no credentials configured: POST /api/v1/setup_lakefs creates them"),
        highlight=False,
        soft_wrap=True,
    )
    serve(root, host=bind_host, port=bind_port, access_key_id=key, secret_access_key=secret)


def main() -> None:
    """Entry point for ``python -m driftloop``."""
    app()


# The stages of the loop that later issues build; `demo` names what is not there yet.
_NOT_BUILT_YET = (
    ("ingest into lakeFS through an isolated branch", "#3"),
    ("train on a pinned commit, gate, package", "#4"),
    ("serve with BentoML and log predictions", "#5"),
    ("monitor drift and retrain automatically", "#6"),
)


@app.command()
def demo() -> None:
    """Run the whole loop on this machine and show what happened (stages not built are named)."""
    settings = load_settings()
    home = settings.home.resolve()
    api_url = str(settings.prefect.api_url).rstrip("/")
    host, port = settings.prefect.api_url.host or "127.0.0.1", settings.prefect.api_url.port or 4200
    log_path = home / "logs" / "prefect-server.log"
    console.print(f"[bold]driftloop demo[/] — state under {home}, logs under {home / 'logs'}")
    if port_in_use(host, port):
        errors.print(
            f"[bold red]error:[/] port {port} on {host} is taken, so the Prefect server cannot "
            "start; stop what listens there or set DRIFTLOOP_PREFECT__API_URL to another port.",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(code=1)
    console.print(f"starting the Prefect server on {host}:{port} (log: {log_path})")
    server = start_prefect_server(
        host=host, port=port, prefect_home=home / "prefect", log_path=log_path
    )
    try:
        server.wait_healthy(timeout=120)
        ensure_process_pool(api_url, settings.prefect.work_pool)
        console.print(f"[green]✓[/] Prefect server healthy: UI at {api_url.removesuffix('/api')}")
        console.print(f"[green]✓[/] process work pool '{settings.prefect.work_pool}' ready")
    except ComponentFailed as error:
        errors.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=1) from None
    finally:
        server.stop()
    for stage, issue in _NOT_BUILT_YET:
        console.print(f"[yellow]–[/] not built yet: {stage} (issue {issue})")
    console.print("The foundation is in place; the loop's stages above come next.")
