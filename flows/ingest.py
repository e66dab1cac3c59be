"""The ingest flow: land one batch in lakeFS through an isolated branch (write, audit, publish)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed, State
from pyarrow import ArrowException

from driftloop.datasets.sources import SourceError, load_batch
from driftloop.datasets.spec import DatasetSpec
from driftloop.datasets.validation import Audit, ValidationReport, validate_batch
from driftloop.events import INGEST_MERGED, INGEST_REJECTED, Event, model_resource
from driftloop.ingestion import (
    BatchRejected,
    IngestOutcome,
    batch_path,
    check_attachments,
    check_batch_id,
    commit_metadata,
    derive_batch_id,
    ingest_branch,
    isolated_branch,
    landed_commit,
    record_rejection,
    to_parquet,
)
from driftloop.lakefs_client import LakeFSClient
from flows.common import IO_RETRIES, emit, lakefs, project_model, run_url, settings


@task(cache_policy=NO_CACHE)
def read_source(source: str, spec: DatasetSpec) -> pd.DataFrame:
    """Read the batch from its source."""
    return load_batch(source, spec)


@task(cache_policy=NO_CACHE)
def audit(frame: pd.DataFrame, spec: DatasetSpec) -> Audit:
    """Run every validation check on the batch."""
    return validate_batch(frame, spec)


@task(cache_policy=NO_CACHE)
def encode(frame: pd.DataFrame) -> bytes | None:
    """Encode the batch as it came to Parquet, alongside the audit; None if its types are mixed."""
    try:
        return to_parquet(frame)
    except (ArrowException, ValueError, TypeError):
        return None


@task(**IO_RETRIES)
def write(client: LakeFSClient, branch: str, path: str, data: bytes) -> int:
    """Upload the batch's Parquet bytes to its branch; returns the bytes written."""
    client.upload(branch, path, data)
    return len(data)


@task(**IO_RETRIES)
def commit(client: LakeFSClient, branch: str, message: str, metadata: dict[str, str]) -> str:
    """Commit the branch with the batch's metadata."""
    return client.commit(branch, message, metadata).id


@task(cache_policy=NO_CACHE)
def publish(client: LakeFSClient, branch: str, main: str, metadata: dict[str, str]) -> str:
    """Merge the batch branch into main; returns the merge commit id."""
    return client.merge(
        branch, main, message=f"ingest {metadata['driftloop.batch_id']}", metadata=metadata
    )


@flow(name="ingest")
def ingest(
    model: str | None = None,
    source: str | None = None,
    batch_id: str | None = None,
    attachments: dict[str, str] | None = None,
) -> IngestOutcome | State:
    """Land one batch in lakeFS on branch ingest-<batch_id>; merge into main only if it is valid.

    Args:
        model: the project's model whose dataset the batch belongs to (default: the project's
            only model).
        source: a file (CSV, Parquet), or builtin[:?rows=N&seed=S&scenario=...]; default: the
            model's ``source`` in the project.
        batch_id: the batch's name; default: derived from its content.
        attachments: files that land with the batch, in the same commit: lakeFS path under
            ``datasets/<dataset>/`` -> local file. Only ``feedback/<batch_id>.json`` and
            ``quarantine/<batch_id>.parquet`` (what a retrain records) are accepted.
    """
    logger = get_run_logger()
    config = settings()
    declared = project_model(config, model)
    spec, dataset = declared.spec, declared.dataset
    source = source or declared.source
    if source is None:
        raise SourceError(f"no source given, and model {declared.name} declares none")
    client = lakefs(config)
    main = config.lakefs.default_branch
    client.ensure_repository(config.lakefs.storage_namespace, main)

    frame = read_source(source, spec)
    batch_id = check_batch_id(batch_id or derive_batch_id(frame, dataset))
    extra = check_attachments(attachments or {}, dataset, batch_id)
    path = batch_path(dataset, batch_id)
    logger.info("batch %s: %d rows from %s", batch_id, len(frame), source)

    if landed := landed_commit(client, main, dataset, batch_id):
        # A branch may be left by a crash between the merge and its deletion.
        client.delete_branch(ingest_branch(batch_id), missing_ok=True)
        logger.info("batch %s is already on %s (commit %s): nothing to do", batch_id, main, landed)
        return IngestOutcome(
            batch_id, dataset, "already_ingested", path, len(frame), landed, f"already on {main}"
        )

    metadata = commit_metadata(spec, batch_id, len(frame), source, run_url())
    try:
        with isolated_branch(client, ingest_branch(batch_id), main) as branch:
            # Most batches arrive in canonical form already: encode them while the audit runs.
            encoded = encode.submit(frame)
            checked = audit(frame, spec)
            report = checked.report
            create_markdown_artifact(
                report.to_markdown(f"Validation of batch {batch_id}"),
                key=f"validation-{batch_id}".lower().replace("_", "-"),
                description=f"{dataset} batch {batch_id}: {verdict(report)}",
            )
            if not report.passed:
                encoded.wait()
                write(client, branch, path, to_parquet(frame.astype(str)))
                commit_id = record_rejection(client, branch, spec, batch_id, report, metadata)
                emit(
                    _rejected_event(declared.name, spec, batch_id, branch, commit_id, report),
                    config,
                )
                raise BatchRejected(batch_id, branch, report)  # leaves the branch in place
            as_given = encoded.result() if checked.as_given else None
            size = write(client, branch, path, as_given or to_parquet(checked.canonical))
            logger.info(
                "wrote %s (%d bytes) on branch %s; %s", path, size, branch, report.summary()
            )
            for target, local in extra.items():
                write(client, branch, target, Path(local).read_bytes())
            commit(client, branch, f"batch {batch_id} of {dataset}", metadata)
            merged = publish(client, branch, main, metadata)
    except BatchRejected as rejected:
        # A rejection is an outcome, not a crash: the run fails with the report as its message
        # (in-process callers get BatchRejected raised), without a traceback in the logs.
        logger.error("%s", rejected)
        return Failed(message=str(rejected), data=rejected)
    logger.info("batch %s merged into %s as commit %s", batch_id, main, merged)
    emit(_merged_event(declared.name, spec, batch_id, merged, len(frame)), config)
    return IngestOutcome(batch_id, dataset, "merged", path, len(frame), merged)


@dataclass(frozen=True)
class IngestRun:
    """An ingest flow run made in this process: what happened and which run it was."""

    outcome: IngestOutcome
    flow_run_id: str


class RunFailed(Exception):
    """A flow run made in this process failed: ``cause`` is why, ``flow_run_id`` which run."""

    def __init__(self, cause: BaseException, flow_run_id: str) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.flow_run_id = flow_run_id


def ingest_batch(model: str | None, source: str | None, batch_id: str | None = None) -> IngestRun:
    """Run the ingest flow in this process.

    Raises:
        RunFailed: the run failed; its ``cause`` is BatchRejected when the batch failed its
            checks (main unchanged), else what stopped it (a source that cannot be read, ...).
    """
    state = ingest(model, source, batch_id, return_state=True)
    run_id = str(state.state_details.flow_run_id)
    try:
        return IngestRun(state.result(), run_id)
    except Exception as cause:
        raise RunFailed(cause, run_id) from cause


def verdict(report: ValidationReport) -> str:
    return "passed" if report.passed else "rejected"


def dataset_resource(spec: DatasetSpec) -> dict[str, str]:
    """The dataset, as a related resource of an ingest event."""
    return {
        "prefect.resource.id": f"driftloop.dataset.{spec.name}",
        "prefect.resource.role": "dataset",
    }


def _merged_event(model: str, spec: DatasetSpec, batch_id: str, commit_id: str, rows: int) -> Event:
    return Event(
        INGEST_MERGED,
        model_resource(model),
        payload={
            "dataset": spec.name,
            "batch_id": batch_id,
            "data_commit": commit_id,
            "rows": rows,
        },
        related=(dataset_resource(spec),),
    )


def _rejected_event(
    model: str,
    spec: DatasetSpec,
    batch_id: str,
    branch: str,
    commit_id: str,
    report: ValidationReport,
) -> Event:
    return Event(
        INGEST_REJECTED,
        model_resource(model),
        payload={
            "dataset": spec.name,
            "batch_id": batch_id,
            "branch": branch,
            "branch_commit": commit_id,
            "rows": report.rows,
            "failed_checks": [check.name for check in report.failures],
            "details": {check.name: check.detail for check in report.failures},
        },
        related=(dataset_resource(spec),),
    )
