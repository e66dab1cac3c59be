"""``driftloop ingest``: a batch into lakeFS through its own branch."""

from __future__ import annotations

from typing import Annotated

import typer

from driftloop.cli.root import app, console, fail, load_settings, require_prefect


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
