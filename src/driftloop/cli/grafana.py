"""``driftloop grafana``: datasource and dashboards in a Grafana."""

from __future__ import annotations

from typing import Annotated

import typer

from driftloop.cli.root import app, console, errors, load_settings

grafana_app = typer.Typer(help="Grafana: datasource, dashboards.", no_args_is_help=True)
app.add_typer(grafana_app, name="grafana")


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
