"""``driftloop ingest``: a batch into lakeFS through its own branch."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer

from driftloop.cli.root import (
    JsonOption,
    app,
    console,
    fail,
    flow_run_page,
    prefect_api_url,
    print_json,
    running_flows,
    settings_with_prefect,
)


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
    as_json: JsonOption = False,
) -> None:
    """Land one batch in lakeFS through an isolated branch; merge into main only if it is valid."""
    settings = settings_with_prefect()
    dataset = dataset or settings.dataset
    if not as_json:
        console.print(
            f"ingesting [bold]{dataset}[/] from {source} into lakeFS {settings.lakefs.endpoint} "
            f"(repository {settings.lakefs.repository}); Prefect at {prefect_api_url(settings)}",
            highlight=False,
            soft_wrap=True,
        )

    from driftloop.datasets.sources import SourceError
    from driftloop.ingestion import BatchRejected
    from driftloop.lakefs_client import LakeFSError
    from flows.ingest import RunFailed, ingest_batch

    with running_flows(settings):
        try:
            run = ingest_batch(dataset, source, batch_id)
        except RunFailed as failed:
            page = flow_run_page(settings, failed.flow_run_id)
            if isinstance(failed.cause, BatchRejected):
                fail(
                    f"{failed.cause}\nInspect the batch on lakeFS branch "
                    f"{failed.cause.branch!r}; the validation report is an artifact of the "
                    f"flow run: {page}",
                )
            if isinstance(failed.cause, SourceError | LakeFSError | ValueError):
                fail(f"{failed.cause}\nflow run: {page}")
            raise
    run_page = flow_run_page(settings, run.flow_run_id)
    outcome = run.outcome
    if as_json:
        print_json({**dataclasses.asdict(outcome), "flow_run_url": run_page})
        return
    for key, value in (
        ("status", outcome.status),
        ("batch_id", outcome.batch_id),
        ("rows", outcome.rows),
        ("path", outcome.path),
        ("commit_id", outcome.commit_id),
    ):
        console.print(f"{key:>10}  {value}", highlight=False, soft_wrap=True)
    console.print(f"{'flow run':>10}  {run_page}", highlight=False, soft_wrap=True)
