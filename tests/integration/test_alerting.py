"""Alerting end to end on real processes, with short test intervals: drifted traffic through
`bentoml serve` → the monitor's gauges → Prometheus (scraping every second, the project's rules
with `for` shortened to 1 s) → Alertmanager (the project's routing, group_wait 1 s) → the
monitor's /alerts with the bearer token → driftloop.alert.firing in Prefect → the retrain
trigger creates a retrain run, in under 60 s. The monitor's own drift declaration is switched
off here (consecutive_windows 1000), so the run can only come from the alert."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from driftloop.dashboards import queries
from driftloop.datasets.spec import load_spec
from driftloop.datasets.transactions import generate_transactions
from driftloop.observability import write_alertmanager_config
from driftloop.serving import frame_records
from driftloop.settings import fast_monitor_env
from driftloop.stack.processes import Component, free_port
from driftloop.stack.servers import (
    start_alertmanager,
)
from tests.integration.conftest import (
    LakeFSServer,
    PrefectServer,
    root,
    scraping_prometheus,
    served_world,
)
from tests.polling import eventually

SPEC = load_spec("transactions")
PROJECT = Path(__file__).resolve().parents[2]
TOKEN = uuid.uuid4().hex


@pytest.fixture(scope="module")
def stack(
    prefect_server: PrefectServer,
    lakefs_server: LakeFSServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    settings = {
        # The monitor's own declaration never fires (1,000 windows): the alert path is tested.
        **fast_monitor_env(consecutive_windows=1000),
        "DRIFTLOOP_MONITOR__ALERT_TOKEN": TOKEN,
    }
    home = tmp_path_factory.mktemp("alerting")
    components: list[Component] = []
    with served_world(
        prefect_server, lakefs_server, home, rows=4000, settings=settings, worker=False
    ) as world:
        try:
            alertmanager_port = free_port()
            alertmanager = start_alertmanager(
                config=write_alertmanager_config(
                    home / "alertmanager",
                    monitor_url=root(world.monitor),
                    token=TOKEN,
                    group_wait="1s",
                    group_interval="5s",
                ),
                host="127.0.0.1",
                port=alertmanager_port,
                data=home / "alertmanager" / "data",
                log_path=home / "alertmanager.log",
            )
            components.append(alertmanager)
            prometheus = scraping_prometheus(
                home,
                world,
                f"127.0.0.1:{alertmanager_port}",
                rule_for="1s",
                # One feature's distance on a 500-row calm window can cross FeatureDrift's
                # threshold; its 10 minutes of `for` absorb that in production, and here.
                keep_for=frozenset({"FeatureDrift"}),
            )
            components.append(prometheus)
            for component in components:
                component.wait_healthy(timeout=120)
            yield {
                "inference": world.inference,
                "monitor": world.monitor,
                "prometheus": prometheus,
                "prefect": world.prefect,
                "retrain_id": world.retrain_id,
                "home": home,
            }
        finally:
            for component in reversed(components):
                component.stop()


def retrain_runs(stack: dict[str, Any], since: datetime) -> list[dict[str, Any]]:
    """Runs of the retrain deployment created after ``since`` (other tests share it)."""
    found = (
        stack["prefect"]
        .post(
            "/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [stack["retrain_id"]]}}}
        )
        .json()
    )
    return [run for run in found if datetime.fromisoformat(run["created"]) >= since]


def send(stack: dict[str, Any], scenario: str, seed: int, labels: bool = False) -> None:
    """500 transactions through /predict; with ``labels``, each one's true label as feedback."""
    frame = generate_transactions(500, seed=seed, scenario=scenario)  # type: ignore[arg-type]
    answers = predict(stack, frame)
    if labels:
        label(stack, answers, frame)


def predict(stack: dict[str, Any], frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The service's answers to ``frame``'s transactions, sent 50 to a request."""
    records = frame_records(frame, SPEC.feature_names)
    answers: list[dict[str, Any]] = []
    with httpx.Client(timeout=30) as client:
        for start in range(0, len(records), 50):
            response = client.post(
                f"{root(stack['inference'])}/predict", json=records[start : start + 50]
            )
            response.raise_for_status()
            answers += response.json()
    return answers


def label(stack: dict[str, Any], answers: list[dict[str, Any]], frame: pd.DataFrame) -> None:
    """Each answer's true label (``frame``'s target) as feedback."""
    with httpx.Client(timeout=30) as client:
        for answer, truth in zip(answers, frame[SPEC.target].tolist(), strict=True):
            client.post(
                f"{root(stack['inference'])}/feedback",
                json={"prediction_id": answer["prediction_id"], "label": int(truth)},
            ).raise_for_status()


def monitor_status(stack: dict[str, Any]) -> dict[str, Any]:
    return dict(httpx.get(f"{root(stack['monitor'])}/status", timeout=10).json())


def prometheus_has_judged(stack: dict[str, Any], after: datetime) -> bool:
    """Prometheus scraped the monitor after ``after`` and evaluated its rules after that."""
    prometheus = root(stack["prometheus"])
    targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=10).json()["data"]
    scraped = [
        datetime.fromisoformat(target["lastScrape"])
        for target in targets["activeTargets"]
        if target["labels"]["job"] == "driftloop-monitor"
    ]
    groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    evaluated = [datetime.fromisoformat(group["lastEvaluation"]) for group in groups]
    return bool(scraped and evaluated) and after < min(scraped) < min(evaluated)


def alerts_now(stack: dict[str, Any]) -> list[dict[str, Any]]:
    answer = httpx.get(f"{root(stack['prometheus'])}/api/v1/alerts", timeout=10).json()
    return list(answer["data"]["alerts"])


def test_drifted_traffic_fires_the_alert_that_creates_a_retrain_run(stack: dict[str, Any]) -> None:
    since = datetime.now(UTC)
    judged = monitor_status(stack)["windows_judged"]
    send(stack, "baseline", 5, labels=True)
    # Calm traffic fires nothing: not a fixed sleep, but once the monitor has judged it and
    # Prometheus has scraped that verdict and evaluated its rules on it.
    eventually(
        lambda: monitor_status(stack)["windows_judged"] > judged,
        "the monitor to judge the calm window",
        timeout=60,
    )
    verdict = datetime.now(UTC)
    eventually(
        lambda: prometheus_has_judged(stack, verdict),
        "Prometheus to evaluate its rules on the calm window",
        timeout=30,
    )
    firing = [
        a for a in alerts_now(stack) if a["state"] == "firing" and a["labels"]["kind"] == "drift"
    ]
    assert firing == []
    assert retrain_runs(stack, since) == []

    started = time.monotonic()
    send(stack, "covariate_shift", 6)
    runs = eventually(lambda: retrain_runs(stack, since), "a retrain run", timeout=60, interval=1)
    elapsed = time.monotonic() - started

    logs = {name: (stack["home"] / f"{name}.log") for name in ("monitor", "alertmanager")}
    assert runs, f"no retrain run within 60 s; monitor log: {logs['monitor'].read_text()[-2000:]}"
    assert elapsed < 60
    assert runs[0]["parameters"]["reason"] == "driftloop.alert.firing"
    assert runs[0]["parameters"]["alertname"] == "DatasetDrift"
    assert not httpx.get(f"{root(stack['monitor'])}/status").json()["drift_declared"]
    assert any(a["labels"]["alertname"] == "DatasetDrift" for a in alerts_now(stack))


def cross_border(rows: int, seed: int) -> pd.DataFrame:
    """A covariate shift that harms the fraud model: only online purchases abroad on young
    accounts (a new cross-border marketplace, say), under the baseline's fraud rule. The
    cases the model tells apart easily are gone; its ROC AUC falls from about 0.84 to 0.7."""
    frame = generate_transactions(rows * 100, seed=seed, baseline_rule=True)
    chosen = frame[
        (frame["channel"] == "online") & frame["is_foreign"] & (frame["account_age_days"] < 1500)
    ]
    assert len(chosen) >= rows
    return chosen.head(rows).reset_index(drop=True)


def test_a_harmful_covariate_shift_raises_the_estimated_drop_before_any_label(
    stack: dict[str, Any],
) -> None:
    """Labels delayed beyond the window: the estimate alone raises EstimatedPerformanceDrop;
    when the labels come, the realized ROC AUC of the same window lies inside its band."""

    def estimated_drop() -> list[dict[str, Any]]:
        return [
            a
            for a in alerts_now(stack)
            if a["labels"]["alertname"] == "EstimatedPerformanceDrop" and a["state"] == "firing"
        ]

    assert estimated_drop() == []
    frame = cross_border(500, seed=41)
    answers = predict(stack, frame)

    (alert,) = eventually(estimated_drop, "EstimatedPerformanceDrop to fire", timeout=60)
    before = monitor_status(stack)
    estimate = before["estimated"]["roc_auc"]
    assert before["label_coverage"] == 0.0  # no label has come: the estimate alone
    assert alert["labels"]["metric"] == "roc_auc" and estimate["upper"] < 0.75

    label(stack, answers, frame)  # the labels come

    def realized() -> dict[str, Any] | None:
        status = monitor_status(stack)
        performance = (status["result"] or {}).get("performance") or {}
        return status if performance.get("rows") == 500 else None

    after = eventually(realized, "the realized ROC AUC of the labelled window", timeout=60)
    auc = after["result"]["performance"]["metrics"]["roc_auc"]
    assert after["label_coverage"] == 1.0
    assert after["estimated"]["roc_auc"] == estimate  # the same window, the same estimate
    assert estimate["lower"] <= auc <= estimate["upper"], (auc, estimate)


def test_every_dashboard_panel_query_returns_data(stack: dict[str, Any]) -> None:
    """The dashboards' queries, evaluated by the real Prometheus scraping the real services
    under the traffic above (no Grafana server can run here: its queries are what it shows).
    The rollout panels, empty without a rollout, are checked during one in test_rollout_stack."""
    send(stack, "baseline", 7, labels=True)

    def empty_panels() -> list[str]:
        empty = []
        for dashboard, panel, expr in queries(during_rollout=False):
            answer = httpx.get(
                f"{root(stack['prometheus'])}/api/v1/query", params={"query": expr}
            ).json()
            assert answer["status"] == "success", (panel, expr, answer)
            if not answer["data"]["result"]:
                empty.append(f"{dashboard} / {panel}: {expr}")
        return empty

    eventually(lambda: not empty_panels(), "every panel's query to return data", timeout=30)
