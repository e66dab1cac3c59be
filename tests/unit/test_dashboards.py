"""The dashboards in git are the generated ones, and they use the provisioned datasource."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from driftloop.dashboards import DATASOURCE, FOLDER, dashboards, queries, render

GRAFANA = Path(__file__).resolve().parents[2] / "grafana"


def test_the_json_in_git_is_what_the_code_generates() -> None:
    generated = dashboards()

    assert sorted(p.name for p in FOLDER.glob("*.json")) == sorted(generated)
    for name, model in generated.items():
        assert (FOLDER / name).read_text() == render(model), (
            f"{name} differs: run `python -m driftloop.dashboards`"
        )


def test_dashboards_use_the_provisioned_datasource_and_the_provider_reads_them() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/driftloop.yml").read_text())

    assert datasources["datasources"][0]["uid"] == DATASOURCE["uid"]
    assert provider["providers"][0]["editable"] is False
    assert provider["providers"][0]["disableDeletion"] is True
    for name in dashboards():
        model = json.loads((FOLDER / name).read_text())
        for panel in model["panels"]:
            assert panel["datasource"] == DATASOURCE
            assert all(target["datasource"] == DATASOURCE for target in panel["targets"])


def test_model_health_and_service_have_the_panels_users_look_for() -> None:
    titles = {(dashboard, panel) for dashboard, panel, _ in queries()}
    model, service = "driftloop — Model health", "driftloop — Service"

    for panel in (
        "Drift share over time",
        "Per-feature drift",
        "Prediction score distribution",
        "Live performance",
        "Estimated performance (before labels)",
        "Label coverage",
        "Label delay (median, p90)",
        "Model version serving",
        "Retrain triggers",
        "Rollout: predictions per role",
        "Rollout: live loss per role",
        "Rollout: loss difference and always-valid bounds",
    ):
        assert (model, panel) in titles
    for panel in (
        "Requests per second",
        "Latency of /predict (p50, p99)",
        "Error rate",
        "Prediction-log drops",
    ):
        assert (service, panel) in titles


def test_the_model_health_dashboard_picks_models_with_a_variable() -> None:
    """With several models in one stack, every model-health panel follows the model chosen."""
    health = dashboards()["model-health.json"]
    (variable,) = health["templating"]["list"]

    assert variable["name"] == "model" and variable["multi"] and variable["includeAll"]
    assert variable["query"]["query"] == "label_values(driftloop_model_info, model)"
    # The score histogram has a role label but no model label (one service, its models' scores).
    unlabelled = {"Prediction score distribution", "Rollout: median score per role"}
    model_panels = [p for p in health["panels"] if p["title"] not in unlabelled]
    for panel in model_panels:
        if panel["title"] == "Retrain triggers":
            continue  # the monitor's counter has no model label
        assert all('model=~"$model"' in t["expr"] for t in panel["targets"]), panel["title"]


def test_panels_that_only_a_rollout_fills_are_told_apart() -> None:
    """The rollout's evidence exists only while a challenger is on live traffic: those panels
    are checked against Prometheus during a rollout (test_rollout_stack), the others always."""
    during = {panel for _, panel, _ in queries(during_rollout=True)}
    always = {panel for _, panel, _ in queries(during_rollout=False)}

    assert during == {
        "Rollout: live loss per role",
        "Rollout: loss difference and always-valid bounds",
        "Rollout: labelled rows and share of the maximum duration",
    }
    assert during.isdisjoint(always)
    assert "Rollout: predictions per role" in always
    assert len(queries()) == len(queries(during_rollout=True)) + len(queries(during_rollout=False))
