"""The inference service: one BentoML service answering with driftloop's production model.

The model is chosen by DRIFTLOOP_MODEL_TAG (``<dataset>-classifier:<version>``), read when the
service class is defined, as BentoML's model reference requires; ``driftloop package`` sets it
to the production version when it builds the Bento. The service is self-contained: the feature
list and types come from the model's own metadata, so the Bento needs no driftloop package.
"""

from __future__ import annotations

import os
from typing import Any

import bentoml
from bentoml.models import BentoModel

with bentoml.importing():
    import numpy as np
    import pandas as pd

MODEL_TAG = os.environ.get("DRIFTLOOP_MODEL_TAG", "transactions-classifier:latest")


@bentoml.service(name="driftloop-inference", traffic={"timeout": 30})
class InferenceService:
    """Scores records with the model the Bento was built with."""

    model_ref = BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        self.model = bentoml.sklearn.load_model(self.model_ref)
        info = self.model_ref.info
        self.version = str(info.tag.version)
        self.data_commit = info.labels.get("data_commit", "")
        self.features: list[dict[str, Any]] = list(info.metadata["spec"]["features"])
        self.threshold = float(info.metadata["metrics"]["threshold"])

    @bentoml.api
    def predict(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Fraud (or malignancy) score, label and model version for each record."""
        scores = self.model.predict_proba(self._frame(records))[:, 1]
        return [
            {
                "score": float(score),
                "label": int(score >= self.threshold),
                "model_version": self.version,
            }
            for score in scores
        ]

    def _frame(self, records: list[dict[str, Any]]) -> pd.DataFrame:
        columns: dict[str, Any] = {}
        for feature in self.features:
            values = [record.get(feature["name"]) for record in records]
            if feature["type"] == "categorical":
                columns[feature["name"]] = pd.Series(values, dtype=object)
            else:
                columns[feature["name"]] = pd.Series(values, dtype=np.float64)
        return pd.DataFrame(columns)
