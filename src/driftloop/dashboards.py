"""driftloop's Grafana dashboards, generated from code.

    python -m driftloop.dashboards        (writes grafana/dashboards/*.json)

Two dashboards over the Prometheus datasource provisioned as uid ``driftloop-prometheus``:
"Model health" (drift share, per-feature drift, prediction drift, score distribution, live
performance in each model's own metrics, performance estimated before labels with its band,
label coverage and delay, the version serving, retrain triggers, and a rollout
row: predictions and scores per role, the live loss per role, the judge's loss difference with
its always-valid bounds, labels and age; a ``model`` variable picks one model, several or all)
and "Service" (requests/s, p50 and p99 latency, error rate, prediction-log drops, monitor check
time). The JSON in git must equal what this module generates (a test checks), so a change goes
through here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "driftloop-prometheus"}
FOLDER = Path(__file__).resolve().parents[2] / "grafana" / "dashboards"


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[tuple[str, str], ...]  # (PromQL, legend)
    kind: str = "timeseries"
    unit: str = "short"
    description: str = ""
    during_rollout: bool = False
    """Shows data only while a model has a challenger on live traffic (shadow or canary)."""


# The model-health dashboard's variable: the models a service announces (driftloop_model_info).
MODEL = 'model=~"$model"'
ALL_MODELS = ".*"  # what Grafana puts in for $model when "All" is chosen (allValue below)
MODEL_VARIABLE = {
    "name": "model",
    "label": "Model",
    "type": "query",
    "datasource": DATASOURCE,
    "definition": "label_values(driftloop_model_info, model)",
    "query": {"query": "label_values(driftloop_model_info, model)", "refId": "models"},
    "refresh": 2,
    "includeAll": True,
    "multi": True,
    "allValue": ALL_MODELS,
    "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    "sort": 1,
}

MODEL_HEALTH = (
    Panel(
        "Drift share over time",
        ((f"max by (model) (driftloop_drift_share{{{MODEL}}})", "{{model}}"),),
        unit="percentunit",
        description="Share of features drifted in the monitor's latest window; alert at 30 %.",
    ),
    Panel(
        "Per-feature drift",
        (
            (
                f"max by (model, feature, method) (driftloop_feature_drift_score{{{MODEL}}})",
                "{{model}} {{feature}} ({{method}})",
            ),
        ),
        description="Each feature's drift score (Evidently's default test; threshold 0.1).",
    ),
    Panel(
        "Prediction drift",
        ((f"max by (model) (driftloop_prediction_drift_score{{{MODEL}}})", "{{model}}"),),
        description="Drift of the model's output against its output on its training data: "
        "scores of a binary model, values of a regression model, shares of the classes a "
        "multiclass model answers.",
    ),
    Panel(
        "Prediction score distribution",
        (
            (
                'sum by (le) (increase(driftloop_prediction_score_bucket{role!="shadow"}[5m]))',
                "{{le}}",
            ),
        ),
        kind="heatmap",
        description="Scores the service answered (production and a canary; a shadow's are "
        "not answers), by histogram bucket.",
    ),
    Panel(
        "Live performance",
        (
            (
                f"max by (model, metric) (driftloop_model_performance{{{MODEL}}})",
                "{{model}} {{metric}}",
            ),
        ),
        description="On the predictions in the latest window that got their true label, in the "
        "model's own metrics: F1 and ROC AUC (binary), macro F1 and accuracy (multiclass), MAE, "
        "RMSE and R² (regression).",
    ),
    Panel(
        "Estimated performance (before labels)",
        (
            (
                f"max by (model, metric, bound) (driftloop_estimated_performance{{{MODEL}}})",
                "{{model}} {{metric}} {{bound}}",
            ),
        ),
        description="What the model's calibrated scores predict for the latest window, with the "
        "95 % band the realized value should fall in (confidence-based estimation): it holds "
        "under covariate shift, not under concept drift, which needs labels.",
    ),
    Panel(
        "Label coverage",
        ((f"max by (model) (driftloop_label_coverage{{{MODEL}}})", "{{model}}"),),
        unit="percentunit",
        description="Share of the latest window's predictions that got their true label: "
        "while it is low, Live performance is blind and the estimate is what there is.",
    ),
    Panel(
        "Label delay (median, p90)",
        tuple(
            (
                f"histogram_quantile({q}, sum by (model, le) "
                f"(rate(driftloop_label_delay_seconds_bucket{{{MODEL}}}[1h])))",
                f"{{{{model}}}} p{int(q * 100)}",
            )
            for q in (0.5, 0.9)
        ),
        unit="s",
        description="Time from a prediction to its label, for the labels of the last hour.",
    ),
    Panel(
        "Model version serving",
        (
            (
                f"max by (model, version) (driftloop_model_info{{{MODEL}}}) == 1",
                "{{model}} {{version}}",
            ),
        ),
        kind="state-timeline",
        description="Which version answered, per time; a swap shows as a new row.",
    ),
    Panel(
        "Retrain triggers",
        (("sum(increase(driftloop_retrain_triggered_total[5m]))", "drift declarations"),),
        kind="bars",
        description="Drift declarations the monitor sent to Prefect (each can start a retrain).",
    ),
    # The rollout row: a challenger beside production on live traffic, and the judge's evidence.
    Panel(
        "Rollout: predictions per role",
        (
            (
                f"sum by (model, role) (rate(driftloop_predictions_total{{{MODEL}}}[5m]))",
                "{{model}} {{role}}",
            ),
        ),
        unit="reqps",
        description="Predictions per second by role: champion (production), canary (answers "
        "its share of requests) and shadow (scores a copy of every request, answers none).",
    ),
    Panel(
        "Rollout: median score per role",
        (
            (
                "histogram_quantile(0.5, sum by (le, role) "
                "(rate(driftloop_prediction_score_bucket[5m])))",
                "{{role}}",
            ),
        ),
        description="The median score each role gives the same traffic (a shadow scores the "
        "champion's requests; a canary its share).",
    ),
    Panel(
        "Rollout: live loss per role",
        ((f"max by (model, role) (driftloop_rollout_live_loss{{{MODEL}}})", "{{model}} {{role}}"),),
        description="Mean per-row loss on the rollout's labelled rows (Brier score, 0/1 error or "
        "squared error; lower is better): what the judge compares.",
        during_rollout=True,
    ),
    Panel(
        "Rollout: loss difference and always-valid bounds",
        (
            (
                f"max by (model, bound) (driftloop_rollout_loss_difference{{{MODEL}}})",
                "{{model}} {{bound}}",
            ),
        ),
        description="Production's loss minus the challenger's, with the mSPRT's confidence "
        "sequence: the judge promotes when the lower bound passes the effect above 0, withdraws "
        "when the upper bound falls below 0.",
        during_rollout=True,
    ),
    Panel(
        "Rollout: labelled rows and share of the maximum duration",
        (
            (
                f"max by (model, role) (driftloop_rollout_labelled_rows{{{MODEL}}})",
                "{{model}} labelled ({{role}})",
            ),
            (
                f"max by (model) (driftloop_rollout_age_seconds{{{MODEL}}}) / on (model) "
                f"max by (model) (driftloop_rollout_max_age_seconds{{{MODEL}}})",
                "{{model}} share of max_hours",
            ),
        ),
        description="Labels behind the test (shadow: pairs); past 1 on the second line, "
        "RolloutOverdue fires.",
        during_rollout=True,
    ),
)

SERVICE = (
    Panel(
        "Requests per second",
        (("sum by (endpoint) (rate(bentoml_service_request_total[1m]))", "{{endpoint}}"),),
        unit="reqps",
    ),
    Panel(
        "Latency of /predict (p50, p99)",
        tuple(
            (
                f"histogram_quantile({q}, sum by (le) (rate("
                'bentoml_service_request_duration_seconds_bucket{endpoint="/predict"}[1m])))',
                f"p{int(q * 100)}",
            )
            for q in (0.5, 0.99)
        ),
        unit="s",
    ),
    Panel(
        "Error rate",
        (
            (
                'sum(rate(bentoml_service_request_total{http_response_code=~"5.."}[1m]) or '
                "vector(0)) / sum(rate(bentoml_service_request_total[1m]))",
                "5xx share",
            ),
        ),
        unit="percentunit",
    ),
    Panel(
        "Prediction-log drops",
        (("sum(rate(driftloop_prediction_log_dropped_total[5m]))", "dropped/s"),),
        description="Predictions the prediction log had no room for (its store was down).",
    ),
    Panel(
        "Monitor check time (p90) and window rows",
        (
            (
                "histogram_quantile(0.9, sum by (le) "
                "(rate(driftloop_monitor_check_duration_seconds_bucket[5m])))",
                "check p90",
            ),
            ("max by (model) (driftloop_monitor_window_rows)", "window rows {{model}}"),
        ),
    ),
)


def panel_json(panel: Panel, number: int) -> dict[str, Any]:
    kind = "barchart" if panel.kind == "bars" else panel.kind
    return {
        "id": number,
        "type": "timeseries" if kind == "barchart" else kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": 12 * ((number - 1) % 2), "y": 8 * ((number - 1) // 2)},
        "fieldConfig": {
            "defaults": {
                "unit": panel.unit,
                **({"custom": {"drawStyle": "bars"}} if panel.kind == "bars" else {}),
            },
            "overrides": [],
        },
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {
                "refId": chr(ord("A") + index),
                "datasource": DATASOURCE,
                "expr": expr,
                "legendFormat": legend,
            }
            for index, (expr, legend) in enumerate(panel.queries)
        ],
    }


def dashboard(
    uid: str,
    title: str,
    panels: tuple[Panel, ...],
    tags: list[str],
    variables: tuple[dict[str, Any], ...] = (),
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "tags": ["driftloop", *tags],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "panels": [panel_json(panel, n) for n, panel in enumerate(panels, start=1)],
        "templating": {"list": list(variables)},
        "annotations": {
            "list": [
                {
                    "name": "driftloop events",
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "iconColor": "orange",
                    "target": {"type": "tags", "tags": ["driftloop"], "limit": 100},
                }
            ]
        },
    }


def dashboards() -> dict[str, dict[str, Any]]:
    """File name → dashboard JSON model."""
    return {
        "model-health.json": dashboard(
            "driftloop-model-health",
            "driftloop — Model health",
            MODEL_HEALTH,
            ["model"],
            (MODEL_VARIABLE,),
        ),
        "service.json": dashboard("driftloop-service", "driftloop — Service", SERVICE, ["service"]),
    }


def render(model: dict[str, Any]) -> str:
    return json.dumps(model, indent=2, sort_keys=True) + "\n"


def queries(*, during_rollout: bool | None = None) -> list[tuple[str, str, str]]:
    """(dashboard, panel, PromQL) of every panel query, as Grafana sends it with "All" models
    chosen (``$model`` replaced by the variable's allValue); ``during_rollout`` True or False
    keeps only the panels that show data only during a rollout, or only the others."""
    rollout_only = {p.title for p in MODEL_HEALTH + SERVICE if p.during_rollout}
    return [
        (model["title"], panel["title"], target["expr"].replace("$model", ALL_MODELS))
        for model in dashboards().values()
        for panel in model["panels"]
        for target in panel["targets"]
        if during_rollout is None or (panel["title"] in rollout_only) == during_rollout
    ]


def write(folder: Path = FOLDER) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in dashboards().items():
        path = folder / name
        path.write_text(render(model))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write():
        print(f"wrote {path}")  # noqa: T201
