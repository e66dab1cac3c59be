"""Data driftloop does not ship, for tests of the other tasks: scikit-learn's bundled wine
(multiclass, 178 rows) and diabetes (regression, 442 rows) data, as projects a user would write.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from driftloop.datasets.spec import DatasetSpec


def snake(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def wine_frame(rows: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Wine: 13 measurements, cultivar ``class_0``/``class_1``/``class_2`` as ``cultivar``;
    ``rows`` beyond 178 are resampled with a little noise."""
    from sklearn.datasets import load_wine

    bundle = load_wine(as_frame=True)
    frame = bundle.data.rename(columns=snake)
    frame["cultivar"] = [f"class_{code}" for code in bundle.target]
    return _resized(frame, rows, seed, target="cultivar")


def diabetes_frame(rows: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Diabetes: 10 scaled measurements, disease progression after a year as ``progression``."""
    from sklearn.datasets import load_diabetes

    bundle = load_diabetes(as_frame=True)
    frame = bundle.data.rename(columns=snake)
    frame["progression"] = bundle.target.astype("float64")
    return _resized(frame, rows, seed, target="progression")


def _resized(frame: pd.DataFrame, rows: int | None, seed: int, target: str) -> pd.DataFrame:
    if rows is None:
        return frame
    rng = np.random.default_rng(seed)
    picked = frame.sample(n=rows, replace=rows > len(frame), random_state=seed)
    picked = picked.reset_index(drop=True)
    features = [c for c in picked.columns if c != target]
    noise = rng.normal(0, 0.02, size=(rows, len(features))) * picked[features].std().to_numpy()
    picked[features] = picked[features].to_numpy() + noise
    return picked


def spec_of(frame: pd.DataFrame, name: str, target: str) -> dict[str, object]:
    """A spec a user would write for ``frame``: numeric features with widened ranges."""
    features = []
    for column in frame.columns:
        if column == target:
            continue
        low, high = float(frame[column].min()), float(frame[column].max())
        margin = (high - low) * 2
        features.append(
            {"name": column, "type": "numeric", "minimum": low - margin, "maximum": high + margin}
        )
    spec: dict[str, object] = {"name": name, "target": target, "min_rows": 20}
    if frame[target].dtype == object:
        spec |= {"target_type": "categorical", "classes": sorted(frame[target].unique())}
    else:
        spec |= {"target_type": "numeric"}
    return {**spec, "features": features}


def write_project(folder: Path, models: dict[str, tuple[pd.DataFrame, str, str]]) -> Path:
    """A project in ``folder``: per model name, (data, dataset name, target) becomes
    ``<dataset>.yaml`` and ``data/<dataset>.csv``; returns its driftloop.yaml."""
    (folder / "data").mkdir(parents=True, exist_ok=True)
    declared = []
    for model, (frame, dataset, target) in models.items():
        (folder / f"{dataset}.yaml").write_text(yaml.safe_dump(spec_of(frame, dataset, target)))
        frame.to_csv(folder / "data" / f"{dataset}.csv", index=False)
        declared.append(
            {"name": model, "dataset": f"{dataset}.yaml", "source": f"data/{dataset}.csv"}
        )
    file = folder / "driftloop.yaml"
    file.write_text(
        textwrap.dedent("""\
            # Written by tests/bundled_data.py.
            """)
        + yaml.safe_dump({"models": declared}, sort_keys=False)
    )
    return file


def loaded_spec(frame: pd.DataFrame, name: str, target: str) -> DatasetSpec:
    return DatasetSpec.model_validate(spec_of(frame, name, target))
