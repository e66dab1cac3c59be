"""The ``driftloop`` command line."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from driftloop import __version__
from driftloop.processes import port_in_use
from driftloop.settings import Settings, SettingsError, effective_settings, get_settings

if TYPE_CHECKING:
    from driftloop.registry import ModelRegistry, ModelVersion

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
model_app = typer.Typer(
    help="Model versions: list, show, promote, roll back.", no_args_is_help=True
)
app.add_typer(model_app, name="model")
monitor_app = typer.Typer(help="The drift monitor.", no_args_is_help=True)
app.add_typer(monitor_app, name="monitor")
grafana_app = typer.Typer(help="Grafana: datasource, dashboards.", no_args_is_help=True)
app.add_typer(grafana_app, name="grafana")

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
        fail(
            f"port {bind_port} on {bind_host} is taken; pass --port or set "
            "DRIFTLOOP_LAKEFS__EMBEDDED_PORT."
        )
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
    from pathlib import Path

    from driftloop.deploy import DeployError, project_dir
    from driftloop.localstack import LocalStack, StackError, Stop

    settings = load_settings()
    if detach:
        up_detached(settings)
        return
    try:
        stack = LocalStack(settings, project=project_dir(), say=say, dotenv=Path(".env"))
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
    import subprocess
    import time

    from driftloop.localstack import read_state
    from driftloop.processes import pid_alive
    from driftloop.stack import driftloop_executable

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
def status() -> None:
    """Show the embedded stack's components with their health; exit 0 only when all are."""
    from driftloop.localstack import read_state

    settings = load_settings()
    state = read_state(settings)
    if state is None:
        fail(f"no stack is running under {settings.home.resolve()}; start one with `driftloop up`")
    healthy = show_stack(settings)
    if not state["ready"]:
        fail("the stack is still starting (or stopped while starting); see `driftloop up`'s output")
    if not healthy:
        raise typer.Exit(code=1)


@app.command()
def down() -> None:
    """Stop the embedded stack that `driftloop up` started (in this or another shell)."""
    from driftloop.localstack import down as stop_stack

    settings = load_settings()
    if stop_stack(settings, say):
        console.print("stopped every component", highlight=False)
    else:
        console.print(f"no stack is running under {settings.home.resolve()}", highlight=False)


def show_stack(settings: Settings) -> bool:
    """Print the stack's components with their health now; whether all are healthy."""
    from pathlib import Path

    from driftloop.localstack import status as stack_status

    rows = stack_status(settings) or []
    table = Table(
        title=f"driftloop stack (state and logs under {settings.home.resolve()})",
        title_justify="left",
    )
    for column in ("component", "health", "url", "log"):
        table.add_column(column, overflow="fold")
    home = settings.home.resolve()
    for record, health in rows:
        mark = "[green]✓[/]" if health.healthy else "[red]✗[/]"
        log = Path(record.log)
        shown = str(log.relative_to(home)) if log.is_relative_to(home) else str(log)
        table.add_row(record.name, f"{mark} {health.detail}", record.url, shown)
    console.print(table)
    return bool(rows) and all(health.healthy for _, health in rows)


def say(message: str) -> None:
    """Progress of a long command, one line each."""
    console.print(message, highlight=False, soft_wrap=True)


@app.command()
def deploy() -> None:
    """Apply prefect.yaml to the Prefect server: the process work pool, the ingest, train and
    retrain deployments, and the trigger that starts retrain on drift and alerts."""
    from driftloop.deploy import DeployError, apply, project_dir

    settings = load_settings()
    try:
        project = project_dir()
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
        f"driftloop.alert.firing); see {ui}/deployments and {ui}/automations",
        highlight=False,
        soft_wrap=True,
    )


@grafana_app.command("sync")
def grafana_sync(
    url: Annotated[str | None, typer.Option(help="Grafana URL [DRIFTLOOP_GRAFANA__URL]")] = None,
    token: Annotated[
        str | None,
        typer.Option(help="Service-account token [DRIFTLOOP_GRAFANA__TOKEN]; prefer the variable"),
    ] = None,
) -> None:
    """Create or update the Prometheus datasource and driftloop's dashboards in a Grafana."""
    from driftloop.grafana import Grafana

    settings = load_settings()
    config = settings.grafana
    target = url or (str(config.url) if config.url else None)
    if target is None:
        errors.print(
            "[bold red]error:[/] no Grafana: pass --url or set DRIFTLOOP_GRAFANA__URL",
            highlight=False,
        )
        raise typer.Exit(code=2)
    secret = token or (config.token.get_secret_value() if config.token else None)
    console.print(f"syncing driftloop's datasource and dashboards to {target} ...", highlight=False)
    try:
        done = Grafana(target, secret).sync(config.prometheus_url)
    except Exception as error:
        errors.print(f"[bold red]error:[/] Grafana at {target}: {error}", highlight=False)
        raise typer.Exit(code=1) from None
    for line in done:
        console.print(f"  {line}", highlight=False)


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


@app.command()
def train(
    dataset: Annotated[str, typer.Option(help="Dataset [DRIFTLOOP_DATASET]")] = "",
    ref: Annotated[
        str, typer.Option(help="lakeFS ref to train on; pinned to its commit id")
    ] = "main",
    estimator: Annotated[
        str, typer.Option(help="hist_gradient_boosting or logistic_regression")
    ] = "hist_gradient_boosting",
    seed: Annotated[int, typer.Option(help="Seed of the split and the estimator")] = 42,
    holdout: Annotated[str, typer.Option(help="stratified or newest_batch")] = "stratified",
    promote: Annotated[
        bool, typer.Option(help="Put the model through the gate (--no-promote: register only)")
    ] = True,
) -> None:
    """Train on a pinned lakeFS commit, register the model, and promote it if it wins the gate."""
    settings = load_settings()
    dataset = dataset or settings.dataset
    api_url = str(settings.prefect.api_url).rstrip("/")
    require_prefect(api_url)
    console.print(f"training on {dataset}@{ref}; Prefect at {api_url}", highlight=False)
    from prefect.settings import temporary_settings

    from driftloop.lakefs_client import LakeFSError
    from flows.train import train as train_flow

    with temporary_settings(updates={"api.url": api_url, "server.ephemeral.enabled": False}):
        try:
            state = train_flow(dataset, ref, estimator, seed, holdout, promote, return_state=True)  # type: ignore[arg-type]
            outcome: dict[str, Any] = state.result()
        except (LakeFSError, ValueError) as problem:
            fail(str(problem))
    run_page = f"{api_url.removesuffix('/api')}/runs/flow-run/{state.state_details.flow_run_id}"
    metrics = outcome["metrics"]
    console.print(
        f"{outcome['model']}:{outcome['version']} is [bold]{outcome['stage']}[/]; "
        f"data commit {outcome['data_commit']}",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        "  ".join(f"{name} {metrics[name]:.4f}" for name in ("roc_auc", "pr_auc", "f1", "brier")),
        highlight=False,
    )
    for reason in outcome["reasons"]:
        console.print(f"  gate: {reason}", highlight=False, soft_wrap=True)
    console.print(f"flow run {run_page}", highlight=False, soft_wrap=True)


@app.command()
def package(
    dataset: Annotated[str, typer.Option(help="Dataset [DRIFTLOOP_DATASET]")] = "",
) -> None:
    """Build a Bento of the inference service with the production model (offline)."""
    settings = load_settings()
    api_url = str(settings.prefect.api_url).rstrip("/")
    require_prefect(api_url)
    from prefect.settings import temporary_settings

    from driftloop.packaging import PackagingError
    from driftloop.registry import RegistryError
    from flows.package import package as package_flow

    with temporary_settings(updates={"api.url": api_url, "server.ephemeral.enabled": False}):
        try:
            built = package_flow(dataset or settings.dataset)
        except (RegistryError, PackagingError) as problem:
            fail(str(problem))
    console.print(f"Bento {built['bento']} with model {built['model']}", highlight=False)
    console.print(f"image: {built['image'] or 'not built (no container engine here)'}")


def open_registry(dataset: str) -> tuple[Settings, ModelRegistry, str]:
    """Settings, the registry, and the model name of ``dataset`` (default: the setting)."""
    from driftloop.datasets.spec import load_spec
    from driftloop.registry import ModelRegistry

    settings = load_settings()
    registry = ModelRegistry(settings.bentoml_home, settings.registry_database)
    return settings, registry, load_spec(dataset or settings.dataset).model_name


@model_app.command("list")
def model_list(
    dataset: Annotated[str, typer.Option(help="Dataset [DRIFTLOOP_DATASET]")] = "",
) -> None:
    """Every version of the dataset's model, with stage, data commit and holdout metrics."""
    _, registry, name = open_registry(dataset)
    table = Table(title=name, title_justify="left")
    for column in ("version", "stage", "created", "data commit", "roc_auc", "pr_auc", "f1"):
        table.add_column(column, no_wrap=True)
    for version in registry.versions(name):
        style = "bold green" if version.stage == "production" else None
        table.add_row(
            version.version,
            version.stage,
            version.created[:16].replace("T", " "),
            version.data_commit[:12],
            f"{version.metrics.get('roc_auc', 0):.4f}",
            f"{version.metrics.get('pr_auc', 0):.4f}",
            f"{version.metrics.get('f1', 0):.4f}",
            style=style,
        )
    console.print(table)


@model_app.command("history")
def model_history(
    dataset: Annotated[str, typer.Option(help="Dataset [DRIFTLOOP_DATASET]")] = "",
) -> None:
    """What happened to the model's versions: registered, promoted, rejected, rolled back."""
    import datetime

    _, registry, name = open_registry(dataset)
    table = Table(title=f"{name} history", title_justify="left")
    for column in ("when (UTC)", "version", "event", "detail"):
        table.add_column(column, overflow="fold")
    for entry in registry.history(name):
        when = datetime.datetime.fromtimestamp(entry.at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(when, entry.version, entry.event, entry.detail)
    console.print(table)


@model_app.command("show")
def model_show(
    version: Annotated[str, typer.Argument(help="Version, or name:version")],
    dataset: Annotated[str, typer.Option(help="Dataset [DRIFTLOOP_DATASET]")] = "",
) -> None:
    """One version with its lineage: model -> data commit -> batches -> ingestion runs."""
    from driftloop.registry import RegistryError

    _, registry, default_name = open_registry(dataset)
    name, _, number = version.rpartition(":")
    name = name or default_name
    try:
        found = registry.get(name, number)
    except RegistryError as problem:
        fail(str(problem))
    console.print(f"[bold]{found.tag}[/]  stage {found.stage}  created {found.created}")
    console.print(f"data commit {found.data_commit}  code {found.git_sha}", highlight=False)
    console.print(f"holdout {found.split}; digest {found.digest}", highlight=False)
    console.print(
        "  ".join(
            f"{k} {v:.4f}" for k, v in found.metrics.items() if k not in ("rows", "positives")
        ),
        highlight=False,
    )
    table = Table(title="lineage: batches at the data commit", title_justify="left")
    for column in ("batch", "rows", "merge commit", "ingestion run"):
        table.add_column(column, overflow="fold")
    for batch in found.batches:
        table.add_row(batch.batch_id, str(batch.rows), batch.merge_commit, batch.run_url or "")
    console.print(table)


@model_app.command("promote")
def model_promote(
    version: Annotated[str, typer.Argument(help="Version to make production")],
    dataset: Annotated[str, typer.Option(help="Dataset [DRIFTLOOP_DATASET]")] = "",
) -> None:
    """Make a version production by hand (bypasses the gate; recorded in the history)."""
    from driftloop.registry import RegistryError

    settings, registry, name = open_registry(dataset)
    try:
        promoted = registry.promote(name, version, "promoted by hand (driftloop model promote)")
    except RegistryError as problem:
        fail(str(problem))
    announce_promotion(settings, promoted)
    console.print(f"{promoted.tag} is production", highlight=False)


@model_app.command("rollback")
def model_rollback(
    dataset: Annotated[str, typer.Option(help="Dataset [DRIFTLOOP_DATASET]")] = "",
) -> None:
    """Make the previous production version production again."""
    from driftloop.registry import RegistryError

    settings, registry, name = open_registry(dataset)
    try:
        restored = registry.rollback(name)
    except RegistryError as problem:
        fail(str(problem))
    announce_promotion(settings, restored)
    console.print(f"rolled back: {restored.tag} is production again", highlight=False)


def announce_promotion(settings: Settings, version: ModelVersion) -> None:
    """Tell Prefect (driftloop.model.promoted); a warning, not a failure, if it is not there."""
    from driftloop.events import (
        MODEL_PROMOTED,
        Event,
        EventNotDelivered,
        model_resource,
        send_event,
    )

    event = Event(
        MODEL_PROMOTED,
        model_resource(version.name),
        {"model": version.name, "version": version.version, "data_commit": version.data_commit},
    )
    try:
        send_event(str(settings.prefect.api_url), event, retries=1)
    except EventNotDelivered as problem:
        errors.print(f"[yellow]warning:[/] {problem}", highlight=False, soft_wrap=True)


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
def demo(
    keep_running: Annotated[
        bool,
        typer.Option(help="Keep the demo's stack running after the loop closed, until Ctrl-C."),
    ] = False,
) -> None:
    """The whole loop on this machine: stack, data, model, traffic, drift, automatic retrain,
    a better model serving; a timeline at the end. Exits 0 only when the loop closed."""
    from driftloop.demo import DemoFailed, run_demo

    try:
        run_demo(load_settings(), console, keep_running=keep_running)
    except DemoFailed as problem:
        fail(str(problem))
