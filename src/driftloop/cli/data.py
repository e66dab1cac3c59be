"""``driftloop ingest``: a batch into lakeFS through its own branch."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer

from driftloop.cli.root import (
    JsonOption,
    ModelOption,
    app,
    console,
    fail,
    flow_run_page,
    prefect_api_url,
    print_json,
    project_model,
    running_flows,
    settings_with_prefect,
)


@app.command()
def ingest(
    model: ModelOption = "",
    source: Annotated[
        str,
        typer.Option(
            help="A .csv/.parquet file or folder, or builtin[:?rows=N&seed=S&scenario=...] for "
            "the examples (default: the model's source in driftloop.yaml)"
        ),
    ] = "",
    batch_id: Annotated[
        str | None, typer.Option(help="Batch id (default: derived from the rows' content)")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Land one batch in lakeFS through an isolated branch; merge into main only if it is valid."""
    settings = settings_with_prefect()
    declared = project_model(settings, model)
    source = source or declared.source or ""
    if not source:
        fail(f"no --source given, and model {declared.name} declares no source in driftloop.yaml")
    if not as_json:
        console.print(
            f"ingesting a batch of [bold]{declared.dataset}[/] (model {declared.name}) from "
            f"{source} into lakeFS {settings.lakefs.endpoint} "
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
            run = ingest_batch(declared.name, source, batch_id)
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
