"""Performance estimated before the labels arrive: confidence-based performance estimation.

When labels come days after predictions, the realized metrics of a window are blind for days.
A classifier's scores say how often it should be right, if they are calibrated: fit an isotonic
map from score to the observed frequency on the model's holdout once per version
(:meth:`BinaryCalibration.fit`), and a window's expected confusion matrix follows from the
calibrated probabilities of its rows. This is NannyML's confidence-based performance estimation
(CBPE; NannyML docs, "Confidence-based Performance Estimation"), written for driftloop's
prediction log, with the ROC AUC estimated as NannyML does (the expected true- and
false-positive counts of every cut of the scores) so the two agree.

What the estimate rests on: P(y | score) stays what it was on the holdout. That holds under
covariate shift (the inputs move, the rule that maps inputs to labels does not), which is what
most data drift is; it fails under concept drift, where the same score means a different risk,
and only labels can show that (the realized metrics, as they arrive).

The band is the range the realized metric would fall in if the estimate's assumption holds:
labels drawn from the calibrated probabilities ``draws`` times, the metric computed on each, the
central ``level`` share kept. It measures the window's sampling noise, not the calibration's
error.

Binary: ROC AUC, F1, precision, recall, accuracy. Multiclass (the log keeps the probability of
the class answered, not the whole vector): the probability that the answer is right is
calibrated the same way, and a wrong answer's true class is spread as the holdout's errors
were, which gives accuracy and macro F1. Regression is not estimated: an error estimate needs a
second model of the first one's loss (NannyML's DLE), trained on the holdout's features; the
realized MAE, RMSE and R² fill in as labels arrive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Values = Sequence[float] | Sequence[int] | np.ndarray
DRAWS = 400  # label draws behind a band
LEVEL = 0.95  # the band's central share


@dataclass(frozen=True)
class Estimate:
    """A metric expected of a window, and the band its realized value should fall in."""

    metric: str
    value: float
    lower: float
    upper: float
    rows: int


def _isotonic(scores: np.ndarray, outcomes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The breakpoints of the isotonic fit of ``outcomes`` (0/1) on ``scores``."""
    from sklearn.isotonic import IsotonicRegression

    fitted = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(scores, outcomes)
    return fitted.X_thresholds_, fitted.y_thresholds_


def _calibrated(scores: Values, x: tuple[float, ...], y: tuple[float, ...]) -> np.ndarray:
    """The isotonic fit at ``scores``: linear between its breakpoints, clipped outside them (as
    scikit-learn's IsotonicRegression predicts)."""
    return np.interp(np.asarray(scores, float), x, y)


def _band(values: np.ndarray, level: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class BinaryCalibration:
    """Isotonic map from a binary model's score to P(y = 1), with the model's threshold."""

    x: tuple[float, ...]
    y: tuple[float, ...]
    threshold: float

    @classmethod
    def fit(cls, scores: Values, labels: Values, threshold: float) -> BinaryCalibration:
        """Fit on the holdout: the model's scores and the true labels (0/1)."""
        x, y = _isotonic(np.asarray(scores, float), np.asarray(labels, float))
        return cls(tuple(map(float, x)), tuple(map(float, y)), float(threshold))

    def probabilities(self, scores: Values) -> np.ndarray:
        """Calibrated P(y = 1) of each score."""
        return _calibrated(scores, self.x, self.y)

    def as_dict(self) -> dict[str, Any]:
        return {"task": "binary", "x": list(self.x), "y": list(self.y), "threshold": self.threshold}

    def estimate(
        self,
        scores: Values,
        *,
        draws: int = DRAWS,
        level: float = LEVEL,
        seed: int = 0,
    ) -> dict[str, Estimate]:
        """Every binary metric expected of the window whose scores are ``scores``."""
        score = np.asarray(scores, float)
        p = self.probabilities(score)
        predicted = score >= self.threshold
        expected = expected_binary(p, score, predicted)
        rng = np.random.default_rng(seed)
        drawn = rng.random((draws, score.size)) < p  # labels, as the calibration expects them
        realized = realized_binary(drawn, score, predicted)
        return {
            name: Estimate(name, value, *_band(realized[name], level), score.size)
            for name, value in expected.items()
        }


def expected_roc_auc(probabilities: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC from expected counts: walking the scores from the highest down, each row adds
    its calibrated probability to the true positives and the rest to the false positives;
    the area under the (expected FPR, expected TPR) curve, tied scores cut together."""
    order = np.argsort(-scores, kind="stable")
    ordered, p = scores[order], probabilities[order]
    cuts = np.r_[np.flatnonzero(np.diff(ordered) != 0), ordered.size - 1]
    tps = np.r_[0.0, np.cumsum(p)[cuts]]
    fps = np.r_[0.0, (cuts + 1) - tps[1:]]
    if tps[-1] <= 0 or fps[-1] <= 0:
        return float("nan")
    return float(np.trapezoid(tps / tps[-1], fps / fps[-1]))


def expected_binary(
    probabilities: np.ndarray, scores: np.ndarray, predicted: np.ndarray
) -> dict[str, float]:
    """The expected confusion matrix at the model's threshold, and the metrics it gives."""
    tp = float(probabilities[predicted].sum())
    fp = float(predicted.sum()) - tp
    fn = float(probabilities[~predicted].sum())
    tn = float((~predicted).sum()) - fn
    return {
        "roc_auc": expected_roc_auc(probabilities, scores),
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else float("nan"),
        "precision": tp / (tp + fp) if tp + fp > 0 else float("nan"),
        "recall": tp / (tp + fn) if tp + fn > 0 else float("nan"),
        "accuracy": (tp + tn) / max(scores.size, 1),
    }


def realized_binary(
    labels: np.ndarray, scores: np.ndarray, predicted: np.ndarray
) -> dict[str, np.ndarray]:
    """The metrics of each row of ``labels`` (draws × rows, bool) for the same answers."""
    from scipy.stats import rankdata

    positives = labels.sum(axis=1).astype(float)
    negatives = labels.shape[1] - positives
    ranks = rankdata(scores)  # average ranks for ties, as the Mann-Whitney AUC counts them
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (labels @ ranks - positives * (positives + 1) / 2) / (positives * negatives)
        tp = (labels & predicted).sum(axis=1).astype(float)
        fp = predicted.sum() - tp
        fn = positives - tp
        return {
            "roc_auc": np.where((positives > 0) & (negatives > 0), auc, np.nan),
            "f1": 2 * tp / (2 * tp + fp + fn),
            "precision": tp / (tp + fp),
            "recall": tp / (tp + fn),
            "accuracy": (tp + labels.shape[1] - predicted.sum() - fn) / labels.shape[1],
        }


@dataclass(frozen=True)
class MulticlassCalibration:
    """Isotonic map from the answered class's probability to P(the answer is right), and where
    the holdout's wrong answers truly belonged (``errors[c][k]``: the share of wrong answers
    ``c`` whose true class was ``k``)."""

    x: tuple[float, ...]
    y: tuple[float, ...]
    errors: tuple[tuple[float, ...], ...]

    @classmethod
    def fit(
        cls, scores: Values, answered: Values, truth: Values, classes: int
    ) -> MulticlassCalibration:
        answer, true = np.asarray(answered, int), np.asarray(truth, int)
        x, y = _isotonic(np.asarray(scores, float), (answer == true).astype(float))
        counts = np.full((classes, classes), 0.5)  # a half count each: no class is impossible
        np.fill_diagonal(counts, 0.0)
        wrong = answer != true
        np.add.at(counts, (answer[wrong], true[wrong]), 1.0)
        shares = counts / counts.sum(axis=1, keepdims=True)
        return cls(
            tuple(map(float, x)), tuple(map(float, y)), tuple(tuple(map(float, r)) for r in shares)
        )

    def correct(self, scores: Values) -> np.ndarray:
        """Calibrated P(the answer is right) of each answered class's probability."""
        return _calibrated(scores, self.x, self.y)

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": "multiclass",
            "x": list(self.x),
            "y": list(self.y),
            "errors": [list(row) for row in self.errors],
        }

    def estimate(
        self,
        scores: Values,
        answered: Values,
        *,
        draws: int = DRAWS,
        level: float = LEVEL,
        seed: int = 0,
    ) -> dict[str, Estimate]:
        """Accuracy and macro F1 expected of the window (its scores and answered classes)."""
        q = self.correct(scores)
        answer = np.asarray(answered, int)
        errors = np.asarray(self.errors)
        classes = errors.shape[0]
        onehot = np.eye(classes)[answer]  # rows × classes
        tp = q @ onehot
        fp = (1 - q) @ onehot
        fn = (1 - q) @ errors[answer]
        expected = {"accuracy": float(q.mean()), "macro_f1": _macro_f1(tp, fp, fn)}
        rng = np.random.default_rng(seed)
        right = rng.random((draws, q.size)) < q
        cumulative = np.cumsum(errors[answer], axis=1)  # rows × classes
        true_if_wrong = (rng.random((draws, q.size, 1)) > cumulative[None]).sum(axis=2)
        true = np.where(right, answer[None], np.minimum(true_if_wrong, classes - 1))
        realized = {
            "accuracy": right.mean(axis=1),
            "macro_f1": np.array([_macro_f1_of(answer, t, classes) for t in true]),
        }
        return {
            name: Estimate(name, value, *_band(realized[name], level), q.size)
            for name, value in expected.items()
        }


def _macro_f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> float:
    denominator = 2 * tp + fp + fn
    scores = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return float(scores[denominator > 0].mean()) if (denominator > 0).any() else float("nan")


def _macro_f1_of(answer: np.ndarray, true: np.ndarray, classes: int) -> float:
    tp = np.bincount(answer[answer == true], minlength=classes).astype(float)
    fp = np.bincount(answer, minlength=classes) - tp
    fn = np.bincount(true, minlength=classes) - tp
    return _macro_f1(tp, fp, fn)


Calibration = BinaryCalibration | MulticlassCalibration


def calibration_from_dict(stored: dict[str, Any]) -> Calibration:
    """The calibration :meth:`as_dict` stored (with the model version)."""
    if stored.get("task") == "binary":
        return BinaryCalibration(tuple(stored["x"]), tuple(stored["y"]), float(stored["threshold"]))
    if stored.get("task") == "multiclass":
        return MulticlassCalibration(
            tuple(stored["x"]), tuple(stored["y"]), tuple(tuple(r) for r in stored["errors"])
        )
    raise ValueError(f"not a stored calibration: task {stored.get('task')!r}")


def estimate_window(
    stored: dict[str, Any], scores: np.ndarray, answered: np.ndarray
) -> dict[str, Estimate]:
    """The metrics a stored calibration expects of a window: its scores and, for multiclass,
    the classes answered (as the prediction log keeps them)."""
    calibration = calibration_from_dict(stored)
    if isinstance(calibration, BinaryCalibration):
        return calibration.estimate(scores)
    return calibration.estimate(scores, answered)
