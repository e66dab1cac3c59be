"""The ``driftloop`` command line."""

from __future__ import annotations

import json
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from driftloop import __version__
from driftloop.processes import port_in_use
from driftloop.settings import Settings, SettingsError, effective_settings, get_settings

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


@app.command()
def ingest(
    dataset: Annotated[
        str, typer.Option(help="Dataset: transactions or breast_cancer [DRIFTLOOP_DATASET]")
    ] = "",
    source: Annotated[
        str,
        typer.Option(
            help="builtin[:?rows=N&seed=S&scenario=...], or a .csv/.parquet file or folder"
        ),
    ] = "builtin",
    batch_id: Annotated[
        str | None, typer.Option(help="Batch id (default: derived from the rows' content)")
    ] = None,
) -> None:
    """Land one batch in lakeFS through an isolated branch; merge into main only if it is valid."""
    settings = load_settings()
    dataset = dataset or settings.dataset
    api_url = str(settings.prefect.api_url).rstrip("/")
    require_prefect(api_url)
    console.print(
        f"ingesting [bold]{dataset}[/] from {source} into lakeFS {settings.lakefs.endpoint} "
        f"(repository {settings.lakefs.repository}); Prefect at {api_url}",
        highlight=False,
        soft_wrap=True,
    )
    from prefect.settings import temporary_settings

    from driftloop.datasets.sources import SourceError
    from driftloop.ingestion import BatchRejected
    from driftloop.lakefs_client import LakeFSError
    from flows.ingest import ingest_batch

    with temporary_settings(updates={"api.url": api_url, "server.ephemeral.enabled": False}):
        try:
            run = ingest_batch(dataset, source, batch_id)
        except BatchRejected as rejected:
            fail(
                f"{rejected}\nInspect the batch on lakeFS branch {rejected.branch!r}; the "
                f"validation report is an artifact of the flow run in the Prefect UI.",
            )
        except (SourceError, LakeFSError, ValueError) as problem:
            fail(str(problem))
    run_page = f"{api_url.removesuffix('/api')}/runs/flow-run/{run.flow_run_id}"
    for key in ("status", "batch_id", "rows", "path", "commit_id"):
        console.print(f"{key:>10}  {run.outcome[key]}", highlight=False, soft_wrap=True)
    console.print(f"{'flow run':>10}  {run_page}", highlight=False, soft_wrap=True)


def require_prefect(api_url: str) -> None:
    """Stop with a clear message when no Prefect server answers at ``api_url``."""
    import httpx

    try:
        healthy = httpx.get(f"{api_url}/health", timeout=5).is_success
    except httpx.HTTPError:
        healthy = False
    if not healthy:
        fail(
            f"no Prefect server answers at {api_url}; start one (`prefect server start`) or set "
            "DRIFTLOOP_PREFECT__API_URL"
        )


def fail(message: str) -> NoReturn:
    """Print ``message`` as an error and exit with code 1."""
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=1)


def main() -> None:
    """Entry point for ``python -m driftloop``."""
    app()


@app.command()
def demo() -> None:
    """Run the loop on this machine and show what happened (stages not built yet are named)."""
    from driftloop.demo import DemoFailed, run_demo

    try:
        run_demo(load_settings(), console)
    except DemoFailed as problem:
        fail(str(problem))
