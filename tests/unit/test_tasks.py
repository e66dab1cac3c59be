"""Multiclass and regression models: validation, training, metrics and the gate per task."""

from __future__ import annotations

import pytest

from driftloop.datasets.validation import row_problems, validate_batch
from driftloop.gate import GatePolicy, decide, policy_for
from driftloop.tasks import METRICS
from driftloop.training import TrainParams, split_frame, train_model
from tests.bundled_data import diabetes_frame, loaded_spec, wine_frame

WINE = wine_frame()
WINE_SPEC = loaded_spec(WINE, "wine", "cultivar")
DIABETES = diabetes_frame()
DIABETES_SPEC = loaded_spec(DIABETES, "diabetes", "progression")


@pytest.mark.parametrize("estimator", ["hist_gradient_boosting", "logistic_regression"])
def test_a_multiclass_model_records_macro_f1_accuracy_and_log_loss(estimator: str) -> None:
    params = TrainParams(estimator=estimator, max_iter=50)

    trained = train_model(split_frame(WINE, WINE_SPEC, params, None), WINE_SPEC, params)

    metrics = trained.metrics.as_dict()
    assert set(metrics) == {*METRICS["multiclass"], "rows"}
    assert metrics["macro_f1"] > 0.85 and metrics["accuracy"] > 0.85
    assert 0 < metrics["log_loss"] < 0.5
    assert trained.pipeline.predict_proba(WINE[WINE_SPEC.feature_names].head(2)).shape == (2, 3)
    # Calibrated on the holdout, for estimates before labels: where wrong answers went.
    assert trained.calibration is not None and trained.calibration["task"] == "multiclass"
    assert len(trained.calibration["errors"]) == 3


@pytest.mark.parametrize("estimator", ["hist_gradient_boosting", "ridge"])
def test_a_regression_model_records_mae_rmse_and_r2(estimator: str) -> None:
    params = TrainParams(estimator=estimator, max_iter=50, c=10.0)

    trained = train_model(split_frame(DIABETES, DIABETES_SPEC, params, None), DIABETES_SPEC, params)

    metrics = trained.metrics.as_dict()
    assert set(metrics) == {*METRICS["regression"], "rows"}
    assert 0.2 < metrics["r2"] < 0.7  # diabetes is hard: published baselines sit near 0.45
    assert 30 < metrics["mae"] < metrics["rmse"] < 80
    assert trained.calibration is None  # regression is not estimated (driftloop.estimation)


def test_a_builtin_estimator_of_another_task_is_refused() -> None:
    from driftloop.training import EstimatorError

    params = TrainParams(estimator="logistic_regression")
    with pytest.raises(EstimatorError, match="not a regression estimator; choose"):
        train_model(split_frame(DIABETES, DIABETES_SPEC, params, None), DIABETES_SPEC, params)


def test_class_labels_are_validated_against_the_specs_classes() -> None:
    batch = WINE.head(40).copy()
    assert validate_batch(batch, WINE_SPEC).report.passed

    batch.loc[3, "cultivar"] = "class_9"
    report = validate_batch(batch, WINE_SPEC).report

    assert not report.passed
    types = next(check for check in report.checks if check.name == "types")
    assert "cultivar: 1 labels are not classes of the spec" in types.detail
    assert "'class_9'" in types.detail
    assert row_problems(batch, WINE_SPEC)[3] == "cultivar is not a class of the spec"


def test_numeric_labels_must_be_finite_and_in_range() -> None:
    spec = DIABETES_SPEC.model_copy(update={"target_minimum": 0.0})
    batch = DIABETES.head(40).copy()
    assert validate_batch(batch, spec).report.passed

    batch.loc[1, "progression"] = float("inf")
    batch.loc[2, "progression"] = -5.0
    report = validate_batch(batch, spec).report

    failed = {check.name: check.detail for check in report.failures}
    assert "progression: 1 labels are not finite numbers" in failed["types"]
    assert list(row_problems(batch, spec)[1:3]) == [
        "progression is not a finite number",
        "progression below 0",
    ]


def test_the_gate_judges_each_task_on_its_own_metrics() -> None:
    regression = policy_for("regression")
    assert regression.primary_metric == "r2" and regression.floor == {"r2": 0.0}
    better = {"mae": 40.0, "rmse": 50.0, "r2": 0.50}
    worse = {"mae": 45.0, "rmse": 56.0, "r2": 0.40}
    assert decide(better, worse, regression).promote
    assert not decide(worse, better, regression).promote

    multiclass = policy_for("multiclass", {"guards": {"log_loss": 0.01}})
    challenger = {"macro_f1": 0.95, "accuracy": 0.95, "log_loss": 0.30}
    production = {"macro_f1": 0.90, "accuracy": 0.90, "log_loss": 0.20}
    decision = decide(challenger, production, multiclass)
    assert not decision.promote  # better F1, but log loss regresses past its tolerance
    assert any("guard log_loss regresses by 0.1000" in reason for reason in decision.reasons)

    with pytest.raises(ValueError, match="names roc_auc, which a regression model does not"):
        policy_for(
            "regression",
            GatePolicy(primary_metric="roc_auc").model_dump(include={"primary_metric"}),
        )


def test_a_holdout_without_every_class_still_measures_a_multiclass_model() -> None:
    params = TrainParams(max_iter=20)
    trained = train_model(split_frame(WINE, WINE_SPEC, params, None), WINE_SPEC, params)
    from driftloop.training import evaluate

    only_two = WINE[WINE["cultivar"] != "class_2"]
    metrics = evaluate(trained.pipeline, only_two, WINE_SPEC, 0.5).as_dict()

    assert metrics["rows"] == len(only_two) and metrics["log_loss"] > 0
    assert metrics["accuracy"] > 0.8


def test_prediction_drift_and_live_performance_follow_the_task() -> None:
    import numpy as np

    from driftloop.drift import LABEL, SCORE, TRUE_LABEL, compute_drift, prepare_reference

    # Multiclass: the shares of the classes answered; the reference answers evenly, the window
    # almost only class_0: drifted, judged as categories.
    reference = prepare_reference(WINE, WINE_SPEC, np.arange(len(WINE)) % 3)
    window = WINE.assign(**{LABEL: 0, TRUE_LABEL: [0.0, 1.0, 2.0] * 59 + [0.0]})
    result = compute_drift(reference, window, WINE_SPEC)
    assert result.prediction is not None and result.prediction.feature == LABEL
    assert result.prediction.drifted
    assert result.performance is not None
    assert result.performance.metrics["accuracy"] == pytest.approx(60 / 178)
    assert set(result.performance.metrics) == {"macro_f1", "accuracy"}

    # Regression: the values' distribution, and MAE/RMSE/R² on the labelled rows.
    truth = DIABETES["progression"].to_numpy()
    reference = prepare_reference(DIABETES, DIABETES_SPEC, truth)
    window = DIABETES.assign(**{SCORE: truth + 100.0, TRUE_LABEL: truth})
    result = compute_drift(reference, window, DIABETES_SPEC)
    assert result.prediction is not None and result.prediction.drifted
    assert result.performance is not None
    assert result.performance.metrics["mae"] == pytest.approx(100.0)
    assert result.performance.metrics["rmse"] == pytest.approx(100.0)
    assert result.performance.metrics["r2"] < 0


def test_feedback_labels_are_checked_per_task() -> None:
    from driftloop.records import feedback_label

    assert feedback_label(WINE_SPEC, "class_2") == 2.0
    assert feedback_label(WINE_SPEC, "class_7") is None and feedback_label(WINE_SPEC, 2) is None
    assert feedback_label(DIABETES_SPEC, 151) == 151.0
    assert feedback_label(DIABETES_SPEC, 75.5) == 75.5
    for bad in (True, "151", float("nan"), None):
        assert feedback_label(DIABETES_SPEC, bad) is None
