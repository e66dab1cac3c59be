"""Training: deterministic splits and fits, metrics, the pipeline's inputs."""

from __future__ import annotations

import pandas as pd
import pytest

from driftloop.datasets.spec import load_spec
from driftloop.datasets.transactions import generate_transactions
from driftloop.gate import METRICS
from driftloop.training import TrainParams, build_pipeline, split_frame, train_model

SPEC = load_spec("transactions")


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    first = generate_transactions(6000, seed=1)
    second = generate_transactions(3000, seed=2, start=pd.Timestamp("2026-01-02", tz="UTC"))
    return pd.concat([first, second], ignore_index=True)


def newest(frame: pd.DataFrame) -> pd.Series:
    return pd.Series([False] * 6000 + [True] * 3000, index=frame.index)


@pytest.mark.parametrize("estimator", ["hist_gradient_boosting", "logistic_regression"])
def test_same_data_params_and_seed_give_identical_metrics_and_model_bytes(
    frame: pd.DataFrame, estimator: str
) -> None:
    params = TrainParams(estimator=estimator)  # type: ignore[arg-type]

    first = train_model(split_frame(frame, SPEC, params, None), SPEC, params)
    again = train_model(split_frame(frame, SPEC, params, None), SPEC, params)
    other_seed = TrainParams(estimator=estimator, seed=7)  # type: ignore[arg-type]
    different = train_model(split_frame(frame, SPEC, other_seed, None), SPEC, other_seed)

    assert first.digest == again.digest and first.metrics == again.metrics
    assert different.digest != first.digest
    assert set(first.metrics.as_dict()) >= set(METRICS)
    assert first.metrics.roc_auc > 0.8


def test_stratified_split_keeps_the_label_share(frame: pd.DataFrame) -> None:
    split = split_frame(frame, SPEC, TrainParams(), None)

    share = frame["is_fraud"].mean()
    assert abs(split.holdout["is_fraud"].mean() - share) < 0.005
    assert len(split.holdout) == pytest.approx(0.25 * len(frame), abs=1)
    assert not set(split.train.index) & set(split.holdout.index)


def test_newest_batch_holdout_is_time_based(frame: pd.DataFrame) -> None:
    params = TrainParams(holdout="newest_batch")

    split = split_frame(frame, SPEC, params, newest(frame))

    assert len(split.holdout) == 3000 and split.description == "newest batch"
    assert split.train["event_time"].max() < split.holdout["event_time"].min()
    with pytest.raises(ValueError, match="at least two batches"):
        split_frame(frame, SPEC, params, None)


def test_features_without_signal_are_not_model_inputs() -> None:
    pipeline = build_pipeline(SPEC, TrainParams())
    used = [
        name for _, _, columns in pipeline.named_steps["features"].transformers for name in columns
    ]

    assert "customer_age" not in used
    assert {"amount", "merchant_category", "distance_from_home_km"} <= set(used)
