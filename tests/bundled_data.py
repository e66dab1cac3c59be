"""Data driftloop does not ship, for tests of the other tasks: scikit-learn's bundled wine
(multiclass, 178 rows) and diabetes (regression, 442 rows) data, made by examples/make_data.py
(what the README has a user run), and written as projects a user would write.
"""

from __future__ import annotations

import importlib.util
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from driftloop.datasets.spec import DatasetSpec


def _examples_module() -> Any:
    """examples/make_data.py, the script the README has users run (not a package)."""
    path = Path(__file__).resolve().parents[1] / "examples" / "make_data.py"
    spec = importlib.util.spec_from_file_location("driftloop_example_data", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_EXAMPLES = _examples_module()
wine_frame: Callable[..., pd.DataFrame] = _EXAMPLES.wine_frame
diabetes_frame: Callable[..., pd.DataFrame] = _EXAMPLES.diabetes_frame
drifted_wine: Callable[[int, int], pd.DataFrame] = _EXAMPLES.drifted_wine
drifted_diabetes: Callable[[int, int], pd.DataFrame] = _EXAMPLES.drifted_diabetes


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
