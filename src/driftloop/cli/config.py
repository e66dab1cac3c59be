"""``driftloop config``: the effective settings."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from driftloop.cli.root import JsonOption, app, load_settings, print_json, show_table
from driftloop.settings import effective_settings

config_app = typer.Typer(help="Inspect driftloop's settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(
    as_json: JsonOption = False,
    describe: Annotated[
        bool, typer.Option("--describe", help="Add a column saying what each setting does.")
    ] = False,
) -> None:
    """Print the effective settings (environment, .env, defaults) with secrets masked."""
    settings = load_settings()
    rows = list(effective_settings(settings))
    if as_json:
        print_json({name: value for name, value, _ in rows})
        return
    table = Table(title="driftloop settings", title_justify="left")
    table.add_column("variable", style="cyan", no_wrap=True)
    table.add_column("value", overflow="fold")
    if describe:
        table.add_column("description", style="dim")
    for name, value, description in rows:
        table.add_row(name, value, *([description] if describe else []))
    show_table(table)
