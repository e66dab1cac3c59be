"""The root of the ``driftloop`` command: the app, its output and what every command shares."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from driftloop import __version__
from driftloop.settings import Settings, SettingsError, get_settings

if TYPE_CHECKING:
    from driftloop.project import ProjectModel

app = typer.Typer(
    name="driftloop",
    help="Event-driven MLOps loop: versioned data, training, serving, drift, retraining.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
errors = Console(stderr=True)
# Every command that lists or shows something takes --json (as `kubectl -o json` does).
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON (for scripts) instead of text.")
]
ModelOption = Annotated[
    str,
    typer.Option(
        "--model", help="A model of the project (default: its only one) [DRIFTLOOP_PROJECT]"
    ),
]


def print_json(value: Any) -> None:
    """``value`` (dataclasses, lists and dicts of them) as JSON on stdout, nothing else."""
    sys.stdout.write(json.dumps(value, indent=2, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def show_table(table: Table) -> None:
    """Print ``table`` whole: as wide as it needs, so no identifier is ever cut (a pipe gets
    80 columns from Rich otherwise)."""
    natural = Measurement.get(console, console.options.update(width=100_000), table).maximum
    width = console.width
    console.width = max(width, natural)
    try:
        console.print(table)
    finally:
        console.width = width


def load_settings() -> Settings:
    """Settings for a command, or a clear message naming the bad variable and exit code 2."""
    try:
        return get_settings()
    except SettingsError as error:
        errors.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None


def project_model(settings: Settings, name: str) -> ProjectModel:
    """The project's model ``name`` (its only one when ``name`` is empty), or a clear error
    naming the file, line and field of what is wrong in the project."""
    from driftloop.documents import DocumentError
    from driftloop.project import ProjectError, find_project

    try:
        return find_project(settings.project).model(name or None)
    except (ProjectError, DocumentError) as error:
        fail(str(error))


@app.command()
def version() -> None:
    """Print driftloop's version."""
    console.print(f"driftloop {__version__}", highlight=False)


def say(message: str) -> None:
    """Progress of a long command, one line each."""
    console.print(message, highlight=False, soft_wrap=True)


def settings_with_prefect() -> Settings:
    """Settings for a command that runs flows: stops with a clear message when they are invalid
    or when no Prefect server answers at their API URL."""
    settings = load_settings()
    require_prefect(settings)
    return settings


def prefect_api_url(settings: Settings) -> str:
    return str(settings.prefect.api_url).rstrip("/")


def flow_run_page(settings: Settings, flow_run_id: object) -> str:
    """Where a person sees a flow run in the Prefect UI."""
    return f"{prefect_api_url(settings).removesuffix('/api')}/runs/flow-run/{flow_run_id}"


def require_prefect(settings: Settings) -> None:
    """Stop with a clear message when no Prefect server answers at the configured API URL, or
    when it refuses driftloop's credentials."""
    from driftloop.prefect_api import PrefectAccess

    problem = PrefectAccess.of(settings.prefect).problem()
    if problem:
        fail(problem)


class _WithoutTraceback(logging.Filter):
    """Drops the traceback from a Prefect run log record whose exception the command reports
    itself in one line (a source that cannot be read, a ref lakeFS does not have)."""

    def __init__(self, expected: tuple[type[BaseException], ...]) -> None:
        super().__init__()
        self.expected = expected

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], self.expected):
            record.exc_info, record.exc_text = None, None
        return True


@contextlib.contextmanager
def running_flows(settings: Settings) -> Iterator[None]:
    """Run flows in this process with ``settings``: Prefect's run log is the command's progress,
    without the tracebacks of failures the command turns into one ``error:`` line."""
    from driftloop.datasets.sources import SourceError
    from driftloop.ingestion import BatchRejected
    from driftloop.lakefs_client import LakeFSError
    from flows.common import in_process

    quiet = _WithoutTraceback((SourceError, LakeFSError, BatchRejected, ValueError))
    loggers = [logging.getLogger(name) for name in ("prefect.flow_runs", "prefect.task_runs")]
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        with in_process(settings):
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)


def fail(message: str) -> NoReturn:
    """Print ``message`` as an error and exit with code 1."""
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=1)
