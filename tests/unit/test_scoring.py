"""The compiled scoring path gives scikit-learn's scores exactly, or is not used at all."""

from __future__ import annotations

import dataclasses
import io
import pickle
from typing import Any

import numpy as np
import pandas as pd
import pytest

from driftloop.datasets.spec import load_spec
from driftloop.datasets.transactions import SCENARIOS, generate_transactions
from driftloop.scoring import (
    STORED_FORMAT,
    UNSEEN,
    CompiledModel,
    compile_checked,
    compile_pipeline,
    probe_records,
    records_frame,
)
from driftloop.serving import LoadedModel, frame_records
from driftloop.training import TrainParams, split_frame, train_model

SPEC = load_spec("transactions")
FEATURES: list[dict[str, Any]] = SPEC.model_dump(mode="json")["features"]
NAMES = [feature["name"] for feature in FEATURES]


def trained(estimator: str = "hist_gradient_boosting") -> Any:
    params = TrainParams(estimator=estimator)  # type: ignore[arg-type]
    frame = generate_transactions(6000, seed=1)
    return train_model(split_frame(frame, SPEC, params, None), SPEC, params).pipeline


@pytest.fixture(scope="module")
def pipeline() -> Any:
    return trained()


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return frame_records(frame, NAMES)


def sklearn_scores(pipeline: Any, rows: list[dict[str, Any]]) -> np.ndarray:
    return pipeline.predict_proba(records_frame(FEATURES, rows))[:, 1]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_compiled_scores_are_scikit_learns_to_the_last_bit(pipeline: Any, scenario: str) -> None:
    rows = records(generate_transactions(3000, seed=11, scenario=scenario))  # type: ignore[arg-type]
    compiled = compile_pipeline(pipeline)

    assert compiled is not None
    assert np.array_equal(compiled.score(rows), sklearn_scores(pipeline, rows))
    # One record at a time, as the service mostly sees them, too.
    assert [compiled.score([row])[0] for row in rows[:50]] == sklearn_scores(
        pipeline, rows[:50]
    ).tolist()


def test_missing_numbers_and_unseen_categories_follow_scikit_learn(pipeline: Any) -> None:
    compiled = compile_pipeline(pipeline)
    assert compiled is not None
    base = records(generate_transactions(40, seed=3))
    odd = []
    for index, row in enumerate(base):
        changed = dict(row)
        changed["amount"] = None if index % 2 else changed["amount"]
        changed["distance_from_home_km"] = None if index % 3 == 0 else 1e9
        changed["merchant_category"] = UNSEEN if index % 4 == 0 else changed["merchant_category"]
        odd.append(changed)
    probes = [{**base[0], **probe} for probe in probe_records(compiled, count=500, seed=5)]

    assert np.array_equal(compiled.score(odd), sklearn_scores(pipeline, odd))
    assert np.array_equal(compiled.score(probes), sklearn_scores(pipeline, probes))


def test_the_service_scores_through_the_compiled_path_only_when_it_agrees(
    pipeline: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked = compile_checked(pipeline, FEATURES)
    assert checked is not None

    # A compiled model that is off by one leaf is refused: scoring stays with scikit-learn.
    wrong_leaf = checked.value.copy()
    wrong_leaf[0][checked.is_leaf[0]] += 0.5
    broken = dataclasses.replace(checked, value=wrong_leaf)
    assert not np.array_equal(
        broken.score(records(generate_transactions(200, seed=4))),
        checked.score(records(generate_transactions(200, seed=4))),
    )

    monkeypatch.setattr("driftloop.scoring.compile_pipeline", lambda _: broken)
    assert compile_checked(pipeline, FEATURES) is None


def test_other_pipelines_score_through_scikit_learn() -> None:
    logistic = trained("logistic_regression")
    rows = records(generate_transactions(200, seed=9))
    model = LoadedModel(
        "m", "v", "c", {}, 0.5, FEATURES, lambda: logistic, compile_checked(logistic, FEATURES)
    )

    assert compile_pipeline(logistic) is None and model.compiled is None
    assert np.array_equal(model.score(rows), sklearn_scores(logistic, rows))


@pytest.mark.parametrize("example", ["diabetes", "breast_cancer"])
def test_a_regressor_and_a_model_without_categories_are_compiled_exactly(example: str) -> None:
    """A pipeline without categorical features was never compiled (its encoder is unfitted)."""
    from driftloop.datasets.sources import breast_cancer_frame
    from tests.bundled_data import diabetes_frame, loaded_spec

    if example == "diabetes":
        frame = diabetes_frame()
        spec = loaded_spec(frame, "diabetes", "progression")
    else:
        frame, spec = breast_cancer_frame(), load_spec("breast_cancer")
    params = TrainParams(max_iter=40)
    model = train_model(split_frame(frame, spec, params, None), spec, params).pipeline
    features = spec.model_dump(mode="json")["features"]
    rows = frame_records(frame, spec.feature_names)

    compiled = compile_checked(model, features, spec.task)

    assert compiled is not None
    inputs = records_frame(features, rows)
    expected = (
        model.predict(inputs) if spec.task == "regression" else model.predict_proba(inputs)[:, 1]
    )
    assert np.array_equal(compiled.score(rows), expected)


def test_a_multiclass_model_is_answered_through_scikit_learn() -> None:
    from tests.bundled_data import loaded_spec, wine_frame

    frame = wine_frame()
    spec = loaded_spec(frame, "wine", "cultivar")
    params = TrainParams(max_iter=20)
    model = train_model(split_frame(frame, spec, params, None), spec, params).pipeline

    assert compile_pipeline(model) is None  # a tree per class: not a shape the path covers


def test_a_stored_compiled_model_scores_as_it_did(pipeline: Any) -> None:
    """What the registry keeps (pickled as BentoML keeps custom objects) reads back into a
    scorer that gives the same scores; a scorer stored in another format is not read."""
    import cloudpickle

    compiled = compile_pipeline(pipeline)
    assert compiled is not None
    rows = records(generate_transactions(500, seed=12, scenario="covariate_shift"))
    stored = io.BytesIO()
    cloudpickle.dump({"scorer": compiled.stored()}, stored)

    kept = pickle.loads(stored.getvalue())["scorer"]
    back = CompiledModel.from_stored(kept)

    assert back is not None
    assert np.array_equal(back.score(rows), sklearn_scores(pipeline, rows))
    assert "driftloop" not in stored.getvalue().decode("latin-1")  # plain data, no class of ours
    assert CompiledModel.from_stored({**kept, "format": STORED_FORMAT + 1}) is None
