"""The live judge's sequential test: valid under repeated looks, and quick to see a real
difference. Simulated outcomes (the judge only ever sees per-row losses)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from driftloop.sequential import (
    SequentialResult,
    confidence_radius,
    mixture_log_ratio,
    paired,
    two_sample,
)

RUNS = 1000
ROWS = 2000
LOOKS = range(100, ROWS + 1, 50)  # a look every 50 labelled rows, as a scheduled judge does


def losses(rng: np.random.Generator, improvement: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-row losses of two models on the same rows: a share the rows make hard for both, and
    each model's own part; the challenger's own part smaller by ``improvement``."""
    shared = rng.exponential(0.5, ROWS)
    champion = shared + rng.exponential(0.5, ROWS)
    challenger = shared + rng.exponential(0.5, ROWS) * (1 - improvement)
    return champion, challenger


def first_decision(looked: list[SequentialResult]) -> str:
    return next((r.verdict for r in looked if r.verdict != "undecided"), "undecided")


def shadow_run(rng: np.random.Generator, improvement: float) -> str:
    champion, challenger = losses(rng, improvement)
    return first_decision([paired(champion[:n], challenger[:n], alpha=0.05) for n in LOOKS])


def canary_run(rng: np.random.Generator, improvement: float) -> str:
    champion, challenger = losses(rng, improvement)
    # A 10 % canary: the challenger answered one row in ten, the champion the others.
    return first_decision(
        [
            two_sample(champion[n // 10 : n], challenger[: n // 10], alpha=0.05, min_samples=10)
            for n in LOOKS
        ]
    )


def test_equal_models_are_told_apart_in_at_most_five_percent_of_runs_despite_39_looks() -> None:
    rng = np.random.default_rng(20261201)

    shadow = [shadow_run(rng, 0.0) for _ in range(RUNS)]
    canary = [canary_run(rng, 0.0) for _ in range(RUNS)]

    assert shadow.count("better") <= 0.05 * RUNS
    assert canary.count("better") <= 0.05 * RUNS
    # Any decision at all between equal models (promote or reject) stays within α too.
    assert RUNS - shadow.count("undecided") <= 0.05 * RUNS
    assert RUNS - canary.count("undecided") <= 0.05 * RUNS


def test_the_same_looks_with_a_fixed_sample_test_would_promote_far_more_often() -> None:
    # What the sequential test protects against: a z-test at 0.05 read at every look.
    rng = np.random.default_rng(20261201)
    promoted = 0
    for _ in range(RUNS):
        champion, challenger = losses(rng, 0.0)
        differences = champion - challenger
        for n in LOOKS:
            d = differences[:n]
            if abs(d.mean() / (d.std(ddof=1) / math.sqrt(n))) > 1.96:
                promoted += 1
                break
    assert promoted > 0.15 * RUNS


def test_a_better_shadow_challenger_is_promoted_and_never_rejected() -> None:
    rng = np.random.default_rng(7)

    verdicts = [shadow_run(rng, 0.2) for _ in range(200)]

    assert verdicts.count("better") >= 0.95 * len(verdicts)
    assert "worse" not in verdicts


def test_a_worse_challenger_is_rejected() -> None:
    rng = np.random.default_rng(8)

    verdicts = [shadow_run(rng, -0.2) for _ in range(200)]

    assert verdicts.count("worse") >= 0.95 * len(verdicts)
    assert "better" not in verdicts


def test_no_verdict_before_the_minimum_number_of_labels() -> None:
    rng = np.random.default_rng(3)
    champion, challenger = losses(rng, 0.9)  # a difference anyone would see

    early = paired(champion[:50], challenger[:50], min_samples=100)
    later = paired(champion[:100], challenger[:100], min_samples=100)

    assert early.verdict == "undecided" and "50 labelled rows of the 100" in early.reason
    assert later.verdict == "better"
    assert later.samples == (100,)


def test_losses_that_do_not_vary_decide_nothing() -> None:
    same = paired(np.ones(200), np.ones(200))
    constant = two_sample(np.zeros(150), np.zeros(150))

    assert same.verdict == constant.verdict == "undecided"
    assert paired([], []).verdict == two_sample([1.0], []).verdict == "undecided"
    assert "do not vary" in same.reason


def test_the_confidence_sequence_is_where_the_ratio_stays_below_the_threshold() -> None:
    variance, tau2, alpha = 0.004, 0.01, 0.05
    radius = confidence_radius(variance, tau2, alpha)

    assert mixture_log_ratio(radius, variance, tau2) == pytest.approx(math.log(1 / alpha))
    assert mixture_log_ratio(0.99 * radius, variance, tau2) < math.log(1 / alpha)
    result = paired([2.0, 1.0] * 100, [1.0, 0.5] * 100)
    assert result.lower < result.estimate < result.upper
    assert result.verdict == "better" and result.lower > 0
