"""Markdown reports for Prefect artifacts: what a training run produced and why it was judged so."""

from __future__ import annotations

from driftloop.gate import GateDecision
from driftloop.registry import ModelVersion
from driftloop.tasks import ALL_METRICS


def training_report(
    version: ModelVersion,
    decision: GateDecision | None,
    production_metrics: dict[str, float] | None,
    compared: dict[str, float] | None = None,
    compared_on: str = "",
    bento: str | None = None,
) -> str:
    """Metrics (beside production's on the same rows), the verdict, the Bento it was packaged
    as (if it was), and the lineage.

    ``compared`` are this version's metrics on the rows the gate judged, when those are not the
    whole holdout (``compared_on`` says which rows).
    """
    ours = compared or version.metrics
    lines = [
        f"# {version.tag}",
        "",
        f"Trained on lakeFS commit `{version.data_commit}` ({len(version.batches)} batches), "
        f"code `{version.git_sha}`, holdout: {version.split}, "
        f"{int(version.metrics.get('rows', 0))} rows.",
        "",
        *([f"The gate compared both models on {compared_on}.", ""] if compared_on else []),
        "| metric | this version | production |",
        "|---|---|---|",
    ]
    for name in (metric for metric in ALL_METRICS if metric in ours):
        theirs = f"{production_metrics[name]:.4f}" if production_metrics else "–"
        lines.append(f"| {name} | {ours[name]:.4f} | {theirs} |")
    if "threshold" in version.metrics:
        lines.append(f"| threshold | {version.metrics['threshold']:.2f} | |")
    if decision is not None:
        verdict = "**promoted to production**" if decision.promote else "**rejected**"
        lines += ["", f"Gate: {verdict}.", ""] + [f"- {reason}" for reason in decision.reasons]
    if bento:
        lines += ["", f"Packaged as Bento `{bento}` (`bentoml serve {bento}`)."]
    lines += [
        "",
        "## Lineage",
        "",
        "| batch | rows | landed by merge | ingestion run |",
        "|---|---|---|---|",
    ]
    for batch in version.batches:
        run = f"[flow run]({batch.run_url})" if batch.run_url else "–"
        lines.append(f"| {batch.batch_id} | {batch.rows} | `{batch.merge_commit[:12]}` | {run} |")
    return "\n".join(lines) + "\n"
