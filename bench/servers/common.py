"""What every baseline server does per request: the record as a one-row frame, predict_proba."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd


def load_model() -> tuple[Any, list[dict[str, Any]]]:
    """The model named by BENCH_MODEL_TAG from the BentoML store, and its feature list."""
    import bentoml

    model = bentoml.models.get(os.environ["BENCH_MODEL_TAG"])
    return bentoml.sklearn.load_model(model), list(model.info.metadata["spec"]["features"])


def score(pipeline: Any, features: list[dict[str, Any]], record: dict[str, Any]) -> float:
    columns = {
        f["name"]: np.array(
            [record[f["name"]]], dtype=object if f["type"] == "categorical" else np.float64
        )
        for f in features
    }
    return float(pipeline.predict_proba(pd.DataFrame(columns))[0, 1])
