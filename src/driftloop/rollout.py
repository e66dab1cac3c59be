"""The live judge of a rollout: is the challenger better than production on labelled traffic?

A rollout puts a version that passed the offline gate beside production (registry stage
``shadow`` or ``canary``, see ``driftloop.registry``). The judge reads the labelled outcomes the
prediction log holds since the rollout started and runs the mSPRT of ``driftloop.sequential``
on each row's loss:

- shadow: both models scored the same requests, so the test is paired (per-row differences);
- canary: each request was answered by one model, so the test compares two samples.

The per-row loss is the task's proper per-row counterpart of its primary metric: the Brier
score of the score for a binary model (ROC AUC has no per-row form; the Brier score is a
proper scoring rule that rewards the same ranking and calibration), the 0/1 error of the answered
class for a multiclass model (the prediction log keeps the answered class and its probability,
not every class's), and the squared error for a regression model (what R² is made of).

Outcomes: ``promote`` (the challenger loses less, at the rollout's α), ``reject`` (it loses more)
or ``wait`` (not enough labels yet, or no verdict). A rollout undecided for longer than its
``max_hours`` keeps waiting and is reported overdue (an alert, and a person decides with
``driftloop model rollout promote|abort``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import pandas as pd

from driftloop.prediction_log import PredictionLog
from driftloop.project import RolloutConfig
from driftloop.registry import Role
from driftloop.sequential import SequentialResult, paired, two_sample
from driftloop.tasks import Task

Decision = Literal["promote", "reject", "wait"]

LOSSES: dict[Task, str] = {
    "binary": "Brier score",
    "multiclass": "0/1 error",
    "regression": "squared error",
}


def row_losses(task: Task, scores: Any, labels: Any, true_labels: Any) -> np.ndarray:
    """Each row's loss under the task's per-row loss (see the module's docstring)."""
    truth = np.asarray(true_labels, dtype=float)
    if task == "binary":
        return np.asarray((np.asarray(scores, dtype=float) - truth) ** 2)
    if task == "multiclass":
        return (np.asarray(labels, dtype=float) != truth).astype(float)
    return np.asarray((np.asarray(scores, dtype=float) - truth) ** 2)


@dataclass(frozen=True)
class Judgement:
    """One look at a rollout: the decision, the test behind it, and the numbers to show."""

    model: str
    champion: str
    challenger: str
    role: Role
    decision: Decision
    reason: str
    loss: str
    test: SequentialResult
    started_at: datetime
    looked_at: datetime
    overdue: bool
    max_hours: float
    mean_loss: dict[str, float] = field(default_factory=dict)
    """Mean per-row loss of each model on the rows judged (champion, challenger)."""

    @property
    def hours(self) -> float:
        return (self.looked_at - self.started_at).total_seconds() / 3600

    def evidence(self) -> dict[str, Any]:
        """What the decision rests on, for events and artifacts."""
        return {
            "role": self.role,
            "champion": self.champion,
            "challenger": self.challenger,
            "loss": self.loss,
            "mean_loss": self.mean_loss,
            "test": "mSPRT (Johari et al. 2022), "
            + ("paired" if self.role == "shadow" else "two-sample"),
            **self.test.as_dict(),
            "hours": round(self.hours, 3),
            "overdue": self.overdue,
        }


def judge_rollout(
    log: PredictionLog,
    *,
    model: str,
    task: Task,
    champion: str,
    challenger: str,
    role: Role,
    started_at: datetime,
    config: RolloutConfig,
    now: datetime | None = None,
) -> Judgement:
    """Look once at the rollout of ``challenger`` beside ``champion`` (see the module)."""
    now = now or datetime.now(UTC)
    options = {"alpha": config.alpha, "effect": config.effect, "min_samples": config.min_labels}
    if role == "shadow":
        pairs = log.shadow_pairs(model, champion, challenger, started_at)
        champion_loss = row_losses(
            task, pairs["champion_score"], pairs["champion_label"], pairs["true_label"]
        )
        challenger_loss = row_losses(
            task, pairs["challenger_score"], pairs["challenger_label"], pairs["true_label"]
        )
        test = paired(champion_loss, challenger_loss, **options)  # type: ignore[arg-type]
    else:
        answered = log.answered_outcomes(model, champion, started_at, role=None)
        canary = log.answered_outcomes(model, challenger, started_at, role="canary")
        champion_loss = _losses(task, answered)
        challenger_loss = _losses(task, canary)
        test = two_sample(champion_loss, challenger_loss, **options)  # type: ignore[arg-type]
    overdue = (now - started_at).total_seconds() > config.max_hours * 3600
    if test.verdict == "better":
        decision: Decision = "promote"
        reason = f"the {role} is better live: {test.reason}"
    elif test.verdict == "worse":
        decision = "reject"
        reason = f"the {role} is worse live: {test.reason}"
    else:
        decision = "wait"
        reason = test.reason + (
            f"; undecided after more than {config.max_hours:g} h (overdue)" if overdue else ""
        )
    means = {
        "champion": float(np.mean(champion_loss)) if len(champion_loss) else float("nan"),
        "challenger": float(np.mean(challenger_loss)) if len(challenger_loss) else float("nan"),
    }
    return Judgement(
        model, champion, challenger, role, decision, reason, LOSSES[task], test,
        started_at, now, overdue, config.max_hours, means,
    )  # fmt: skip


def _losses(task: Task, outcomes: pd.DataFrame) -> np.ndarray:
    return row_losses(task, outcomes["score"], outcomes["label"], outcomes["true_label"])
