"""The three tasks a model can do, and what each one measures and how the gate judges it.

- ``binary``: the target is 0 or 1; the model answers a score (the probability of 1) and a label
  at the model's threshold. Holdout metrics: ROC AUC, PR AUC, F1, precision and recall at the
  threshold, Brier score.
- ``multiclass``: the target is one of the spec's classes; the model answers the class and the
  probability of each class. Holdout metrics: macro F1, accuracy, log loss.
- ``regression``: the target is a number; the model answers a value. Holdout metrics: MAE,
  RMSE, R².

Every task also records ``rows`` (holdout size); binary also ``threshold`` and ``positives``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np

Task = Literal["binary", "multiclass", "regression"]
TASKS: tuple[Task, ...] = ("binary", "multiclass", "regression")

# The metrics the gate can compare, per task (bookkeeping values such as rows are not among them).
METRICS: dict[Task, tuple[str, ...]] = {
    "binary": ("roc_auc", "pr_auc", "f1", "precision", "recall", "brier"),
    "multiclass": ("macro_f1", "accuracy", "log_loss"),
    "regression": ("mae", "rmse", "r2"),
}
ALL_METRICS: tuple[str, ...] = tuple(name for task in TASKS for name in METRICS[task])
# Metrics where lower is better; every other metric is better when higher.
LOWER_IS_BETTER = frozenset({"brier", "log_loss", "mae", "rmse"})

# What the gate compares when nothing overrides it. Regression is judged on R² (scale-free, so
# one margin fits every target); MAE and RMSE are in the target's unit, so no default guards them.
DEFAULT_GATES: dict[Task, dict[str, Any]] = {
    "binary": {
        "primary_metric": "roc_auc",
        "margin": 0.005,
        "guards": {"pr_auc": 0.02, "brier": 0.005},
        "floor": {"roc_auc": 0.7},
    },
    "multiclass": {
        "primary_metric": "macro_f1",
        "margin": 0.005,
        "guards": {"log_loss": 0.05},
        "floor": {"macro_f1": 0.3},
    },
    "regression": {
        "primary_metric": "r2",
        "margin": 0.005,
        "guards": {},
        "floor": {"r2": 0.0},
    },
}

# The built-in estimators: a gradient-boosted tree ensemble for every task, and a linear model.
BUILTIN_ESTIMATORS: dict[Task, tuple[str, ...]] = {
    "binary": ("hist_gradient_boosting", "logistic_regression"),
    "multiclass": ("hist_gradient_boosting", "logistic_regression"),
    "regression": ("hist_gradient_boosting", "ridge"),
}
ALL_BUILTIN_ESTIMATORS: tuple[str, ...] = ("hist_gradient_boosting", "logistic_regression", "ridge")

# The metrics of live performance (labelled predictions) the monitor exports, per task.
LIVE_METRICS: dict[Task, tuple[str, ...]] = {
    "binary": ("f1", "roc_auc"),
    "multiclass": ("macro_f1", "accuracy"),
    "regression": ("mae", "rmse", "r2"),
}

# The live quality a model should keep, per task: its primary metric and the floor below which
# ModelPerformanceDrop (realized, on labels) and EstimatedPerformanceDrop (estimated, before
# labels) fire in infra/prometheus/rules/driftloop.yml (a test holds the two together), and the
# monitor's own declaration of an estimated drop. Regression is not estimated.
LIVE_FLOOR: dict[Task, tuple[str, float]] = {
    "binary": ("roc_auc", 0.75),
    "multiclass": ("macro_f1", 0.6),
    "regression": ("r2", 0.0),
}


def task_of_target(target_type: str) -> Task:
    """The task a target type asks for: binary, categorical -> multiclass, numeric -> regression."""
    return {"binary": "binary", "categorical": "multiclass", "numeric": "regression"}[target_type]  # type: ignore[return-value]


def class_probabilities(model: Any, features: Any, classes: int) -> np.ndarray:
    """(rows, classes) probabilities of a multiclass ``model``, one column per class of the
    spec, in its order (a class the model never saw in training gets probability 0)."""
    import numpy as np  # here: reading a spec or a project needs no numpy

    given = np.asarray(model.predict_proba(features), dtype=np.float64)
    if given.shape[1] == classes:
        return given
    full = np.zeros((given.shape[0], classes))
    full[:, np.asarray(model.classes_, dtype=np.int64)] = given
    return full
