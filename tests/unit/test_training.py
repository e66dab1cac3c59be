"""Training: deterministic splits and fits, metrics, the pipeline's inputs."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from driftloop.datasets.spec import load_spec
from driftloop.datasets.transactions import generate_transactions
from driftloop.tasks import METRICS
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
    assert set(first.metrics.as_dict()) >= set(METRICS["binary"])
    assert first.metrics["roc_auc"] > 0.8
    # The holdout calibration the monitor estimates from: the same for the same fit.
    assert first.calibration is not None and first.calibration == again.calibration
    assert first.calibration["threshold"] == first.metrics["threshold"]


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


USER_MODELS = """
from sklearn.compose import make_column_transformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder


def forest(spec):
    categorical = [f.name for f in spec.features if f.type == "categorical"]
    numeric = [f.name for f in spec.features if f.type != "categorical"]
    encode = make_column_transformer(
        (OneHotEncoder(handle_unknown="ignore"), categorical), ("passthrough", numeric)
    )
    return make_pipeline(encode, RandomForestClassifier(n_estimators=20, random_state=0))


def not_an_estimator(spec):
    return "a forest, please"


def broken(spec):
    raise RuntimeError("no GPU here")


def regressor(spec):
    from sklearn.linear_model import Ridge

    return Ridge()


def fails_to_fit(spec):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression()  # the raw columns hold strings: fit raises
"""


@pytest.fixture
def user_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project folder with its own estimators in ``team_models/estimators.py``."""
    package = tmp_path / "team_models"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "estimators.py").write_text(USER_MODELS)
    (tmp_path / "broken_import.py").write_text("import not_installed_anywhere\n")
    monkeypatch.setattr(sys, "path", list(sys.path))  # training adds the project: undone after
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith(("team_models", "broken_import"))]:
        del sys.modules[name]


def test_a_projects_own_estimator_is_trained_measured_and_pickled(
    frame: pd.DataFrame, user_project: Path
) -> None:
    import pickle

    params = TrainParams(estimator="team_models.estimators:forest")

    trained = train_model(split_frame(frame, SPEC, params, None), SPEC, params, user_project)

    assert type(trained.pipeline.steps[-1][1]).__name__ == "RandomForestClassifier"
    assert trained.metrics["roc_auc"] > 0.7 and trained.params.estimator == params.estimator
    assert pickle.loads(pickle.dumps(trained.pipeline)).predict_proba(
        frame.head(3)[SPEC.feature_names]
    ).shape == (3, 2)


@pytest.mark.parametrize(
    ("estimator", "message"),
    [
        (
            "team_models.estimators:not_an_estimator",
            "estimator team_models.estimators:not_an_estimator returned str, not a scikit-learn "
            "estimator",
        ),
        (
            "team_models.estimators:broken",
            "estimator team_models.estimators:broken raised RuntimeError: no GPU here",
        ),
        (
            "team_models.estimators:regressor",
            "estimator team_models.estimators:regressor returned Ridge, which is not a classifier",
        ),
        (
            "team_models.estimators:missing",
            "estimator team_models.estimators:missing: team_models.estimators has no function "
            "missing",
        ),
        (
            "broken_import:build",
            "estimator broken_import:build: importing broken_import from",
        ),
        (
            "team_models.estimators:fails_to_fit",
            "estimator team_models.estimators:fails_to_fit failed to fit: ValueError",
        ),
    ],
)
def test_an_unusable_estimator_function_is_reported_at_train_time_with_its_name(
    frame: pd.DataFrame, user_project: Path, estimator: str, message: str
) -> None:
    from driftloop.training import EstimatorError

    params = TrainParams(estimator=estimator)

    with pytest.raises(EstimatorError) as raised:
        train_model(split_frame(frame, SPEC, params, None), SPEC, params, user_project)

    assert str(raised.value).startswith(message), str(raised.value)
