"""The retrain flow: labelled production traffic → a new batch → a new model, if it is better.

Started by the Prefect automation on ``driftloop.drift.detected``, ``driftloop.alert.firing``
or ``driftloop.performance.degraded`` (see prefect.yaml: the event's payload arrives as the
parameters), or by hand. Too few labels yet (a drop estimated before its labels): it waits for
them up to ``wait_for_labels_minutes``, saying how many there are. Each step is its
own task or subflow in the Prefect UI:

1. export: predictions of the production model's name that got their true label, made after
   the production model's data commit and not carried by a feedback batch on main already
   (a gate-rejected retrain lands its batch without moving production), as a batch in the
   dataset's schema; rows the ingestion checks would refuse on their own (a value /predict
   accepted outside the spec's range) are quarantined with their reason instead of failing it;
2. ingest: that batch through the ingest flow (isolated branch, validation, merge), with its
   manifest (the prediction ids it carries) and its quarantined rows in the same commit;
3. train: on the new commit, judged by the gate against production; a winner is packaged as a
   Bento and promoted, and the inference service swaps it in by itself.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed, Failed, State

from driftloop.feedback import (
    FeedbackExport,
    landed_prediction_ids,
    quarantine_path,
    split_feedback,
)
from driftloop.lakefs_client import LakeFSClient
from driftloop.prediction_log import PredictionLog
from driftloop.project import ProjectModel
from driftloop.registry import ModelRegistry
from flows.common import IO_RETRIES, lakefs, project_model, settings
from flows.ingest import ingest
from flows.train import train


@dataclass(frozen=True)
class RetrainOutcome:
    """A retrain that trained: the feedback batch it landed and what became of the new model."""

    reason: str
    labelled_rows: int
    batch_id: str
    data_commit: str
    previous_version: str
    version: str
    promoted: bool
    metrics: dict[str, float]
    reasons: list[str]
    quarantined_rows: int = 0
    quarantine_path: str | None = None
    already_landed: int = 0


@task(**IO_RETRIES)
def export_feedback(
    prediction_log_url: str, model: ProjectModel, since: datetime, landed: set[str]
) -> FeedbackExport:
    """Labelled predictions made after ``since`` and not in ``landed``, as a batch of the
    dataset, with the rows the checks would refuse set aside."""
    log = PredictionLog(prediction_log_url)
    try:
        return split_feedback(log.labelled(model.name, since), model.spec, landed)
    finally:
        log.dispose()


@task(**IO_RETRIES)
def landed_feedback(client: LakeFSClient, ref: str, dataset: str) -> set[str]:
    """The prediction ids the feedback batches at ``ref`` carried or set aside."""
    return landed_prediction_ids(client, ref, dataset)


@flow(name="retrain")
def retrain(
    model: str | None = None,
    reason: str = "manual",
    model_version: str | None = None,
    drift_share: float | None = None,
    report: str | None = None,
    alertname: str | None = None,
    min_labelled_rows: int = 200,
    wait_for_labels_minutes: float | None = None,
    label_poll_seconds: float = 30.0,
) -> RetrainOutcome | State:
    """Ingest the labelled production traffic since the production model's data, retrain, gate,
    package and promote.

    Args:
        model: the project's model to retrain (default: its only one); the automation passes
            the one its event is about.
        reason: what started the run (the event name, or "manual").
        model_version: the production version the triggering event was about.
        drift_share: the drifted share of features the monitor saw, when drift started it.
        report: where the Evidently report of that drift is (lakefs://...).
        alertname: the Prometheus alert that started it, when an alert did.
        min_labelled_rows: fewer labelled rows than this: nothing to learn from yet.
        wait_for_labels_minutes: with fewer, wait this long for them, looking again every
            ``label_poll_seconds`` and saying how many there are (labels come late: an
            estimated drop is declared before them). Default: a run an event started waits
            DRIFTLOOP_PREFECT__RETRAIN_LABEL_WAIT_MINUTES, a manual one not at all.
    """
    logger = get_run_logger()
    config = settings()
    declared = project_model(config, model)
    dataset = declared.dataset
    registry = ModelRegistry.from_settings(config)
    production = registry.require_production(declared.name, "retrain")
    logger.info(
        "retraining %s (production %s) because of %s%s%s%s",
        declared.name,
        production.version,
        reason,
        f"; drift share {drift_share:.2f}" if drift_share is not None else "",
        f"; report {report}" if report else "",
        f"; alert {alertname}" if alertname else "",
    )
    if model_version and model_version != production.version:
        logger.info(
            "the event was about %s; production is now %s", model_version, production.version
        )

    client = lakefs(config)
    data_commit = client.get_commit(production.data_commit)
    since = datetime.fromtimestamp(data_commit.creation_date, UTC)
    main = client.resolve(config.lakefs.default_branch)
    landed = landed_feedback(client, main, dataset)
    exported = export_feedback(config.prediction_log_url, declared, since, landed)
    if wait_for_labels_minutes is None:
        started_by_event = reason != "manual"
        wait_for_labels_minutes = (
            config.prefect.retrain_label_wait_minutes if started_by_event else 0.0
        )
    deadline = time.monotonic() + wait_for_labels_minutes * 60
    while len(exported.batch) < min_labelled_rows and time.monotonic() < deadline:
        left = deadline - time.monotonic()
        logger.info(
            "waiting for labels: %d of %d new labelled predictions since %s; looking again "
            "in %.0f s (for %.0f min more)",
            len(exported.batch),
            min_labelled_rows,
            f"{since:%Y-%m-%d %H:%M:%S} UTC",
            min(label_poll_seconds, left),
            left / 60,
        )
        time.sleep(max(0.0, min(label_poll_seconds, left)))
        exported = export_feedback(config.prediction_log_url, declared, since, landed)
    batch, quarantined = exported.batch, exported.quarantined
    if exported.already_landed:
        logger.info(
            "%d labelled predictions since %s are on main already (an earlier retrain's batch): "
            "left out",
            exported.already_landed,
            f"{since:%Y-%m-%d %H:%M:%S} UTC",
        )
    if len(quarantined):
        logger.warning(
            "%d labelled predictions quarantined (the ingestion checks refuse them): %s",
            len(quarantined),
            "; ".join(f"{reason}: {n}" for reason, n in exported.quarantine_summary().items()),
        )
    if len(batch) < min_labelled_rows:
        waited = (
            f" after waiting {wait_for_labels_minutes:g} min" if wait_for_labels_minutes else ""
        )
        message = (
            f"only {len(batch)} new labelled predictions since {since:%Y-%m-%d %H:%M:%S} UTC "
            f"(at least {min_labelled_rows} wanted){waited}: nothing retrained"
        )
        logger.warning(message)
        return Completed(message=message, data={"retrained": False, "labelled_rows": len(batch)})
    batch_id = exported.batch_id
    logger.info("%d labelled predictions since %s become batch %s", len(batch), since, batch_id)

    with tempfile.TemporaryDirectory(prefix="driftloop-feedback-") as folder:
        source = Path(folder) / f"{batch_id}.parquet"
        batch.to_parquet(source, index=False)
        attachments = {f"feedback/{batch_id}.json": str(Path(folder) / "manifest.json")}
        Path(folder, "manifest.json").write_bytes(exported.manifest())
        if len(quarantined):
            quarantined.to_parquet(Path(folder) / "quarantine.parquet", index=False)
            attachments[f"quarantine/{batch_id}.parquet"] = str(Path(folder) / "quarantine.parquet")
            create_markdown_artifact(
                quarantine_markdown(exported, batch_id, dataset),
                key=f"quarantine-{batch_id}".lower(),
                description=f"{len(quarantined)} feedback rows set aside from {batch_id}",
            )
        ingested = ingest(declared.name, str(source), batch_id, attachments, return_state=True)
    if ingested.is_failed():  # the batch failed validation: main is unchanged, nothing trained
        return Failed(message=f"feedback batch {batch_id} rejected: {ingested.message}")
    landed = ingested.result()
    trained = train(
        declared.name,
        ref=str(landed.commit_id),
        promote=True,
        package=True,
        judge_on="newest_batch",
        started_by="" if reason == "manual" else reason,
    )
    return RetrainOutcome(
        reason=reason,
        labelled_rows=len(batch),
        batch_id=batch_id,
        data_commit=str(landed.commit_id),
        previous_version=production.version,
        version=trained.version,
        promoted=trained.promoted,
        metrics=trained.metrics,
        reasons=trained.reasons,
        quarantined_rows=len(quarantined),
        quarantine_path=quarantine_path(dataset, batch_id) if len(quarantined) else None,
        already_landed=exported.already_landed,
    )


def quarantine_markdown(exported: FeedbackExport, batch_id: str, dataset: str) -> str:
    """The quarantined rows of a feedback batch, for a Prefect artifact."""
    lines = [
        f"# Quarantined feedback of batch {batch_id}",
        "",
        f"{len(exported.quarantined)} labelled predictions fail the ingestion checks on their "
        f"own and were set aside; the other {len(exported.batch)} landed. They are on main at "
        f"`{quarantine_path(dataset, batch_id)}`, each with its reason, and are not exported "
        "again.",
        "",
        "| reason | rows |",
        "|---|---|",
    ]
    lines += [f"| {reason} | {n} |" for reason, n in exported.quarantine_summary().items()]
    return "\n".join(lines) + "\n"
