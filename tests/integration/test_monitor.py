"""The monitor as a real process over real neighbours: a lakeFS-compatible server holding the
model's training data, a Prefect server receiving events, a SQLite prediction log and the model
registry. In-distribution traffic declares nothing; drifted traffic declares drift once, with
the Evidently report stored in lakeFS and the event in Prefect; Alertmanager's webhook becomes
events."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect import flow

from driftloop.datasets.spec import load_spec
from driftloop.datasets.transactions import generate_transactions
from driftloop.events import DRIFT_DETECTED
from driftloop.lakefs_client import LakeFSClient
from driftloop.prediction_log import Prediction, PredictionLog
from driftloop.prefect_api import PrefectAccess
from driftloop.registry import ModelRegistry
from driftloop.serving import frame_records, load_version
from driftloop.settings import fast_monitor_env, get_settings
from driftloop.stack.processes import Component, free_port
from driftloop.stack.servers import start_monitor_server
from flows.common import prefect_api
from flows.ingest import ingest
from flows.train import train
from tests.integration.conftest import LakeFSServer, PrefectServer
from tests.integration.prefect_events import events_named, wait_for_event
from tests.polling import eventually

SPEC = load_spec("transactions")
MODEL_NAME = "transactions-classifier"
PROJECT = Path(__file__).resolve().parents[2]
TOKEN = "monitor-test-token"


class World:
    def __init__(
        self, home: Path, lake: LakeFSClient, env: dict[str, str], prefect: PrefectAccess
    ) -> None:
        self.home, self.lake, self.env, self.prefect = home, lake, env, prefect
        settings = get_settings()
        self.registry = ModelRegistry.from_settings(settings)
        production = self.registry.production(MODEL_NAME)
        assert production is not None
        self.version = production
        self.log = PredictionLog(settings.prediction_log_url)
        self.model = load_version(production.tag)
        self.clock = datetime.now(UTC)

    def traffic(self, rows: int, scenario: str, seed: int) -> None:
        """``rows`` scored predictions of the production model, written to the prediction log."""
        frame = generate_transactions(rows, seed=seed, scenario=scenario)  # type: ignore[arg-type]
        records = frame_records(frame, SPEC.feature_names)
        scores = self.model.score(records).tolist()  # type: ignore[arg-type]
        rows_out = []
        for index, (record, score) in enumerate(zip(records, scores, strict=True)):
            at = self.clock + timedelta(milliseconds=index)
            rows_out.append(
                Prediction(
                    str(uuid.uuid4()),
                    at,
                    self.model.name,
                    self.model.version,
                    record,
                    score,
                    int(score >= self.model.threshold),
                )
            )
        self.clock += timedelta(seconds=rows)
        self.log.write(rows_out)


@pytest.fixture
def world(
    prefect_server: PrefectServer,
    lakefs_server: LakeFSServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[World]:
    repo = f"monitor-{uuid.uuid4().hex[:8]}"
    env = {
        **lakefs_server.settings_env(),
        "DRIFTLOOP_LAKEFS__REPOSITORY": repo,
        "DRIFTLOOP_HOME": str(tmp_path / "home"),
        **prefect_server.settings_env(),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with prefect_api(prefect_server.access):
        ingest("transactions-classifier", "builtin:?rows=6000&seed=1", batch_id="day-1")
        train()
    yield World(tmp_path / "home", lakefs_server.client(repo), env, prefect_server.access)


@pytest.fixture
def monitor(world: World) -> Iterator[Component]:
    port = free_port()
    component = start_monitor_server(
        host="127.0.0.1",
        port=port,
        log_path=world.home / "monitor.log",
        env={
            **world.env,
            **fast_monitor_env(interval_seconds=0.5, min_window_rows=200),
            "DRIFTLOOP_MONITOR__ALERT_TOKEN": TOKEN,
            "BENTOML_HOME": os.environ["BENTOML_HOME"],
        },
        cwd=PROJECT,
    )
    try:
        component.wait_healthy(timeout=60)
        yield component
    finally:
        component.stop()


def base(component: Component) -> str:
    return component.health_url.removesuffix("/healthz")


def judged(component: Component, windows: int, timeout: float = 60) -> dict[str, Any]:
    """The monitor's status once it has judged ``windows`` windows of new traffic in all."""

    def status() -> dict[str, Any] | None:
        found: dict[str, Any] = httpx.get(f"{base(component)}/status").json()
        return found if found["windows_judged"] >= windows and found["state"] != "failed" else None

    return eventually(status, f"the monitor to judge {windows} windows", timeout=timeout)


def drift_events(prefect: PrefectAccess, version: str) -> list[dict[str, Any]]:
    return events_named(prefect, DRIFT_DETECTED, model_version=version)


def test_drift_is_declared_once_with_its_report_in_lakefs_and_its_event_in_prefect(
    world: World, monitor: Component
) -> None:
    for judged_so_far, seed in enumerate((11, 12, 13), start=1):  # in-distribution windows
        world.traffic(500, "baseline", seed)
        calm = judged(monitor, judged_so_far)
    assert calm["state"] == "in distribution", calm
    assert drift_events(world.prefect, world.version.version) == []
    # No label came, yet the scores say how the model does (its holdout calibration, stored
    # with the version by the train flow): near its holdout ROC AUC on in-distribution traffic.
    estimate = calm["estimated"]["roc_auc"]
    assert estimate["lower"] < estimate["value"] < estimate["upper"]
    assert abs(estimate["value"] - world.version.metrics["roc_auc"]) < 0.1
    assert calm["label_coverage"] == 0.0
    shown = httpx.get(f"{base(monitor)}/metrics").text
    assert (
        f'driftloop_estimated_performance{{bound="estimate",metric="roc_auc",model="{MODEL_NAME}"}}'
        in shown
    )
    assert f'driftloop_label_coverage{{model="{MODEL_NAME}"}} 0.0' in shown

    for judged_so_far, seed in enumerate((21, 22, 23), start=4):  # drifted: declared at the 2nd
        world.traffic(500, "covariate_shift", seed)
        drifted = judged(monitor, judged_so_far)
    assert drifted["drift_declared"], drifted

    events = eventually(
        lambda: drift_events(world.prefect, world.version.version), "a drift event in Prefect"
    )
    assert len(events) == 1
    payload = events[0]["payload"]
    assert events[0]["resource"]["prefect.resource.id"] == f"driftloop.model.{MODEL_NAME}"
    assert payload["data_commit"] == world.version.data_commit
    assert float(payload["drift_share"]) >= 0.3 and "amount" in payload["drifted_features"]
    location = payload["report"]
    assert location.startswith(f"lakefs://{world.lake.repository}/")
    commit, path = location.split("/", 3)[3].split("/", 1)
    html = world.lake.download(commit, path).decode()
    assert path.startswith(f"reports/drift/{MODEL_NAME}/") and "amount" in html
    assert world.lake.download("main", path) == html.encode()  # merged into main

    metrics = httpx.get(f"{base(monitor)}/metrics").text
    assert "driftloop_retrain_triggered_total 1.0" in metrics
    assert f'driftloop_dataset_drift{{model="{MODEL_NAME}"}} 1.0' in metrics


def test_alertmanager_webhooks_become_prefect_events(world: World, monitor: Component) -> None:
    fingerprint = uuid.uuid4().hex
    body = {
        "version": "4",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "DatasetDrift", "model": MODEL_NAME},
                "annotations": {"summary": "drift share above threshold for 5m"},
                "startsAt": "2026-11-26T07:00:00Z",
                "fingerprint": fingerprint,
            }
        ],
    }
    url = f"{base(monitor)}/alerts"

    refused = httpx.post(url, json=body)
    accepted = httpx.post(url, json=body, headers={"Authorization": f"Bearer {TOKEN}"})

    assert refused.status_code == 401 and accepted.status_code == 200
    firing = wait_for_event(world.prefect, "driftloop.alert.firing", fingerprint=fingerprint)
    assert firing["payload"]["alertname"] == "DatasetDrift"


def test_one_webhook_cannot_fan_out_into_alerts_about_unknown_models(
    world: World, monitor: Component
) -> None:
    """An Alertmanager webhook carrying 20 distinct model labels: only the model the registry
    knows reaches Prefect (each model has its own retrain trigger, so each event could start a
    run); the others are counted."""
    since = datetime.now(UTC).isoformat()
    tag = uuid.uuid4().hex[:8]
    alerts = [
        {
            "status": "firing",
            "labels": {"alertname": "DatasetDrift", "model": model},
            "startsAt": "2026-11-26T07:00:00Z",
            "fingerprint": f"{tag}-{index}",
        }
        for index, model in enumerate([MODEL_NAME] + [f"made-up-{i}" for i in range(19)])
    ]

    answer = httpx.post(
        f"{base(monitor)}/alerts",
        json={"version": "4", "status": "firing", "alerts": alerts},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )

    assert answer.status_code == 200 and len(answer.json()["ignored"]) == 19
    wait_for_event(world.prefect, "driftloop.alert.firing", fingerprint=f"{tag}-0")
    firing = events_named(world.prefect, "driftloop.alert.firing", since=since)
    assert [event["payload"]["model"] for event in firing] == [MODEL_NAME]
    metrics = httpx.get(f"{base(monitor)}/metrics").text
    assert 'driftloop_monitor_alerts_ignored_total{reason="unknown model"} 19.0' in metrics


@flow(name="retrain")
def stand_in_retrain(model: str | None = None, fail: bool = False) -> str:
    """A run of the flow named retrain that ends as told (the real flow's failures are slow to
    provoke; what the monitor reads is only how the latest run of that name ended)."""
    if fail:
        raise RuntimeError("feedback batch feedback-0123 rejected: ranges failed")
    return "done"


def retrain_failed(component: Component) -> float | None:
    for line in httpx.get(f"{base(component)}/metrics").text.splitlines():
        if line.startswith(f'driftloop_retrain_failed{{model="{MODEL_NAME}"}}'):
            return float(line.split()[-1])
    return None


def test_a_failed_retrain_shows_as_a_metric_until_one_completes(
    world: World, monitor: Component
) -> None:
    with prefect_api(world.prefect):
        stand_in_retrain(fail=True, return_state=True)

    eventually(lambda: retrain_failed(monitor) == 1.0, "driftloop_retrain_failed 1")
    status = httpx.get(f"{base(monitor)}/status").json()
    assert status["last_retrain"]["state"] == "FAILED"
    assert "ranges failed" in status["last_retrain"]["message"]

    with prefect_api(world.prefect):
        stand_in_retrain()
        stand_in_retrain(
            model="breast_cancer-classifier", fail=True, return_state=True
        )  # another model
    eventually(lambda: retrain_failed(monitor) == 0.0, "driftloop_retrain_failed back to 0")
