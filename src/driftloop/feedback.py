"""Labelled production traffic as a training batch of the dataset.

The prediction log holds what the model saw (the features) and, once feedback came, what was
true. :func:`feedback_batch` turns those rows into a batch in the dataset's own schema (the
prediction id as the id column, the prediction time as the event time, the true label as the
target), so it lands through the same isolated-branch ingestion and validation as any batch.

:func:`split_feedback` decides what a retrain lands: predictions whose ids already landed on main
(an earlier retrain whose model the gate refused leaves production's data commit where it was,
so the same labels come back) are left out, and rows the ingestion checks would refuse on their
own (an out-of-range value /predict answered, as it should) are set aside in a quarantine file
with the reason instead of failing the whole batch. Which prediction ids a batch carried, and
which it quarantined, is written beside it in a manifest, ``datasets/<dataset>/feedback/
<batch_id>.json``, merged in the same commit as the batch: :func:`landed_prediction_ids` reads
the manifests back, so the bookkeeping is as atomic as the batch itself and needs no id column.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pandas as pd

from driftloop.datasets.spec import DatasetSpec
from driftloop.datasets.validation import row_problems
from driftloop.lakefs_client import LakeFSClient

QUARANTINE_REASON = "quarantine_reason"
PREDICTION_ID = "prediction_id"


def manifest_path(dataset: str, batch_id: str) -> str:
    """Where the manifest of a feedback batch lands: the prediction ids it carried."""
    return f"datasets/{dataset}/feedback/{batch_id}.json"


def quarantine_path(dataset: str, batch_id: str) -> str:
    """Where the rows a feedback batch set aside land, each with its reason."""
    return f"datasets/{dataset}/quarantine/{batch_id}.parquet"


def feedback_batch(labelled: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """``labelled`` (from ``PredictionLog.labelled``) in ``spec``'s columns and order."""
    if labelled.empty:
        return pd.DataFrame(columns=spec.columns)
    batch = labelled[spec.feature_names].copy()
    truth = labelled["true_label"]
    if spec.target_type == "numeric":
        batch[spec.target] = truth.astype("float64")
    elif spec.target_type == "categorical":  # the log keeps the class's index
        classes = list(spec.classes or ())
        batch[spec.target] = [classes[int(code)] for code in truth]
    else:
        batch[spec.target] = truth.astype(int)
    if spec.id_column:
        batch[spec.id_column] = labelled[PREDICTION_ID].astype(str)
    if spec.time_column:
        batch[spec.time_column] = pd.to_datetime(labelled["created_at"], utc=True)
    return batch[spec.columns].reset_index(drop=True)


def feedback_batch_id(prediction_ids: list[str]) -> str:
    """A batch id that names these predictions: the same ones always get the same id."""
    digest = hashlib.sha256("\n".join(sorted(prediction_ids)).encode()).hexdigest()[:16]
    return f"feedback-{digest}"


@dataclass(frozen=True)
class FeedbackExport:
    """What one retrain takes from the prediction log."""

    batch: pd.DataFrame
    """The rows to land, in the dataset's schema."""
    prediction_ids: list[str]
    """The prediction each row of ``batch`` came from."""
    quarantined: pd.DataFrame
    """Rows set aside: the dataset's columns, ``prediction_id`` and ``quarantine_reason``."""
    already_landed: int
    """Labelled predictions left out because an earlier batch on main carried them."""

    @property
    def batch_id(self) -> str:
        return feedback_batch_id(self.prediction_ids + self.quarantined[PREDICTION_ID].tolist())

    def manifest(self) -> bytes:
        return json.dumps(
            {
                "batch_id": self.batch_id,
                "prediction_ids": self.prediction_ids,
                "quarantined_prediction_ids": self.quarantined[PREDICTION_ID].tolist(),
            }
        ).encode()

    def quarantine_summary(self) -> dict[str, int]:
        """How many rows were set aside for each reason."""
        reasons = self.quarantined[QUARANTINE_REASON].str.split("; ").explode()
        return {str(k): int(v) for k, v in reasons.value_counts().items()}


def split_feedback(labelled: pd.DataFrame, spec: DatasetSpec, landed: set[str]) -> FeedbackExport:
    """The labelled predictions not on main yet, split into rows to land and rows to set aside."""
    fresh = labelled[~labelled[PREDICTION_ID].astype(str).isin(landed)]
    batch = feedback_batch(fresh, spec)
    ids = fresh[PREDICTION_ID].astype(str).reset_index(drop=True)
    reasons = row_problems(batch, spec)
    refused = reasons != ""
    quarantined = batch[refused].assign(
        **{PREDICTION_ID: ids[refused], QUARANTINE_REASON: reasons[refused]}
    )
    return FeedbackExport(
        batch=batch[~refused].reset_index(drop=True),
        prediction_ids=ids[~refused].tolist(),
        quarantined=quarantined.reset_index(drop=True),
        already_landed=len(labelled) - len(fresh),
    )


def landed_prediction_ids(client: LakeFSClient, ref: str, dataset: str) -> set[str]:
    """Every prediction id a feedback batch at ``ref`` carried or set aside."""
    found: set[str] = set()
    for info in client.list_objects(ref, f"datasets/{dataset}/feedback/"):
        if info.path.endswith(".json"):
            manifest = json.loads(client.download(ref, info.path))
            found.update(manifest["prediction_ids"])
            found.update(manifest["quarantined_prediction_ids"])
    return found
