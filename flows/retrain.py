"""The retrain flow: labelled production traffic → a new batch → a new model, if it is better.

Started by the Prefect automation on ``driftloop.drift.detected`` or ``driftloop.alert.firing``
(see prefect.yaml: the event's payload arrives as the parameters), or by hand. Each step is its
own task or subflow in the Prefect UI:

1. export: predictions of the production model's name that got their true label, made after
   the production model's data commit, as a batch in the dataset's schema;
2. ingest: that batch through the ingest flow (isolated branch, validation, merge);
3. train: on the new commit, judged by the gate against production; a winner is packaged as a
   Bento and promoted, and the inference service swaps it in by itself.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, Failed, State

from driftloop.datasets.spec import DatasetSpec, load_spec
from driftloop.feedback import feedback_batch, feedback_batch_id
from driftloop.prediction_log import PredictionLog
from driftloop.registry import ModelRegistry
from flows.common import lakefs, settings
from flows.ingest import ingest
from flows.train import train

IO_RETRIES = {"retries": 3, "retry_delay_seconds": [2, 5, 15], "cache_policy": NO_CACHE}


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


@task(**IO_RETRIES)
def export_feedback(prediction_log_url: str, spec: DatasetSpec, since: datetime) -> pd.DataFrame:
    """Labelled predictions made after ``since``, as a batch of the dataset."""
    log = PredictionLog(prediction_log_url)
    try:
        return feedback_batch(log.labelled(spec.model_name, since), spec)
    finally:
        log.dispose()


@flow(name="retrain")
def retrain(
    dataset: str = "transactions",
    reason: str = "manual",
    model_version: str | None = None,
    drift_share: float | None = None,
    report: str | None = None,
    alertname: str | None = None,
    min_labelled_rows: int = 200,
) -> RetrainOutcome | State:
    """Ingest the labelled production traffic since the production model's data, retrain, gate,
    package and promote.

    Args:
        dataset: the dataset (and so the model) to retrain.
        reason: what started the run (the event name, or "manual").
        model_version: the production version the triggering event was about.
        drift_share: the drifted share of features the monitor saw, when drift started it.
        report: where the Evidently report of that drift is (lakefs://...).
        alertname: the Prometheus alert that started it, when an alert did.
        min_labelled_rows: fewer labelled rows than this: nothing to learn from yet.
    """
    logger = get_run_logger()
    config = settings()
    spec = load_spec(dataset)
    registry = ModelRegistry.from_settings(config)
    production = registry.require_production(spec.model_name, "retrain")
    logger.info(
        "retraining %s (production %s) because of %s%s%s%s",
        spec.model_name,
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

    data_commit = lakefs(config).get_commit(production.data_commit)
    since = datetime.fromtimestamp(data_commit.creation_date, UTC)
    batch = export_feedback(config.prediction_log_url, spec, since)
    if len(batch) < min_labelled_rows:
        message = (
            f"only {len(batch)} labelled predictions since {since:%Y-%m-%d %H:%M:%S} UTC "
            f"(at least {min_labelled_rows} wanted): nothing retrained"
        )
        logger.warning(message)
        return Completed(message=message, data={"retrained": False, "labelled_rows": len(batch)})
    batch_id = feedback_batch_id(batch, spec)
    logger.info("%d labelled predictions since %s become batch %s", len(batch), since, batch_id)

    with tempfile.TemporaryDirectory(prefix="driftloop-feedback-") as folder:
        source = Path(folder) / f"{batch_id}.parquet"
        batch.to_parquet(source, index=False)
        ingested = ingest(dataset, str(source), batch_id, return_state=True)
    if ingested.is_failed():  # the batch failed validation: main is unchanged, nothing trained
        return Failed(message=f"feedback batch {batch_id} rejected: {ingested.message}")
    landed = ingested.result()
    trained = train(
        dataset,
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
    )
