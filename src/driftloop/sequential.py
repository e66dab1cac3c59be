"""Sequential comparison of a challenger with the champion that stays valid when it is looked at
again and again: the mixture sequential probability ratio test (mSPRT).

A live judge looks at the labelled outcomes every few minutes and stops at the first look that
is convincing. A fixed-sample test read that way finds a difference between equal models far
more often than its α says (with a look every 50 labels up to 2,000, a z-test at 0.05 "wins" in
about three runs of ten between equal models). The mSPRT does not: its statistic Λₙ is a
nonnegative martingale under "no difference", so by Ville's inequality P(Λₙ ≥ 1/α at any
look) ≤ α, however often and whenever one looks (Robbins 1970; Johari, Koomen, Pekelis and
Walsh, "Always Valid Inference: Continuous Monitoring of A/B Tests", Operations Research 70(3),
2022; the test behind Optimizely's stats engine).

The estimate is a difference of mean per-row losses, ``champion − challenger`` (positive: the
challenger loses less), with variance V estimated from the rows (the plug-in of Johari et al.,
sound once there are a few dozen rows; ``min_samples`` keeps the first looks out). With a
normal mixture N(0, τ²) over the true difference θ the ratio has a closed form:

    log Λ = ½·log(V / (V + τ²)) + Δ²·τ² / (2·V·(V + τ²))

and ``{θ : Λ(θ) < 1/α}`` is an always-valid confidence sequence for θ. τ is given in units of the
per-row loss's standard deviation (``effect``): the size of difference worth detecting quickly.

- Shadow traffic gives pairs (both models scored the same request): the test runs on the
  per-row differences, V = s²_d / n.
- A canary gives two samples (each request answered by one model): V = s²₁/n₁ + s²₂/n₂.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

Verdict = Literal["better", "worse", "undecided"]


@dataclass(frozen=True)
class SequentialResult:
    """One look: the estimated difference of mean losses (champion − challenger), its
    always-valid confidence bounds, the log mixture likelihood ratio and the verdict."""

    verdict: Verdict
    estimate: float
    lower: float
    upper: float
    log_ratio: float
    threshold: float
    """log(1/α): the verdict is decided once ``log_ratio`` reaches it."""
    samples: tuple[int, ...]
    """Rows behind the look: one count for pairs, (champion, challenger) for two samples."""
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {
            "verdict": self.verdict,
            "estimate": self.estimate,
            "lower": self.lower,
            "upper": self.upper,
            "log_ratio": self.log_ratio,
            "threshold": self.threshold,
            "samples": list(self.samples),
            "reason": self.reason,
        }


def mixture_log_ratio(estimate: float, variance: float, tau2: float) -> float:
    """log Λ of an estimate ~ N(θ, variance) against θ = 0, under the mixture θ ~ N(0, tau2)."""
    return 0.5 * math.log(variance / (variance + tau2)) + estimate**2 * tau2 / (
        2 * variance * (variance + tau2)
    )


def confidence_radius(variance: float, tau2: float, alpha: float) -> float:
    """Half-width of the always-valid (1 − α) confidence sequence around the estimate."""
    ratio = tau2 / variance
    return math.sqrt(variance * (1 + ratio) / ratio * (2 * math.log(1 / alpha) + math.log1p(ratio)))


def judge(
    estimate: float,
    variance: float,
    scale: float,
    samples: tuple[int, ...],
    *,
    alpha: float,
    effect: float,
    min_samples: int,
) -> SequentialResult:
    """The verdict of one look at ``estimate`` (its ``variance``; ``scale``: the per-row loss's
    standard deviation, the unit of ``effect``)."""
    threshold = math.log(1 / alpha)
    if min(samples) < min_samples:
        return SequentialResult(
            "undecided", estimate, -math.inf, math.inf, 0.0, threshold, samples,
            f"{min(samples)} labelled rows of the {min_samples} a decision needs",
        )  # fmt: skip
    if not variance > 0 or not scale > 0:
        return SequentialResult(
            "undecided", estimate, -math.inf, math.inf, 0.0, threshold, samples,
            "the losses do not vary yet: nothing to tell the models apart by",
        )  # fmt: skip
    tau2 = (effect * scale) ** 2
    log_ratio = mixture_log_ratio(estimate, variance, tau2)
    radius = confidence_radius(variance, tau2, alpha)
    lower, upper = estimate - radius, estimate + radius
    if log_ratio < threshold:
        verdict: Verdict = "undecided"
        reason = f"log Λ = {log_ratio:.2f} below log(1/α) = {threshold:.2f}"
    else:
        verdict = "better" if estimate > 0 else "worse"
        which = "less" if estimate > 0 else "more"
        reason = (
            f"the challenger loses {which} per row: {estimate:+.4g} "
            f"[{lower:+.4g}, {upper:+.4g}], log Λ = {log_ratio:.2f} ≥ log(1/α) = {threshold:.2f}"
        )
    return SequentialResult(verdict, estimate, lower, upper, log_ratio, threshold, samples, reason)


def paired(
    champion_loss: ArrayLike,
    challenger_loss: ArrayLike,
    *,
    alpha: float = 0.05,
    effect: float = 0.1,
    min_samples: int = 100,
) -> SequentialResult:
    """Shadow: both models scored the same rows; test the per-row loss differences."""
    differences = np.asarray(champion_loss, dtype=float) - np.asarray(challenger_loss, dtype=float)
    n = differences.size
    if n < 2:  # no spread to estimate: undecided
        return judge(0.0, 0.0, 0.0, (n,), alpha=alpha, effect=effect, min_samples=min_samples)
    spread = float(differences.std(ddof=1))
    return judge(
        float(differences.mean()), spread**2 / n, spread, (n,),
        alpha=alpha, effect=effect, min_samples=min_samples,
    )  # fmt: skip


def two_sample(
    champion_loss: ArrayLike,
    challenger_loss: ArrayLike,
    *,
    alpha: float = 0.05,
    effect: float = 0.1,
    min_samples: int = 100,
) -> SequentialResult:
    """Canary: each row was answered by one of the models; test the difference of mean losses."""
    champion = np.asarray(champion_loss, dtype=float)
    challenger = np.asarray(challenger_loss, dtype=float)
    samples = (champion.size, challenger.size)
    if min(samples) < 2:  # no spread to estimate: undecided
        return judge(0.0, 0.0, 0.0, samples, alpha=alpha, effect=effect, min_samples=min_samples)
    var_champion, var_challenger = float(champion.var(ddof=1)), float(challenger.var(ddof=1))
    variance = var_champion / champion.size + var_challenger / challenger.size
    pooled = math.sqrt(
        ((champion.size - 1) * var_champion + (challenger.size - 1) * var_challenger)
        / (champion.size + challenger.size - 2)
    )
    return judge(
        float(champion.mean() - challenger.mean()), variance, pooled, samples,
        alpha=alpha, effect=effect, min_samples=min_samples,
    )  # fmt: skip
