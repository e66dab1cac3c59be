"""Behavioural tests of the fraud model: what it does, not that a function ran.

Invariance: a field that carries no signal (the customer's age) does not move the score.
Direction: pushing a known fraud signal further (more distance from home) never lowers the score,
and a known protective signal (an older account) never raises it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from driftloop.datasets.spec import load_spec
from driftloop.datasets.transactions import generate_transactions
from driftloop.training import TrainParams, features_of, split_frame, train_model

SPEC = load_spec("transactions")


@pytest.fixture(scope="module", params=["hist_gradient_boosting", "logistic_regression"])
def model_and_rows(request: pytest.FixtureRequest) -> tuple[object, pd.DataFrame]:
    params = TrainParams(estimator=request.param)
    frame = generate_transactions(20_000, seed=11)
    trained = train_model(split_frame(frame, SPEC, params, None), SPEC, params)
    return trained.pipeline, features_of(generate_transactions(3000, seed=12), SPEC)


def scores(model: object, rows: pd.DataFrame) -> np.ndarray:
    return model.predict_proba(rows)[:, 1]  # type: ignore[attr-defined,no-any-return]


def test_customer_age_does_not_move_the_score(model_and_rows: tuple[object, pd.DataFrame]) -> None:
    model, rows = model_and_rows
    base = scores(model, rows)

    for age in (18.0, 45.0, 95.0):
        assert np.array_equal(scores(model, rows.assign(customer_age=age)), base)


def test_more_distance_from_home_never_lowers_the_score(
    model_and_rows: tuple[object, pd.DataFrame],
) -> None:
    model, rows = model_and_rows
    base = scores(model, rows)

    further = scores(
        model, rows.assign(distance_from_home_km=rows["distance_from_home_km"] * 5 + 100)
    )

    assert np.all(further >= base - 1e-12)
    assert further.mean() > base.mean()


def test_an_older_account_never_raises_the_score(
    model_and_rows: tuple[object, pd.DataFrame],
) -> None:
    model, rows = model_and_rows
    base = scores(model, rows)

    older = scores(model, rows.assign(account_age_days=rows["account_age_days"] + 3000))

    assert np.all(older <= base + 1e-12)
