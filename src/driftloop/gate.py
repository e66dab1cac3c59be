"""The champion/challenger gate: no model reaches production unless it beats the one there."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from driftloop.tasks import ALL_METRICS, DEFAULT_GATES, LOWER_IS_BETTER, METRICS, Task


def known_metric(name: str) -> str:
    if name not in ALL_METRICS:
        raise ValueError(
            f"{name!r} is not a holdout metric; choose one of {', '.join(ALL_METRICS)}"
        )
    return name


def known_metrics(values: dict[str, float]) -> dict[str, float]:
    for name in values:
        known_metric(name)
    return values


class GatePolicy(BaseModel):
    """When a challenger may replace production."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    primary_metric: Annotated[str, AfterValidator(known_metric)] = Field(
        default="roc_auc", description="Metric the challenger must beat."
    )
    margin: float = Field(
        default=0.005, ge=0, description="By at least this much, on the same holdout."
    )
    guards: Annotated[dict[str, float], AfterValidator(known_metrics)] = Field(
        default_factory=lambda: {"pr_auc": 0.02, "brier": 0.005},
        description="Metric -> how much it may get worse before the challenger is refused.",
    )
    floor: Annotated[dict[str, float], AfterValidator(known_metrics)] = Field(
        default_factory=lambda: {"roc_auc": 0.7},
        description="Absolute minimums; the first model must clear them to be promoted.",
    )


def policy_for(task: Task, *layers: dict[str, object]) -> GatePolicy:
    """The gate of a model of ``task``: the task's defaults, then each of ``layers`` (the
    settings' explicitly set fields, the project's overrides) on top.

    Raises:
        ValueError: a metric the policy names is not one a model of ``task`` records.
    """
    merged: dict[str, object] = dict(DEFAULT_GATES[task])
    for layer in layers:
        merged.update(layer)
    policy = GatePolicy.model_validate(merged)
    named = [policy.primary_metric, *policy.guards, *policy.floor]
    foreign = [name for name in named if name not in METRICS[task]]
    if foreign:
        raise ValueError(
            f"the gate names {', '.join(foreign)}, which a {task} model does not record "
            f"({', '.join(METRICS[task])})"
        )
    return policy


@dataclass(frozen=True)
class GateDecision:
    """Whether the challenger goes to production, and every reason for the answer."""

    promote: bool
    reasons: list[str] = field(default_factory=list)


def _better(metric: str, new: float, old: float) -> float:
    """How much better ``new`` is than ``old`` (negative when worse)."""
    return old - new if metric in LOWER_IS_BETTER else new - old


def decide(
    challenger: dict[str, float], production: dict[str, float] | None, policy: GatePolicy
) -> GateDecision:
    """Compare a challenger's holdout metrics with production's on the same holdout."""
    reasons: list[str] = []
    floor_ok = True
    for metric, minimum in policy.floor.items():
        value = challenger[metric]
        cleared = value <= minimum if metric in LOWER_IS_BETTER else value >= minimum
        if not cleared:
            floor_ok = False
            reasons.append(f"{metric} {value:.4f} does not clear the floor {minimum:.4f}")
    if production is None:
        if floor_ok:
            reasons.append("no model in production; the challenger clears every floor")
        return GateDecision(floor_ok, reasons)

    metric = policy.primary_metric
    gain = _better(metric, challenger[metric], production[metric])
    primary_ok = gain >= policy.margin
    reasons.append(
        f"{metric} {challenger[metric]:.4f} vs production {production[metric]:.4f} "
        f"({gain:+.4f}; needs at least {policy.margin:+.4f})"
    )
    guards_ok = True
    for guard, tolerance in policy.guards.items():
        change = _better(guard, challenger[guard], production[guard])
        if change < -tolerance:
            guards_ok = False
            reasons.append(
                f"guard {guard} regresses by {-change:.4f} "
                f"({challenger[guard]:.4f} vs {production[guard]:.4f}; tolerance {tolerance:.4f})"
            )
    return GateDecision(floor_ok and primary_ok and guards_ok, reasons)
