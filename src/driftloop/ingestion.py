"""Write-audit-publish of one batch: an isolated lakeFS branch, checks, then a merge into main.

A batch lands at ``datasets/<dataset>/batches/<batch_id>.parquet`` on branch ``ingest-<batch_id>``
made from main. Only when validation passes is it committed (with the metadata DESIGN lists) and
merged into main; the branch is then deleted. A rejected batch never reaches main, and its branch
stays for inspection with the batch and the validation report committed on it.

Re-ingesting a batch id already on main is a no-op, which also makes a rerun after a crash safe:
whatever step the crash interrupted, the rerun either finds the batch on main or starts the
branch afresh.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from driftloop.datasets.spec import DatasetSpec
from driftloop.datasets.validation import ValidationReport
from driftloop.lakefs_client import LakeFSClient, NotFoundError
from driftloop.registry import BatchLineage

BATCH_ID = re.compile(r"^\w[-\w]{0,100}$")
META_BATCH_ID = "driftloop.batch_id"
META_DATASET = "driftloop.dataset"
META_ROWS = "driftloop.rows"
META_SCHEMA = "driftloop.schema_sha256"
META_SOURCE = "driftloop.source"
META_RUN_URL = "::lakefs::Prefect::url[url:ui]"
META_VALIDATION = "driftloop.validation"

Status = Literal["merged", "already_ingested", "rejected"]


class BatchRejected(Exception):
    """A batch failed validation; the message lists every failed check."""

    def __init__(self, batch_id: str, branch: str, report: ValidationReport) -> None:
        super().__init__(
            f"batch {batch_id} rejected; main is unchanged, branch {branch!r} kept for "
            f"inspection.\n{report.summary()}"
        )
        self.batch_id = batch_id
        self.branch = branch
        self.report = report


@dataclass(frozen=True)
class IngestOutcome:
    """What happened to one batch."""

    batch_id: str
    dataset: str
    status: Status
    path: str
    rows: int
    commit_id: str | None = None
    detail: str = ""


def batch_path(dataset: str, batch_id: str) -> str:
    return f"datasets/{dataset}/batches/{batch_id}.parquet"


def batch_prefix(dataset: str) -> str:
    return f"datasets/{dataset}/batches/"


def report_path(dataset: str, batch_id: str) -> str:
    """Where a rejected batch's validation report goes, on its own branch only."""
    return f"datasets/{dataset}/rejected/{batch_id}.validation.json"


def ingest_branch(batch_id: str) -> str:
    return f"ingest-{batch_id}"


def check_batch_id(batch_id: str) -> str:
    """``batch_id`` if it can name a lakeFS branch and a file; ValueError otherwise."""
    if not BATCH_ID.match(batch_id):
        raise ValueError(
            f"batch id {batch_id!r} must be letters, digits, '_' and '-' (lakeFS branch rules)"
        )
    return batch_id


ATTACHMENTS = ("feedback/{batch_id}.json", "quarantine/{batch_id}.parquet")


def check_attachments(attachments: dict[str, str], dataset: str, batch_id: str) -> dict[str, str]:
    """``attachments`` (path under ``datasets/<dataset>/`` -> local file) as lakeFS path -> local
    file; ValueError for a path other than the few a batch may carry, or a file that is missing.
    """
    allowed = {pattern.format(batch_id=batch_id) for pattern in ATTACHMENTS}
    found = {}
    for name, local in attachments.items():
        if name not in allowed:
            raise ValueError(
                f"attachment {name!r} is not one a batch may carry ({', '.join(sorted(allowed))})"
            )
        if not Path(local).is_file():
            raise ValueError(f"attachment {name!r}: no file {local}")
        found[f"datasets/{dataset}/{name}"] = local
    return found


def derive_batch_id(frame: pd.DataFrame, dataset: str) -> str:
    """A batch id from the rows' content: the same rows always get the same id."""
    digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    digest.update(",".join(map(str, frame.columns)).encode())
    return f"{dataset}-{digest.hexdigest()[:16]}"


def to_parquet(frame: pd.DataFrame) -> bytes:
    """The batch as Parquet bytes (pyarrow, snappy)."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, engine="pyarrow", compression="snappy", index=False)
    return buffer.getvalue()


def commit_metadata(
    spec: DatasetSpec, batch_id: str, rows: int, source: str, run_url: str | None
) -> dict[str, str]:
    """The commit metadata DESIGN fixes for an ingested batch."""
    metadata = {
        META_BATCH_ID: batch_id,
        META_DATASET: spec.name,
        META_ROWS: str(rows),
        META_SCHEMA: spec.schema_sha256(),
        META_SOURCE: source,
    }
    if run_url:
        metadata[META_RUN_URL] = run_url
    return metadata


def landed_commit(client: LakeFSClient, branch: str, dataset: str, batch_id: str) -> str | None:
    """The commit id of ``branch`` when the batch is already there, else None."""
    head = client.branch_head(branch)
    try:
        client.stat(head, batch_path(dataset, batch_id))
    except NotFoundError:
        return None
    return head


@contextmanager
def isolated_branch(client: LakeFSClient, name: str, source: str) -> Iterator[str]:
    """A fresh branch ``name`` from ``source``, deleted when the block succeeds.

    A branch of that name left by an earlier attempt is replaced. When the block raises, the
    branch stays, so what went wrong can be inspected in lakeFS.
    """
    client.delete_branch(name, missing_ok=True)
    client.create_branch(name, source)
    yield name
    client.delete_branch(name, missing_ok=True)


def record_rejection(
    client: LakeFSClient,
    branch: str,
    spec: DatasetSpec,
    batch_id: str,
    report: ValidationReport,
    metadata: dict[str, str],
) -> str:
    """Commit the rejected batch and its report on its own branch; returns the commit id."""
    client.upload(
        branch,
        report_path(spec.name, batch_id),
        json.dumps(report.to_dict(), indent=2).encode(),
        content_type="application/json",
    )
    commit = client.commit(
        branch,
        f"rejected batch {batch_id}: {len(report.failures)} checks failed",
        {**metadata, META_VALIDATION: "failed"},
    )
    return commit.id


def landed_batches(client: LakeFSClient, ref: str, dataset: str) -> list[str]:
    """The batch ids of ``dataset`` present at ``ref``, in path order."""
    prefix = batch_prefix(dataset)
    return [
        info.path[len(prefix) : -len(".parquet")]
        for info in client.list_objects(ref, prefix)
        if info.path.endswith(".parquet")
    ]


def read_dataset(client: LakeFSClient, commit_id: str, dataset: str) -> pd.DataFrame:
    """Every batch of ``dataset`` at ``commit_id``, concatenated in batch-id order."""
    frames = [
        pd.read_parquet(io.BytesIO(client.download(commit_id, batch_path(dataset, batch_id))))
        for batch_id in landed_batches(client, commit_id, dataset)
    ]
    if not frames:
        raise NotFoundError(f"no batches of {dataset} at {commit_id}", 404)
    return pd.concat(frames, ignore_index=True)


def batch_lineage(client: LakeFSClient, commit_id: str, dataset: str) -> list[BatchLineage]:
    """The batches of ``dataset`` at ``commit_id``, oldest first, with the merges that landed them.

    Read from the commit log: every ingestion merge carries the batch id, row count and the URL
    of its Prefect flow run in its metadata.
    """
    present = set(landed_batches(client, commit_id, dataset))
    found: dict[str, BatchLineage] = {}
    for commit in client.log(commit_id, amount=10_000, first_parent=True):
        metadata = commit.metadata
        batch_id = metadata.get(META_BATCH_ID)
        if (
            batch_id in present
            and batch_id not in found
            and metadata.get(META_DATASET) == dataset
            and len(commit.parents) == 2
        ):
            found[batch_id] = BatchLineage(
                batch_id=batch_id,
                merge_commit=commit.id,
                rows=int(metadata.get(META_ROWS, 0)),
                run_url=metadata.get(META_RUN_URL),
            )
    missing = sorted(present - found.keys())
    if missing:
        raise NotFoundError(f"no ingestion merge found for batches {missing} at {commit_id}", 404)
    return list(reversed(found.values()))


def load_training_frame(
    client: LakeFSClient,
    commit_id: str,
    dataset: str,
    lineage: list[BatchLineage],
    id_column: str | None = None,
) -> tuple[pd.DataFrame, pd.Series]:
    """Every batch at ``commit_id`` in landing order, and a mask of the newest batch's rows.

    With an ``id_column``, a record that more than one batch carries is trained on once (its
    latest landing): batches are immutable, so one that landed twice stays on main, but
    training never sees a row twice.
    """
    frames = [
        pd.read_parquet(io.BytesIO(client.download(commit_id, batch_path(dataset, b.batch_id))))
        for b in lineage
    ]
    if not frames:
        raise NotFoundError(f"no batches of {dataset} at {commit_id}", 404)
    frame = pd.concat(frames, ignore_index=True)
    newest = pd.Series(False, index=frame.index)
    newest.iloc[len(frame) - len(frames[-1]) :] = True
    if id_column is not None and id_column in frame.columns:
        repeated = frame[id_column].duplicated(keep="last")
        if repeated.any():
            frame = frame[~repeated].reset_index(drop=True)
            newest = newest[~repeated].reset_index(drop=True)
    return frame, newest
