"""The judge flow: decide every rollout on labelled live outcomes (``driftloop.rollout``).

Run on a schedule and when the monitor reports labelled traffic on a rollout (see prefect.yaml).
For each model with a challenger on live traffic it looks once: a challenger that is better at
the rollout's α is promoted (the inference service swaps it in), a worse one is withdrawn (it
answers nobody again), otherwise the rollout keeps waiting. Every decision is an event
(``driftloop.model.promoted`` / ``driftloop.model.rejected`` with reason ``live``, the
statistic and the sample sizes), a Grafana annotation, and the run's markdown artifact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from driftloop.prediction_log import PredictionLog
from driftloop.project import find_project
from driftloop.promotion import Actor, Promotions
from driftloop.registry import ModelRegistry
from driftloop.rollout import Judgement, judge_rollout
from flows.common import emit, run_url, settings


@dataclass(frozen=True)
class JudgeOutcome:
    """One model's rollout as the run found and left it."""

    model: str
    challenger: str
    role: str
    decision: str
    reason: str
    evidence: dict[str, object]


@flow(name="judge", log_prints=False)
def judge(model: str | None = None, started_by: str = "") -> list[JudgeOutcome]:
    """Look at the rollout of ``model`` (default: every model of the project that has one)."""
    logger = get_run_logger()
    config = settings()
    project = find_project(config.project)
    project.make_importable()
    registry = ModelRegistry.from_settings(config)
    prediction_log = PredictionLog(config.prediction_log_url)
    promotions = Promotions(registry, config, announce=lambda event: emit(event, config))
    actor = (
        Actor("automation", started_by, run_url())
        if started_by
        else Actor("flow_run", str(flow_run.name), run_url())
    )
    outcomes: list[JudgeOutcome] = []
    judgements: list[Judgement] = []
    try:
        for declared in project.models:
            if model and declared.name != model:
                continue
            challenger = registry.challenger(declared.name)
            champion = registry.stages.production_version(declared.name)
            if challenger is None or champion is None:
                continue
            started = registry.stages.rollout_started_at(declared.name, challenger.version)
            judgement = judge_rollout(
                prediction_log,
                model=declared.name,
                task=declared.task,
                champion=champion,
                challenger=challenger.version,
                role=challenger.stage,  # type: ignore[arg-type]
                started_at=datetime.fromtimestamp(started or 0, UTC),
                config=declared.config.rollout,
            )
            judgements.append(judgement)
            logger.info("%s: %s (%s)", challenger.tag, judgement.decision, judgement.reason)
            evidence = judgement.evidence()
            if judgement.decision == "promote":
                promotions.promote_challenger(
                    challenger, trigger="live", actor=actor, reasons=[judgement.reason],
                    evidence=evidence,
                )  # fmt: skip
            elif judgement.decision == "reject":
                promotions.withdraw(
                    challenger, trigger="live", actor=actor, reasons=[judgement.reason],
                    evidence=evidence,
                )  # fmt: skip
            elif judgement.overdue:
                logger.warning("%s: %s", challenger.tag, judgement.reason)
            outcomes.append(
                JudgeOutcome(
                    declared.name, challenger.version, challenger.stage, judgement.decision,
                    judgement.reason, evidence,
                )
            )  # fmt: skip
    finally:
        prediction_log.dispose()
        registry.dispose()
    create_markdown_artifact(
        report(judgements),
        key="rollout-judgement",
        description=", ".join(f"{o.model}: {o.decision}" for o in outcomes) or "no rollout",
    )
    return outcomes


def report(judgements: list[Judgement]) -> str:
    """The run's artifact: each rollout's decision and the evidence behind it."""
    if not judgements:
        return "# Rollouts\n\nNo model has a challenger on live traffic.\n"
    lines = ["# Rollouts", ""]
    for j in judgements:
        test = j.test
        samples = " / ".join(str(n) for n in test.samples)
        lines += [
            f"## {j.model}: {j.decision}",
            "",
            f"{j.role} `{j.challenger}` beside production `{j.champion}`, for {j.hours:.2f} h"
            + (" (overdue)" if j.overdue else "")
            + f". {j.reason}.",
            "",
            "| | |",
            "|---|---|",
            f"| per-row loss | {j.loss} |",
            f"| mean loss, production | {j.mean_loss['champion']:.5f} |",
            f"| mean loss, {j.role} | {j.mean_loss['challenger']:.5f} |",
            f"| difference (production − {j.role}) | {test.estimate:+.5f} |",
            f"| always-valid {1 - math.exp(-test.threshold):.0%} bounds | "
            f"[{test.lower:+.5f}, {test.upper:+.5f}] |",
            f"| log Λ (decides at log 1/α = {test.threshold:.3f}) | {test.log_ratio:.3f} |",
            f"| labelled rows ({'pairs' if j.role == 'shadow' else 'production / canary'}) "
            f"| {samples} |",
            "",
        ]
    return "\n".join(lines)
