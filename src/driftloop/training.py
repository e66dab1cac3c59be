"""Training on a pinned data commit: split, scikit-learn pipeline, holdout metrics, model digest.

Everything here is a pure function of (data, dataset spec, parameters): the same commit, the
same parameters and the same seed give the same split, the same fitted pipeline, identical
metrics and identical model bytes (``model_digest``).
"""

from __future__ import annotations

import hashlib
import importlib
import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
)
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from driftloop.datasets.spec import DatasetSpec
from driftloop.tasks import ALL_BUILTIN_ESTIMATORS, BUILTIN_ESTIMATORS, class_probabilities
from driftloop.training_options import TrainParams


@dataclass(frozen=True)
class Metrics:
    """Holdout metrics of one model on one holdout: the task's metrics (``driftloop.tasks``)
    and ``rows``; binary models also ``threshold`` and ``positives``."""

    values: dict[str, float]

    def __getitem__(self, name: str) -> float:
        return self.values[name]

    def as_dict(self) -> dict[str, float]:
        return {name: float(value) for name, value in self.values.items()}


@dataclass(frozen=True)
class Split:
    """Train and holdout rows, and how the holdout was drawn."""

    train: pd.DataFrame
    holdout: pd.DataFrame
    description: str


@dataclass
class TrainedModel:
    """A fitted pipeline with its holdout metrics and the digest of its bytes."""

    pipeline: Pipeline
    metrics: Metrics
    digest: str
    params: TrainParams
    train_rows: int
    split: str
    extra: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    """How the model's scores map to outcomes on the holdout (``driftloop.estimation``): what
    the monitor estimates performance from before labels arrive. None for regression."""


def features_of(frame: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """The model's input columns, in spec order, with booleans as 0/1 and strings as objects."""
    columns: dict[str, pd.Series] = {}
    for feature in spec.features:
        column = frame[feature.name]
        if feature.type == "boolean":
            column = column.astype("float64")
        elif feature.type == "categorical":
            column = column.astype(object).where(column.notna(), None)
        else:
            column = column.astype("float64")
        columns[feature.name] = column
    return pd.DataFrame(columns, index=frame.index)


def labels_of(frame: pd.DataFrame, spec: DatasetSpec) -> np.ndarray:
    """The target as the model learns it: 0/1, the index of the class in ``spec.classes``, or
    the number."""
    target = frame[spec.target]
    if spec.target_type == "numeric":
        return target.to_numpy(dtype=np.float64)
    if spec.target_type == "categorical":
        index = {name: code for code, name in enumerate(spec.classes or ())}
        codes = target.astype(str).map(index)
        if codes.isna().any():
            unknown = sorted(set(target.astype(str)[codes.isna()]))[:5]
            raise ValueError(f"{spec.target} holds values that are not classes: {unknown}")
        return codes.to_numpy(dtype=np.int64)
    return target.to_numpy(dtype=np.int64)


def split_frame(
    frame: pd.DataFrame, spec: DatasetSpec, params: TrainParams, newest_batch: pd.Series | None
) -> Split:
    """Deterministic train/holdout split.

    Args:
        newest_batch: for ``holdout="newest_batch"``, a boolean mask of the rows of the batch
            that landed last.
    """
    if params.holdout == "newest_batch":
        if newest_batch is None or not newest_batch.any() or newest_batch.all():
            raise ValueError("a newest-batch holdout needs at least two batches")
        return Split(frame[~newest_batch], frame[newest_batch], "newest batch")
    stratify = spec.target_type != "numeric"
    train, holdout = train_test_split(
        frame,
        test_size=params.holdout_share,
        random_state=params.seed,
        stratify=frame[spec.target] if stratify else None,
    )
    how = "stratified" if stratify else "random"
    return Split(
        train.sort_index(),
        holdout.sort_index(),
        f"{how} {params.holdout_share:.0%} (seed {params.seed})",
    )


class EstimatorError(ValueError):
    """A project's own estimator function that cannot be used; the message names it."""


def user_estimator(reference: str, spec: DatasetSpec, root: Path | None) -> Pipeline:
    """The unfitted estimator that ``module:function`` (a module in the project folder
    ``root``) returns for ``spec``, as a pipeline.

    The function gets the dataset spec and returns a scikit-learn estimator or pipeline that
    takes the spec's feature columns as they are (numbers as floats, booleans as 0/1,
    categories as strings): a classifier with ``predict_proba`` for binary and multiclass
    targets (which it gets as 0/1, or as the index of the class in ``spec.classes``), a
    regressor for numeric ones.

    Raises:
        EstimatorError: the module does not import, has no such function, the function raises,
            or what it returns is not an estimator of the task scikit-learn can clone.
    """
    from sklearn.base import clone, is_classifier, is_regressor

    module_name, _, function_name = reference.partition(":")
    if root is not None and str(root) not in sys.path:
        sys.path.insert(0, str(root))  # kept: unpickling the model needs the module again
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise EstimatorError(
            f"estimator {reference}: importing {module_name} from {root} failed: "
            f"{type(error).__name__}: {error}"
        ) from error
    function = getattr(module, function_name, None)
    if not callable(function):
        raise EstimatorError(
            f"estimator {reference}: {module_name} has no function {function_name}"
        )
    try:
        built = function(spec)
    except Exception as error:
        raise EstimatorError(
            f"estimator {reference} raised {type(error).__name__}: {error}"
        ) from error
    if not (hasattr(built, "fit") and hasattr(built, "get_params")):
        raise EstimatorError(
            f"estimator {reference} returned {type(built).__name__}, not a scikit-learn "
            "estimator (it needs fit and get_params)"
        )
    if spec.task == "regression":
        if not is_regressor(built):
            raise EstimatorError(
                f"estimator {reference} returned {type(built).__name__}, which is not a "
                "regressor (the task is regression)"
            )
    elif not is_classifier(built) or not hasattr(built, "predict_proba"):
        raise EstimatorError(
            f"estimator {reference} returned {type(built).__name__}, which is not a classifier "
            f"with predict_proba (the task is {spec.task})"
        )
    try:
        clone(built)
    except Exception as error:
        raise EstimatorError(
            f"estimator {reference} returned an estimator scikit-learn cannot clone: {error}"
        ) from error
    return built if isinstance(built, Pipeline) else Pipeline([("model", built)])


def build_pipeline(spec: DatasetSpec, params: TrainParams, root: Path | None = None) -> Pipeline:
    """ColumnTransformer for numeric and categorical features, then the configured estimator;
    or the project's own estimator when ``params.estimator`` is ``module:function``.

    Features the spec marks as carrying no signal (``signal: none``, such as a customer's age)
    stay in the data, for monitoring, but the model never sees them: its score cannot depend on
    them.
    """
    if params.estimator not in ALL_BUILTIN_ESTIMATORS:
        return user_estimator(params.estimator, spec, root)
    if params.estimator not in BUILTIN_ESTIMATORS[spec.task]:
        raise EstimatorError(
            f"{params.estimator} is not a {spec.task} estimator; choose "
            f"{', '.join(BUILTIN_ESTIMATORS[spec.task])} or module:function"
        )
    used = [f for f in spec.features if f.signal != "none"]
    numeric = [f.name for f in used if f.type != "categorical"]
    categorical = [f.name for f in used if f.type == "categorical"]
    if params.estimator == "hist_gradient_boosting":
        encoder = OrdinalEncoder(
            categories=[list(spec.feature(name).categories or ()) for name in categorical],
            handle_unknown="use_encoded_value",
            unknown_value=np.nan,
            encoded_missing_value=np.nan,
        )
        transformer = ColumnTransformer(
            [("numeric", "passthrough", numeric), ("categorical", encoder, categorical)],
            verbose_feature_names_out=False,
        )
        # Features the spec says only raise (or only lower) the target are constrained to do
        # so (scikit-learn has no such constraint for more than two classes).
        direction = {"up": 1, "down": -1}
        monotonic = [direction.get(spec.feature(name).signal, 0) for name in numeric]
        boosting = (
            HistGradientBoostingRegressor
            if spec.task == "regression"
            else HistGradientBoostingClassifier
        )
        estimator: Any = boosting(
            learning_rate=params.learning_rate,
            max_iter=params.max_iter,
            max_leaf_nodes=params.max_leaf_nodes,
            l2_regularization=params.l2_regularization,
            categorical_features=list(range(len(numeric), len(numeric) + len(categorical))),
            monotonic_cst=None if spec.task == "multiclass" else monotonic + [0] * len(categorical),
            early_stopping=False,
            random_state=params.seed,
        )
    else:
        transformer = ColumnTransformer(
            [
                (
                    "numeric",
                    Pipeline(
                        [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
                    ),
                    numeric,
                ),
                (
                    "categorical",
                    OneHotEncoder(
                        categories=[list(spec.feature(n).categories or ()) for n in categorical],
                        handle_unknown="ignore",
                    ),
                    categorical,
                ),
            ],
            verbose_feature_names_out=False,
        )
        if spec.task == "regression":
            estimator = Ridge(alpha=1.0 / params.c)
        else:
            estimator = LogisticRegression(C=params.c, max_iter=2000, random_state=params.seed)
    return Pipeline([("features", transformer), ("model", estimator)])


def evaluate(
    pipeline: Pipeline, holdout: pd.DataFrame, spec: DatasetSpec, threshold: float
) -> Metrics:
    """The holdout metrics of the spec's task (``driftloop.tasks``); ``threshold`` is the
    score at or above which a binary model says 1."""
    truth = labels_of(holdout, spec)
    features = features_of(holdout, spec)
    values: dict[str, float]
    if spec.task == "regression":
        predicted = np.asarray(pipeline.predict(features), dtype=np.float64)
        values = {
            "mae": float(mean_absolute_error(truth, predicted)),
            "rmse": float(np.sqrt(mean_squared_error(truth, predicted))),
            "r2": float(r2_score(truth, predicted)),
        }
    elif spec.task == "multiclass":
        classes = list(range(len(spec.classes or ())))
        probabilities = class_probabilities(pipeline, features, len(classes))
        predicted = probabilities.argmax(axis=1)
        values = {
            "macro_f1": float(
                f1_score(truth, predicted, labels=classes, average="macro", zero_division=0)
            ),
            "accuracy": float(accuracy_score(truth, predicted)),
            "log_loss": float(log_loss(truth, probabilities, labels=classes)),
        }
    else:
        if len(set(truth.tolist())) < 2:
            raise ValueError("the holdout needs both classes to measure a classifier")
        scores = pipeline.predict_proba(features)[:, 1]
        predicted = (scores >= threshold).astype(np.int64)
        values = {
            "roc_auc": float(roc_auc_score(truth, scores)),
            "pr_auc": float(average_precision_score(truth, scores)),
            "f1": float(f1_score(truth, predicted, zero_division=0)),
            "precision": float(precision_score(truth, predicted, zero_division=0)),
            "recall": float(recall_score(truth, predicted, zero_division=0)),
            "brier": float(brier_score_loss(truth, scores)),
        }
    rounded = {name: round(value, 6) for name, value in values.items()}
    extra = (
        {"threshold": threshold, "positives": float(truth.sum())} if spec.task == "binary" else {}
    )
    return Metrics({**rounded, **extra, "rows": float(len(truth))})


def model_digest(pipeline: Pipeline) -> str:
    """SHA-256 of the pickled pipeline: identical for identical fits."""
    return hashlib.sha256(pickle.dumps(pipeline, protocol=5)).hexdigest()


def train_model(
    split: Split, spec: DatasetSpec, params: TrainParams, root: Path | None = None
) -> TrainedModel:
    """Fit the pipeline on the split's train rows and measure it on its holdout.

    Args:
        root: the project folder, where a ``module:function`` estimator is imported from.

    Raises:
        EstimatorError: the project's own estimator cannot be built, or fails to fit.
    """
    pipeline = build_pipeline(spec, params, root)
    try:
        pipeline.fit(features_of(split.train, spec), labels_of(split.train, spec))
    except Exception as error:
        if params.estimator in ALL_BUILTIN_ESTIMATORS:
            raise
        raise EstimatorError(
            f"estimator {params.estimator} failed to fit: {type(error).__name__}: {error}"
        ) from error
    return TrainedModel(
        pipeline=pipeline,
        metrics=evaluate(pipeline, split.holdout, spec, params.threshold),
        digest=model_digest(pipeline),
        params=params,
        train_rows=len(split.train),
        split=split.description,
        calibration=holdout_calibration(pipeline, split.holdout, spec, params.threshold),
    )


def holdout_calibration(
    pipeline: Pipeline, holdout: pd.DataFrame, spec: DatasetSpec, threshold: float
) -> dict[str, Any] | None:
    """The calibration of a classifier's scores on its holdout, as stored with the version
    (isotonic, ``driftloop.estimation``); None for a regressor, or when the holdout has a
    single class (nothing to calibrate against)."""
    from driftloop.estimation import BinaryCalibration, MulticlassCalibration

    truth = labels_of(holdout, spec)
    features = features_of(holdout, spec)
    if spec.task == "multiclass":
        probabilities = class_probabilities(pipeline, features, len(spec.classes or ()))
        answered = probabilities.argmax(axis=1)
        chosen = probabilities[np.arange(len(answered)), answered]
        fitted = MulticlassCalibration.fit(chosen, answered, truth, probabilities.shape[1])
        return dict(fitted.as_dict())
    if spec.task != "binary" or len(set(truth.tolist())) < 2:
        return None
    scores = pipeline.predict_proba(features)[:, 1]
    return dict(BinaryCalibration.fit(scores, truth, threshold).as_dict())
