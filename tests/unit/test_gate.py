"""The champion/challenger gate, as a pure decision."""

from __future__ import annotations

from driftloop.gate import GatePolicy, decide

PRODUCTION = {"roc_auc": 0.85, "pr_auc": 0.40, "f1": 0.45, "brier": 0.030}
POLICY = GatePolicy(margin=0.01, guards={"pr_auc": 0.02, "brier": 0.005}, floor={"roc_auc": 0.7})


def test_first_model_is_promoted_when_it_clears_the_floor() -> None:
    assert decide({**PRODUCTION}, None, POLICY).promote
    refused = decide({**PRODUCTION, "roc_auc": 0.65}, None, POLICY)
    assert not refused.promote
    assert "does not clear the floor" in refused.reasons[0]


def test_challenger_must_beat_production_by_the_margin() -> None:
    better = decide({**PRODUCTION, "roc_auc": 0.87}, PRODUCTION, POLICY)
    barely = decide({**PRODUCTION, "roc_auc": 0.855}, PRODUCTION, POLICY)

    assert better.promote
    assert not barely.promote
    assert "+0.0050; needs at least +0.0100" in barely.reasons[0]


def test_a_guard_regression_past_its_tolerance_refuses_even_a_better_primary() -> None:
    worse_pr = decide({**PRODUCTION, "roc_auc": 0.90, "pr_auc": 0.35}, PRODUCTION, POLICY)
    worse_brier = decide({**PRODUCTION, "roc_auc": 0.90, "brier": 0.040}, PRODUCTION, POLICY)
    tolerated = decide({**PRODUCTION, "roc_auc": 0.90, "pr_auc": 0.39}, PRODUCTION, POLICY)

    assert not worse_pr.promote and any("guard pr_auc" in r for r in worse_pr.reasons)
    assert not worse_brier.promote and any("guard brier" in r for r in worse_brier.reasons)
    assert tolerated.promote


def test_lower_is_better_for_a_brier_primary_metric() -> None:
    policy = GatePolicy(primary_metric="brier", margin=0.001, guards={}, floor={})

    assert decide({**PRODUCTION, "brier": 0.025}, PRODUCTION, policy).promote
    assert not decide({**PRODUCTION, "brier": 0.035}, PRODUCTION, policy).promote
