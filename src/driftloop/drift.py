"""Drift of a window of live traffic against a model's training data, with Evidently 0.7.

:func:`compute_drift` is a pure function of (reference, current frame, dataset spec). Per
feature it runs the statistical test Evidently's DataDriftPreset would choose (Evidently's own
choice and implementation: normed Wasserstein or Jensen-Shannon above 1,000 reference rows,
Kolmogorov-Smirnov, chi-square or Z below) with Evidently's default threshold, so the scores are
the ones DataDriftPreset reports. What it skips is the rest of a Report run (correlations,
histograms, widgets), and the reference is cleaned once per model version
(:func:`prepare_reference`) instead of on every check. Prediction drift compares the model's
output on the window with its output on the reference (a binary model's scores and a regressor's
values as numbers, a multiclass model's classes as categories); on rows that have a true label,
the task's live metrics measure the model itself. :func:`render_report` makes Evidently's HTML
report, meant only for windows that were declared drifted.

Evidently is imported inside the functions: importing it takes seconds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from driftloop.datasets.spec import DatasetSpec

Kind = Literal["numerical", "categorical"]
SCORE = "score"  # the model's score in a window (and on the reference): a regressor's value
LABEL = "label"  # the class a multiclass model answered (its index in the spec's classes)
TRUE_LABEL = "true_label"  # the label feedback brought, where it did


@dataclass(frozen=True)
class FeatureDrift:
    """One column's drift: the test Evidently chose, its score and threshold, and the verdict."""

    feature: str
    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class Performance:
    """The model's quality on the labelled rows of a window: the task's live metrics
    (``driftloop.tasks.LIVE_METRICS``; one that cannot be measured on these rows, such as ROC
    AUC of a single class, is left out)."""

    rows: int
    metrics: dict[str, float]

    def get(self, name: str) -> float | None:
        return self.metrics.get(name)


@dataclass(frozen=True)
class DriftResult:
    """Drift of one window against a reference."""

    window_rows: int
    reference_rows: int
    features: tuple[FeatureDrift, ...]
    drifted_share: float
    share_threshold: float
    dataset_drift: bool
    prediction: FeatureDrift | None
    performance: Performance | None

    @property
    def drifted_features(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drifted_features": self.drifted_features}


@dataclass(frozen=True)
class Reference:
    """A model's training data prepared for drift checks: cleaned once, reused every window."""

    frame: pd.DataFrame  # the features (and scores) as given, for the HTML report
    columns: dict[str, pd.Series]  # per feature: finite, non-missing values
    kinds: dict[str, Kind]
    scores: pd.Series | None  # the model's predictions on it: scores, values or class indices

    @property
    def rows(self) -> int:
        return len(self.frame)


def feature_kind(spec: DatasetSpec, name: str) -> Kind:
    """How Evidently treats a feature: numbers are numerical; booleans and categories are not."""
    return "numerical" if spec.feature(name).type in ("numeric", "integer") else "categorical"


def _clean(column: pd.Series) -> pd.Series:
    # What Evidently does to each column before testing it.
    return column.replace([-np.inf, np.inf], np.nan).dropna()


def prediction_column(spec: DatasetSpec) -> tuple[str, Kind]:
    """What prediction drift compares, and how: a binary model's score and a regressor's value
    as numbers, a multiclass model's answered class as a category (the shares of classes)."""
    return (LABEL, "categorical") if spec.task == "multiclass" else (SCORE, "numerical")


def prepare_reference(
    frame: pd.DataFrame, spec: DatasetSpec, scores: np.ndarray | pd.Series | None = None
) -> Reference:
    """Clean the reference (training) frame once; ``scores`` are the model's predictions on it
    (what :func:`prediction_column` names: scores, values, or class indices)."""
    names = spec.feature_names
    missing = [name for name in names if name not in frame.columns]
    if missing:
        raise ValueError(f"reference frame lacks feature columns: {', '.join(missing)}")
    kept = frame[names].reset_index(drop=True)
    score_series = None
    if scores is not None:
        score_series = pd.Series(np.asarray(scores, dtype=float), name=SCORE)
        if len(score_series) != len(kept):
            raise ValueError(f"{len(score_series)} reference scores for {len(kept)} rows")
        kept = kept.assign(**{SCORE: score_series})
    columns = {name: _clean(kept[name]) for name in names}
    empty = [name for name, column in columns.items() if column.empty]
    if empty:
        raise ValueError(f"reference has no values in: {', '.join(empty)}")
    return Reference(
        frame=kept,
        columns=columns,
        kinds={name: feature_kind(spec, name) for name in names},
        scores=None if score_series is None else _clean(score_series),
    )


def column_drift(reference: pd.Series, current: pd.Series, kind: Kind, name: str) -> FeatureDrift:
    """Evidently's default test for a column of this kind and size, at its default threshold."""
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    column_type = ColumnType.Numerical if kind == "numerical" else ColumnType.Categorical
    test = get_stattest(reference, current, column_type, None)
    result = test(reference, current, column_type, None)
    return FeatureDrift(
        feature=name,
        method=test.name,
        score=float(result.drift_score),
        threshold=float(result.actual_threshold),
        drifted=bool(result.drifted),
    )


def performance(
    current: pd.DataFrame, threshold: float, task: str = "binary", classes: int = 2
) -> Performance | None:
    """The task's live metrics on the rows of ``current`` that carry a true label (binary: F1
    at ``threshold`` and ROC AUC; multiclass: macro F1 and accuracy; regression: MAE, RMSE and
    R²); None if no row does."""
    needed = LABEL if task == "multiclass" else SCORE
    if TRUE_LABEL not in current.columns or needed not in current.columns:
        return None
    labelled = current[current[TRUE_LABEL].notna()]
    if labelled.empty:
        return None
    from sklearn.metrics import (
        accuracy_score,
        f1_score,
        mean_absolute_error,
        mean_squared_error,
        r2_score,
        roc_auc_score,
    )

    metrics: dict[str, float] = {}
    if task == "regression":
        truth_values = labelled[TRUE_LABEL].astype(float).to_numpy()
        values = labelled[SCORE].astype(float).to_numpy()
        metrics["mae"] = float(mean_absolute_error(truth_values, values))
        metrics["rmse"] = float(np.sqrt(mean_squared_error(truth_values, values)))
        if len(labelled) >= 2:
            metrics["r2"] = float(r2_score(truth_values, values))
        return Performance(len(labelled), metrics)
    truth = labelled[TRUE_LABEL].astype(int).to_numpy()
    if task == "multiclass":
        answered = labelled[LABEL].astype(int).to_numpy()
        metrics["macro_f1"] = float(
            f1_score(truth, answered, labels=list(range(classes)), average="macro", zero_division=0)
        )
        metrics["accuracy"] = float(accuracy_score(truth, answered))
        return Performance(len(labelled), metrics)
    scores = labelled[SCORE].astype(float).to_numpy()
    metrics["f1"] = float(f1_score(truth, (scores >= threshold).astype(int), zero_division=0))
    if len(np.unique(truth)) == 2:
        metrics["roc_auc"] = float(roc_auc_score(truth, scores))
    return Performance(len(labelled), metrics)


def compute_drift(
    reference: Reference | pd.DataFrame,
    current: pd.DataFrame,
    spec: DatasetSpec,
    *,
    share_threshold: float = 0.5,
    label_threshold: float = 0.5,
) -> DriftResult:
    """Drift of ``current`` against ``reference``.

    Args:
        reference: the model's training data, prepared (:func:`prepare_reference`) or as a frame.
        current: the window: the spec's features, and optionally ``score`` (the model's score,
            or value), ``label`` (the class answered) and ``true_label`` (feedback; missing
            where none came).
        spec: the dataset spec, which says which features are numerical.
        share_threshold: dataset drift when at least this share of features drifted.
        label_threshold: the model's decision threshold, for F1.
    """
    prepared = reference if isinstance(reference, Reference) else prepare_reference(reference, spec)
    if current.empty:
        raise ValueError("the current window is empty")
    features = []
    for name in spec.feature_names:
        if name not in current.columns:
            raise ValueError(f"the current window lacks feature column {name}")
        window = _clean(current[name])
        if window.empty:
            raise ValueError(f"the current window has no values in {name}")
        features.append(column_drift(prepared.columns[name], window, prepared.kinds[name], name))
    prediction = None
    column, kind = prediction_column(spec)
    if prepared.scores is not None and column in current.columns:
        window_scores = _clean(current[column].astype(float))
        if not window_scores.empty:
            prediction = column_drift(prepared.scores, window_scores, kind, column)
    drifted_share = sum(f.drifted for f in features) / len(features)
    return DriftResult(
        window_rows=len(current),
        reference_rows=prepared.rows,
        features=tuple(features),
        drifted_share=drifted_share,
        share_threshold=share_threshold,
        dataset_drift=drifted_share >= share_threshold,
        prediction=prediction,
        performance=performance(current, label_threshold, spec.task, len(spec.classes or ()) or 2),
    )


def render_report(
    reference: Reference, current: pd.DataFrame, spec: DatasetSpec, result: DriftResult
) -> str:
    """Evidently's DataDriftPreset report of ``current`` against ``reference``, as HTML, judged
    as ``result`` was: the monitor's dataset-drift share, and for each column the test and
    threshold it used, so the page agrees with the declaration it explains (with Evidently's
    default share, 0.5, it once said "not detected" for a drift declared at 0.3)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    names = spec.feature_names
    numerical = [n for n in names if reference.kinds[n] == "numerical"]
    categorical = [n for n in names if reference.kinds[n] == "categorical"]
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    preset = DataDriftPreset(
        drift_share=result.share_threshold,
        per_column_method={f.feature: f.method for f in result.features},
        per_column_threshold={f.feature: f.threshold for f in result.features},
    )
    snapshot = Report([preset]).run(
        Dataset.from_pandas(current[names].reset_index(drop=True), data_definition=definition),
        Dataset.from_pandas(reference.frame[names], data_definition=definition),
    )
    html: str = snapshot.get_html_str(as_iframe=False)
    return html
