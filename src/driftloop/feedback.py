"""Labelled production traffic as a training batch of the dataset.

The prediction log holds what the model saw (the features) and, once feedback came, what was
true. :func:`feedback_batch` turns those rows into a batch in the dataset's own schema (the
prediction id as the id column, the prediction time as the event time, the true label as the
target), so it lands through the same isolated-branch ingestion and validation as any batch.
"""

from __future__ import annotations

import hashlib

import pandas as pd

from driftloop.datasets.spec import DatasetSpec


def feedback_batch(labelled: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """``labelled`` (from ``PredictionLog.labelled``) in ``spec``'s columns and order."""
    if labelled.empty:
        return pd.DataFrame(columns=spec.columns)
    batch = labelled[spec.feature_names].copy()
    batch[spec.target] = labelled["true_label"].astype(int)
    if spec.id_column:
        batch[spec.id_column] = labelled["prediction_id"].astype(str)
    if spec.time_column:
        batch[spec.time_column] = pd.to_datetime(labelled["created_at"], utc=True)
    return batch[spec.columns].reset_index(drop=True)


def feedback_batch_id(batch: pd.DataFrame, spec: DatasetSpec) -> str:
    """A batch id that names these rows: the same labelled rows always get the same id."""
    ids = batch[spec.id_column] if spec.id_column else batch.index.astype(str)
    digest = hashlib.sha256("\n".join(sorted(map(str, ids))).encode()).hexdigest()[:16]
    return f"feedback-{digest}"
