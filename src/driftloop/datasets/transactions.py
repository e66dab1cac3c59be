"""Synthetic card transactions with a fraud label, deterministic by seed, with drift scenarios.

Scenarios:
- ``baseline``: the world the first model learns from. Fraud is mostly large, foreign, online
  purchases of electronics and jewellery at night, far from home, on young accounts.
- ``covariate_shift``: the customer base changes, not the fraud mechanism: amounts grow about
  2.5x, and the merchant and channel mix moves towards online retail, electronics and travel.
- ``concept_drift``: fraudsters switch to card testing: bursts of small, domestic, contactless
  or online transactions at groceries and petrol stations on cards with many recent transactions.
  The fraud pattern the baseline model learned no longer holds, and the burstiness also moves
  ``txn_count_24h`` and the channel mix, so a monitor sees it in the inputs too.

Every batch has close to ``fraud_rate`` fraud (2-5 % by default): the intercept of the fraud
model is calibrated on the batch's own features.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Literal

import numpy as np
import pandas as pd

Scenario = Literal["baseline", "covariate_shift", "concept_drift"]
SCENARIOS: tuple[Scenario, ...] = ("baseline", "covariate_shift", "concept_drift")

MERCHANTS = (
    "grocery",
    "restaurant",
    "gas",
    "online_retail",
    "electronics",
    "travel",
    "entertainment",
    "jewelry",
)
CHANNELS = ("chip", "swipe", "contactless", "online")
DEVICES = ("terminal", "mobile", "desktop")
DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
# One transaction as a client sends it to /predict (a late-night foreign online purchase).
EXAMPLE_RECORD: dict[str, object] = {
    "amount": 120.5,
    "merchant_category": "electronics",
    "channel": "online",
    "device": "mobile",
    "hour": 3,
    "customer_age": 40,
    "account_age_days": 30,
    "distance_from_home_km": 800.0,
    "txn_count_24h": 2,
    "is_foreign": True,
}


@dataclass(frozen=True)
class _Mix:
    merchants: tuple[float, ...]
    channels: tuple[float, ...]
    amount_log_mean: float
    count_lambda: float


_MIXES: dict[Scenario, _Mix] = {
    "baseline": _Mix(
        merchants=(0.30, 0.18, 0.14, 0.12, 0.07, 0.06, 0.10, 0.03),
        channels=(0.40, 0.10, 0.35, 0.15),
        amount_log_mean=3.6,
        count_lambda=3.0,
    ),
    "covariate_shift": _Mix(
        merchants=(0.12, 0.10, 0.06, 0.30, 0.18, 0.16, 0.05, 0.03),
        channels=(0.20, 0.05, 0.25, 0.50),
        amount_log_mean=3.6 + np.log(2.5),
        count_lambda=3.0,
    ),
    "concept_drift": _Mix(
        merchants=(0.36, 0.16, 0.20, 0.10, 0.05, 0.04, 0.07, 0.02),
        channels=(0.25, 0.05, 0.45, 0.25),
        amount_log_mean=3.4,
        count_lambda=6.0,
    ),
}


def generate_transactions(
    rows: int,
    *,
    seed: int = 0,
    scenario: Scenario = "baseline",
    fraud_rate: float = 0.03,
    start: datetime = DEFAULT_START,
    duration: timedelta = timedelta(hours=1),
    baseline_rule: bool = False,
) -> pd.DataFrame:
    """``rows`` transactions of ``scenario``, identical for the same arguments.

    By default each batch's fraud intercept is calibrated so that close to ``fraud_rate`` of it
    is fraud. With ``baseline_rule``, P(fraud | transaction) is the baseline world's instead
    (its intercept calibrated once, on baseline transactions at ``fraud_rate``): the fraud rate
    then moves with the features, and a ``covariate_shift`` batch is a pure covariate shift.
    """
    if rows < 1:
        raise ValueError("rows must be at least 1")
    if scenario not in _MIXES:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    if not 0 < fraud_rate < 0.5:
        raise ValueError("fraud_rate must be between 0 and 0.5")
    if baseline_rule and scenario == "concept_drift":
        raise ValueError("concept_drift changes the fraud rule: baseline_rule cannot keep it")
    rng = np.random.default_rng(seed)
    drawn = _draw(rows, rng, scenario)
    intercept = (
        _baseline_intercept(fraud_rate) if baseline_rule else _calibrate(drawn.risk, fraud_rate)
    )
    is_fraud = rng.random(rows) < _sigmoid(drawn.risk + intercept)

    offsets = np.sort(rng.uniform(0, duration.total_seconds(), size=rows))
    event_time = pd.to_datetime(start) + pd.to_timedelta(offsets, unit="s")
    ids = np.char.add(f"{scenario[:2]}{seed:06d}-", np.char.zfill(np.arange(rows).astype(str), 8))

    return pd.DataFrame(
        {
            "transaction_id": ids,
            "event_time": event_time,
            **drawn.columns,
            "is_fraud": is_fraud.astype(np.int64),
        }
    )


@dataclass(frozen=True)
class _Drawn:
    columns: dict[str, np.ndarray]
    risk: np.ndarray  # the fraud rule's log-odds, before the intercept


def _draw(rows: int, rng: np.random.Generator, scenario: Scenario) -> _Drawn:
    """The transactions' features and their fraud risk under ``scenario``'s rule."""
    mix = _MIXES[scenario]
    merchant = rng.choice(len(MERCHANTS), size=rows, p=mix.merchants)
    channel = rng.choice(len(CHANNELS), size=rows, p=mix.channels)
    online = channel == CHANNELS.index("online")
    device = np.where(
        online,
        rng.choice([1, 2], size=rows, p=[0.6, 0.4]),
        np.where(rng.random(rows) < 0.9, 0, 1),
    )
    merchant_scale = np.array([0.0, 0.1, 0.0, 0.4, 1.2, 1.3, 0.2, 1.6])[merchant]
    amount = np.exp(rng.normal(mix.amount_log_mean + merchant_scale, 0.9, size=rows))
    amount = np.clip(np.round(amount, 2), 0.5, 45_000.0)
    hour = np.clip(np.round(rng.normal(14, 5, size=rows)), 0, 23).astype(np.int64)
    customer_age = np.clip(np.round(rng.normal(45, 15, size=rows)), 18, 95).astype(np.int64)
    account_age_days = np.clip(rng.gamma(2.0, 900.0, size=rows), 0, 29_000).astype(np.int64)
    distance = np.clip(rng.lognormal(2.0, 1.4, size=rows), 0, 19_000).round(2)
    is_foreign = rng.random(rows) < np.where(online, 0.15, 0.04)
    txn_count = np.clip(rng.poisson(mix.count_lambda, size=rows), 0, 400).astype(np.int64)
    distance = np.where(is_foreign, distance + rng.uniform(200, 3000, size=rows), distance)

    if scenario == "concept_drift":
        risk = (
            -1.2 * np.log(amount)
            + 2.0 * (channel == CHANNELS.index("contactless"))
            + 1.2 * online
            + 1.6 * np.isin(merchant, [MERCHANTS.index("grocery"), MERCHANTS.index("gas")])
            + 0.5 * txn_count
            - 1.0 * is_foreign
        )
    else:
        risk = (
            0.8 * np.log(amount)
            + 1.6 * is_foreign
            + 1.1 * online
            + 1.2 * np.isin(merchant, [MERCHANTS.index("electronics"), MERCHANTS.index("jewelry")])
            + 0.9 * ((hour <= 5) | (hour >= 23))
            + 0.35 * np.log1p(distance)
            - 0.0006 * account_age_days
        )
    columns = {
        "amount": amount,
        "merchant_category": np.array(MERCHANTS, dtype=object)[merchant],
        "channel": np.array(CHANNELS, dtype=object)[channel],
        "device": np.array(DEVICES, dtype=object)[device],
        "hour": hour,
        "customer_age": customer_age,
        "account_age_days": account_age_days,
        "distance_from_home_km": distance,
        "txn_count_24h": txn_count,
        "is_foreign": is_foreign,
    }
    return _Drawn(columns, risk)


@lru_cache(maxsize=8)
def _baseline_intercept(rate: float) -> float:
    """The baseline world's intercept at ``rate``, calibrated once on 200,000 of its rows."""
    return _calibrate(_draw(200_000, np.random.default_rng(0), "baseline").risk, rate)


def _sigmoid(values: np.ndarray) -> np.ndarray:
    result: np.ndarray = 1.0 / (1.0 + np.exp(-values))
    return result


def _calibrate(risk: np.ndarray, rate: float) -> float:
    """The intercept that makes the mean fraud probability equal ``rate`` (bisection)."""
    low, high = -60.0, 60.0
    for _ in range(60):
        middle = (low + high) / 2
        if _sigmoid(risk + middle).mean() > rate:
            high = middle
        else:
            low = middle
    return (low + high) / 2
