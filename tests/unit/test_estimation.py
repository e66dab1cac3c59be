"""Performance estimated without labels: agrees with the realized metric where the estimate's
assumption holds (P(y | score) unchanged), falls inside its band as often as the band says, and
fails under concept drift, as it should."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from driftloop.estimation import (
    BinaryCalibration,
    MulticlassCalibration,
    calibration_from_dict,
    estimate_window,
    expected_roc_auc,
)


def world(rows: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A model whose score is a distorted probability (score = p², so it needs calibrating);
    ``shift`` moves the inputs (covariate shift: more high-risk rows), never P(y | input)."""
    rng = np.random.default_rng(seed)
    risk = rng.normal(-2.0 + shift, 1.2, rows)
    p = 1 / (1 + np.exp(-risk))
    labels = (rng.random(rows) < p).astype(int)
    return p**2, labels


@pytest.fixture(scope="module")
def calibration() -> BinaryCalibration:
    scores, labels = world(20_000, seed=1)
    return BinaryCalibration.fit(scores, labels, threshold=0.1)


def test_the_estimate_matches_the_realized_metrics_under_covariate_shift(
    calibration: BinaryCalibration,
) -> None:
    for shift in (0.0, 0.8, 1.5):
        scores, labels = world(20_000, seed=7, shift=shift)
        estimates = calibration.estimate(scores)
        predicted = scores >= 0.1

        assert estimates["roc_auc"].value == pytest.approx(roc_auc_score(labels, scores), abs=0.01)
        assert estimates["f1"].value == pytest.approx(f1_score(labels, predicted), abs=0.015)
        assert estimates["accuracy"].value == pytest.approx(
            accuracy_score(labels, predicted), abs=0.01
        )


def test_uncalibrated_scores_would_have_been_wrong(calibration: BinaryCalibration) -> None:
    """The calibration matters: the raw scores (p²) taken as probabilities underestimate the
    positives, and so the ROC AUC."""
    scores, labels = world(20_000, seed=8)

    raw = expected_roc_auc(scores, scores)
    calibrated = calibration.estimate(scores)["roc_auc"].value

    assert abs(raw - roc_auc_score(labels, scores)) > 0.02
    assert abs(calibrated - roc_auc_score(labels, scores)) < 0.01


def test_the_band_holds_the_realized_metric_as_often_as_it_says(
    calibration: BinaryCalibration,
) -> None:
    inside = {"roc_auc": 0, "f1": 0}
    windows = 200
    for seed in range(windows):
        scores, labels = world(500, seed=100 + seed, shift=0.5)
        estimates = calibration.estimate(scores, seed=seed)
        realized = {"roc_auc": roc_auc_score(labels, scores), "f1": f1_score(labels, scores >= 0.1)}
        for name, value in realized.items():
            inside[name] += estimates[name].lower <= value <= estimates[name].upper

    # A 95 % band: about 190 of 200 windows (binomial sd ~3; the calibration's own error adds).
    assert all(count >= 0.9 * windows for count in inside.values()), inside
    assert all(count < windows for count in inside.values()), inside  # a band, not everything


def test_under_concept_drift_the_estimate_fails(calibration: BinaryCalibration) -> None:
    """The same scores, a new rule: half the positives now come from the low scores. The
    estimate cannot see it (no label), so it stays where it was while the realized AUC falls."""
    scores, labels = world(20_000, seed=9)
    rng = np.random.default_rng(9)
    flipped = np.where(rng.random(labels.size) < 0.5, labels, (rng.random(labels.size) < 0.08))

    estimate = calibration.estimate(scores)["roc_auc"]
    realized = roc_auc_score(flipped, scores)

    assert realized < estimate.lower - 0.05
    assert estimate.value == pytest.approx(roc_auc_score(labels, scores), abs=0.01)


def test_tied_scores_are_cut_together() -> None:
    scores = np.full(100, 0.3)

    assert expected_roc_auc(np.full(100, 0.3), scores) == pytest.approx(0.5)
    assert np.isnan(expected_roc_auc(np.zeros(100), scores))  # no expected positive: no AUC


def multiclass_world(rows: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, ...]:
    """Three classes; the model answers the most probable one with its probability (what the
    prediction log keeps), slightly overconfident; ``shift`` moves the inputs toward class 2."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.3, (rows, 3)) + np.array([0.0, 0.0, shift])
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    truth = (rng.random((rows, 1)) > probabilities.cumsum(axis=1)).sum(axis=1)
    answered = probabilities.argmax(axis=1)
    score = probabilities.max(axis=1) ** 0.7  # overconfident: needs calibrating
    return score, answered, truth


def test_multiclass_accuracy_and_macro_f1_are_estimated_from_the_answered_probability() -> None:
    score, answered, truth = multiclass_world(20_000, seed=1)
    calibration = MulticlassCalibration.fit(score, answered, truth, classes=3)

    for shift in (0.0, 1.0):
        score, answered, truth = multiclass_world(20_000, seed=5, shift=shift)
        estimates = calibration.estimate(score, answered, draws=100)

        assert estimates["accuracy"].value == pytest.approx(
            accuracy_score(truth, answered), abs=0.01
        )
        assert estimates["macro_f1"].value == pytest.approx(
            f1_score(truth, answered, average="macro"), abs=0.02
        )
        band = estimates["macro_f1"]
        assert band.lower < band.value < band.upper


def test_a_calibration_survives_being_stored(calibration: BinaryCalibration) -> None:
    scores, _ = world(1000, seed=3)
    stored = calibration_from_dict(calibration.as_dict())

    assert stored == calibration
    assert stored.estimate(scores) == calibration.estimate(scores)
    with pytest.raises(ValueError, match="not a stored calibration"):
        calibration_from_dict({"task": "regression"})


def test_a_stored_calibration_estimates_a_window_as_the_log_keeps_it() -> None:
    """What the monitor does: the stored dict, the window's scores and answered classes."""
    score, answered, truth = multiclass_world(5000, seed=2)
    stored = MulticlassCalibration.fit(score, answered, truth, classes=3).as_dict()
    window_score, window_answered, window_truth = multiclass_world(1000, seed=3)

    multiclass = estimate_window(stored, window_score, window_answered)
    scores, labels = world(2000, seed=4)
    binary = estimate_window(
        BinaryCalibration.fit(scores, labels, threshold=0.1).as_dict(), scores, scores >= 0.1
    )

    assert set(multiclass) == {"accuracy", "macro_f1"}
    accuracy = multiclass["accuracy"]
    assert accuracy.lower <= accuracy_score(window_truth, window_answered) <= accuracy.upper
    assert set(binary) == {"roc_auc", "f1", "precision", "recall", "accuracy"}
