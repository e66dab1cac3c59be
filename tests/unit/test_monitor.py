"""The monitor's check and its HTTP face, against small fakes of what it talks to (the real
prediction log, lakeFS and Prefect are in tests/integration/test_monitor.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from driftloop.datasets.spec import load_spec
from driftloop.datasets.transactions import generate_transactions
from driftloop.drift import DriftResult, Reference, prepare_reference
from driftloop.estimation import BinaryCalibration
from driftloop.events import (
    ALERT_FIRING,
    ALERT_RESOLVED,
    DRIFT_DETECTED,
    PERFORMANCE_DEGRADED,
    Event,
    EventNotDelivered,
)
from driftloop.settings import MonitorSettings
from services.monitor.app import create_app
from services.monitor.monitor import Monitor, ProductionModel

SPEC = load_spec("transactions")
MODEL = ProductionModel("transactions-classifier", "v1", "c" * 64, 0.25)
NOW = datetime(2026, 11, 2, tzinfo=UTC)
REFERENCE = prepare_reference(generate_transactions(5000, seed=1), SPEC)


class Traffic:
    """The prediction log as the monitor sees it: the newest window of what was sent."""

    def __init__(self) -> None:
        self.frame = pd.DataFrame()
        self.clock = datetime(2026, 11, 1, tzinfo=UTC)
        self.seed = 100
        self.transform: Callable[[pd.DataFrame], pd.DataFrame] = lambda frame: frame
        self.reads: list[int] = []  # the rows asked for, each time the window was read

    def send(self, rows: int, scenario: str = "baseline") -> None:
        self.seed += 1
        batch = self.transform(generate_transactions(rows, seed=self.seed, scenario=scenario))  # type: ignore[arg-type]
        times = [self.clock + timedelta(milliseconds=i) for i in range(rows)]
        self.clock = times[-1] + timedelta(seconds=1)
        self.frame = pd.concat([self.frame, batch.assign(created_at=times)], ignore_index=True)

    def window(self, model: ProductionModel, rows: int) -> pd.DataFrame:
        self.reads.append(rows)
        return self.frame.tail(rows).reset_index(drop=True)

    def window_size(self, model: ProductionModel, rows: int) -> int:
        return min(len(self.frame), rows)


class Prefect:
    """Records the events it is sent; can be told to refuse them."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.down = False

    def send(self, events: list[Event]) -> None:
        if self.down:
            raise EventNotDelivered("Prefect at http://prefect did not accept it: HTTP 503")
        self.events.extend(events)


class World:
    def __init__(
        self,
        label_delays: Callable[[datetime | None], tuple[list[float], datetime | None]]
        | None = None,
        counted: bool = False,
        **settings: Any,
    ) -> None:
        self.traffic = Traffic()
        self.prefect = Prefect()
        self.model: ProductionModel | None = MODEL
        self.references: list[str] = []
        self.reports: list[str] = []
        self.annotations: list[tuple[str, list[str]]] = []
        self.registry = CollectorRegistry()
        self.monitor = Monitor(
            spec=SPEC,
            model_name=MODEL.name,
            settings=MonitorSettings(
                window_rows=500,
                min_window_rows=200,
                consecutive_windows=3,
                drift_share_threshold=0.3,
                **settings,
            ),
            production=lambda: self.model,
            window=self.traffic.window,
            reference=self.reference,
            send=self.prefect.send,
            store_report=self.store_report,
            registry=self.registry,
            annotate=lambda text, tags: self.annotations.append((text, tags)),
            label_delays=label_delays,
            # Counted: the window's size is asked before it is read (as the server does).
            window_size=self.traffic.window_size if counted else None,
        )

    def reference(self, model: ProductionModel) -> Reference:
        self.references.append(model.version)
        return REFERENCE

    def store_report(
        self, model: ProductionModel, reference: Reference, frame: pd.DataFrame, _: DriftResult
    ) -> str:
        self.reports.append(model.version)
        return f"lakefs://driftloop/abc/reports/drift/{model.name}/{len(self.reports)}.html"

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def windows(self, count: int, scenario: str = "baseline") -> list[str]:
        states = []
        for _ in range(count):
            self.traffic.send(500, scenario)
            states.append(self.monitor.check().state)
        return states


def test_in_distribution_traffic_declares_nothing_and_sets_the_gauges() -> None:
    world = World()

    states = world.windows(6)

    assert states == ["in distribution"] * 6
    assert world.prefect.events == [] and world.reports == []
    assert world.metric("driftloop_dataset_drift", model=MODEL.name) == 0
    share = world.metric("driftloop_drift_share", model=MODEL.name)
    assert share is not None and share < 0.3
    assert world.metric("driftloop_monitor_window_rows", model=MODEL.name) == 500
    assert (
        world.metric(
            "driftloop_feature_drift_score",
            model=MODEL.name,
            feature="amount",
            method="wasserstein",
        )
        is not None
    )
    assert world.references == ["v1"]  # prepared once, reused for every window


def test_drift_is_declared_once_after_k_drifted_windows_with_the_numbers_that_explain_it() -> None:
    world = World()
    world.windows(2)

    states = world.windows(5, "covariate_shift")

    assert states[:2] == ["drifting", "drifting"]
    assert states[2] == "drift declared"
    assert len(world.prefect.events) == 1 and world.reports == ["v1"]
    event = world.prefect.events[0]
    assert event.event == DRIFT_DETECTED
    assert event.resource_id == f"driftloop.model.{MODEL.name}"
    payload = event.payload
    assert payload["model_version"] == "v1" and payload["data_commit"] == MODEL.data_commit
    assert payload["window_rows"] == 500 and payload["drift_share"] >= 0.3
    assert "amount" in payload["drifted_features"]
    assert payload["report"].startswith("lakefs://driftloop/")
    assert world.metric("driftloop_retrain_triggered_total") == 1
    assert len(world.annotations) == 1 and world.annotations[0][1] == ["drift", MODEL.name]
    assert "amount" in world.annotations[0][0]


def test_a_window_without_new_traffic_is_not_counted_again() -> None:
    world = World()
    world.windows(1, "covariate_shift")

    repeated = [world.monitor.check().state for _ in range(5)]

    assert repeated == ["drifting"] * 5  # the verdict stands, but the same rows count once
    assert world.monitor.status.windows_judged == 1
    assert world.monitor.status.consecutive_drifted == 1 and world.prefect.events == []


def test_an_undelivered_declaration_is_sent_again_at_the_next_check() -> None:
    world = World()
    world.prefect.down = True
    world.windows(3, "covariate_shift")

    assert world.prefect.events == []
    assert world.metric("driftloop_monitor_event_failures_total") == 1
    assert "did not accept" in (world.monitor.status.problem or "")

    world.prefect.down = False
    world.monitor.check()  # no new traffic, but the declaration is still owed

    assert [e.event for e in world.prefect.events] == [DRIFT_DETECTED]
    assert world.metric("driftloop_retrain_triggered_total") == 1


def test_an_episode_ends_when_traffic_calms_and_a_new_model_starts_afresh() -> None:
    world = World()
    world.windows(4, "covariate_shift")
    world.windows(1)  # calm again: the episode is over
    world.windows(3, "covariate_shift")
    assert len(world.prefect.events) == 2

    world.model = ProductionModel(MODEL.name, "v2", "d" * 64, 0.3)
    states = world.windows(2, "covariate_shift")

    assert world.references == ["v1", "v2"]
    assert states == ["drifting", "drifting"]  # v2's count starts at zero
    assert len(world.prefect.events) == 2


def test_too_few_rows_and_no_model_are_waited_out() -> None:
    world = World()
    world.traffic.send(150)
    assert world.monitor.check().state == "waiting for traffic"
    world.model = None
    assert world.monitor.check().state == "no production model"


def test_a_window_too_small_to_judge_is_counted_but_not_read() -> None:
    """Given how many rows the window would have, an idle monitor reads none of them (reading
    builds a frame: pandas, which an idle monitor does not load)."""
    world = World(counted=True)
    world.traffic.send(150)
    status = world.monitor.check()
    assert status.state == "waiting for traffic" and status.window_rows == 150
    assert (
        world.traffic.reads == []
        and world.metric("driftloop_monitor_window_rows", model=MODEL.name) == 150
    )
    world.traffic.send(400)
    assert world.monitor.check().state == "in distribution" and world.traffic.reads == [500]


def test_a_failing_dependency_shows_in_the_status_and_does_not_stop_checks() -> None:
    world = World()
    world.traffic.send(500)
    world.monitor._reference = lambda model: (_ for _ in ()).throw(OSError("lakeFS is down"))

    status = world.monitor.check()

    assert status.state == "failed" and "lakeFS is down" in (status.problem or "")


# The HTTP face ------------------------------------------------------------------------------

TOKEN = "alert-token-for-tests"


def client(
    world: World,
    token: str | None = TOKEN,
    known_models: Callable[[], set[str]] = lambda: {MODEL.name},
) -> TestClient:
    app = create_app(
        world.monitor,
        registry=world.registry,
        send=world.prefect.send,
        alert_token=token,
        interval_seconds=3600,
        known_models=known_models,
    )
    return TestClient(app)  # not entered: no background checks, the test drives them


def webhook(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {"version": "4", "status": "firing", "receiver": "driftloop", "alerts": list(alerts)}


FIRING = {
    "status": "firing",
    "labels": {"alertname": "DatasetDrift", "model": MODEL.name, "severity": "warning"},
    "annotations": {"summary": "drift share over threshold"},
    "startsAt": "2026-11-26T07:00:00Z",
    "fingerprint": "0123456789abcdef",
}


def test_alerts_need_the_bearer_token() -> None:
    http = client(World())
    body = webhook(FIRING)

    assert http.post("/alerts", json=body).status_code == 401
    wrong = http.post("/alerts", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert client(World(), token=None).post("/alerts", json=body).status_code == 503


def test_malformed_webhooks_are_refused_by_field() -> None:
    http = client(World())
    auth = {"Authorization": f"Bearer {TOKEN}"}

    not_json = http.post("/alerts", content=b"{nope", headers=auth)
    no_alerts = http.post("/alerts", json={"version": "4"}, headers=auth)
    bad_status = http.post("/alerts", json=webhook({**FIRING, "status": "maybe"}), headers=auth)
    no_name = http.post("/alerts", json=webhook({**FIRING, "labels": {}}), headers=auth)

    assert not_json.status_code == 400
    assert (no_alerts.status_code, no_alerts.json()["field"]) == (422, "alerts")
    assert (bad_status.status_code, bad_status.json()["field"]) == (422, "alerts[0].status")
    assert no_name.json()["field"] == "alerts[0].labels.alertname"


def test_firing_and_resolved_alerts_become_events_and_a_retried_webhook_the_same_ones() -> None:
    world = World()
    http = client(world)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    resolved = {**FIRING, "status": "resolved", "endsAt": "2026-11-26T07:05:00Z"}

    first = http.post("/alerts", json=webhook(FIRING, resolved), headers=auth)
    again = http.post("/alerts", json=webhook(FIRING), headers=auth)

    assert first.status_code == 200 and again.status_code == 200
    names = [e.event for e in world.prefect.events]
    assert names == [ALERT_FIRING, ALERT_RESOLVED, ALERT_FIRING]
    assert world.prefect.events[0].id == world.prefect.events[2].id  # the same alert, one event
    assert world.prefect.events[0].payload["alertname"] == "DatasetDrift"
    assert world.prefect.events[0].resource_id == f"driftloop.model.{MODEL.name}"


def test_alerts_prefect_does_not_take_are_refused_so_alertmanager_retries() -> None:
    world = World()
    world.prefect.down = True

    answer = client(world).post(
        "/alerts", json=webhook(FIRING), headers={"Authorization": f"Bearer {TOKEN}"}
    )

    assert answer.status_code == 503


def test_status_and_metrics_show_the_latest_check() -> None:
    world = World()
    world.windows(1, "covariate_shift")
    http = client(world)

    status = http.get("/status").json()
    metrics = http.get("/metrics").text

    assert status["state"] == "drifting" and status["version"] == "v1"
    assert status["result"]["drifted_share"] >= 0.3
    assert f'driftloop_drift_share{{model="{MODEL.name}"}}' in metrics
    assert http.get("/healthz").json() == {"status": "ok"}
    assert np.isfinite(status["result"]["features"][0]["score"])


def scored(frame: pd.DataFrame) -> pd.DataFrame:
    """A window as the prediction log gives it: a score per row (a fixed function of the
    transaction, standing in for the model), the answer at 0.25, no label yet."""
    risk = np.log(frame["amount"]) / 4 + frame["is_foreign"] + (frame["channel"] == "online")
    score = 1 / (1 + np.exp(-(risk.to_numpy(float) - 2.5)))
    return frame.assign(
        score=score,
        label=(score >= 0.25).astype(int),
        true_label=np.nan,
        is_fraud_later=frame["is_fraud"],
    )


def test_performance_is_estimated_before_labels_and_coverage_and_delays_follow_them() -> None:
    history = scored(generate_transactions(5000, seed=3))
    calibration = BinaryCalibration.fit(history["score"], history["is_fraud"], threshold=0.25)
    arrivals: list[tuple[list[float], datetime | None]] = [([30.0, 90.0, 4000.0], NOW)]
    asked: list[datetime | None] = []

    def label_delays(since: datetime | None) -> tuple[list[float], datetime | None]:
        asked.append(since)
        return arrivals.pop() if arrivals else ([], since)

    started = datetime.now(UTC)
    world = World(label_delays=label_delays)
    world.model = replace(MODEL, calibration=calibration.as_dict())
    world.traffic.transform = scored
    world.windows(1)
    estimated = world.monitor.status.estimated
    window = world.traffic.window(MODEL, 500)
    expected = calibration.estimate(window["score"].to_numpy())["roc_auc"]

    assert estimated is not None and estimated["roc_auc"]["value"] == expected.value
    assert world.metric(
        "driftloop_estimated_performance", model=MODEL.name, metric="roc_auc", bound="estimate"
    ) == pytest.approx(expected.value)
    lower, upper = (
        world.metric("driftloop_estimated_performance", model=MODEL.name, metric="f1", bound=bound)
        for bound in ("lower", "upper")
    )
    assert lower is not None and upper is not None and lower < estimated["f1"]["value"] < upper
    assert world.metric("driftloop_label_coverage", model=MODEL.name) == 0.0
    # Labels for half of the window arrive, no new prediction: the same window is looked at
    # again (its realized metrics fill in) without counting as a new one; each delay once.
    late = world.traffic.frame.index[-250:]
    world.traffic.frame.loc[late, "true_label"] = world.traffic.frame.loc[late, "is_fraud_later"]
    world.monitor.check()
    assert world.metric("driftloop_label_coverage", model=MODEL.name) == pytest.approx(250 / 500)
    assert world.monitor.status.windows_judged == 1
    result = world.monitor.status.result
    assert result is not None and result["performance"]["rows"] == 250
    histogram = {"model": MODEL.name}
    assert world.metric("driftloop_label_delay_seconds_count", **histogram) == 3
    assert world.metric("driftloop_label_delay_seconds_bucket", le="60.0", **histogram) == 1
    # The first look starts at the monitor's start (not every label ever), the second where
    # the first one ended.
    assert asked[0] is not None and asked[0] >= started and asked[1:] == [NOW]


def estimating_world(**settings: Any) -> World:
    history = scored(generate_transactions(5000, seed=3))
    calibration = BinaryCalibration.fit(history["score"], history["is_fraud"], threshold=0.25)
    world = World(**settings)
    world.model = replace(MODEL, calibration=calibration.as_dict())
    world.traffic.transform = scored
    return world


def test_an_estimated_drop_is_declared_once_before_any_label_when_asked_to() -> None:
    """Floor 0.99: every window's estimated ROC AUC band lies under it. Declared after
    consecutive_windows (3) windows, once; sent again when Prefect was down."""
    world = estimating_world(declare_estimated_drop=True, performance_floor=0.99)
    world.prefect.down = True
    world.windows(3)
    assert world.prefect.events == []
    world.prefect.down = False
    world.monitor.check()  # no new traffic: the undelivered declaration is sent again
    world.windows(2)

    (event,) = [e for e in world.prefect.events if e.event == PERFORMANCE_DEGRADED]
    payload = event.payload
    assert (payload["source"], payload["metric"], payload["floor"]) == (
        "estimated",
        "roc_auc",
        0.99,
    )
    assert payload["lower"] <= payload["estimate"] <= payload["upper"] < 0.99
    assert payload["label_coverage"] == 0.0 and payload["model_version"] == MODEL.version
    assert world.metric("driftloop_retrain_triggered_total") == 1
    assert any("before labels" in text for text, _ in world.annotations)


def test_no_drop_is_declared_above_the_floor_or_without_the_option() -> None:
    above = estimating_world(declare_estimated_drop=True, performance_floor=0.5)
    off = estimating_world(performance_floor=0.99)
    above.windows(4)
    off.windows(4)

    assert above.prefect.events == [] and off.prefect.events == []
    assert off.monitor.status.estimated is not None  # estimated all the same


def test_a_model_without_calibration_is_not_estimated() -> None:
    world = World()
    world.traffic.transform = scored
    world.windows(1)

    assert world.monitor.status.estimated is None
    assert world.metric("driftloop_label_coverage", model=MODEL.name) == 0.0
    assert (
        world.metric(
            "driftloop_estimated_performance", model=MODEL.name, metric="roc_auc", bound="estimate"
        )
        is None
    )


def test_an_alert_naming_no_model_is_refused_while_none_is_monitored() -> None:
    answer = client(World()).post(
        "/alerts",
        json=webhook({**FIRING, "labels": {"alertname": "MonitorDown"}}),
        headers={"Authorization": f"Bearer {TOKEN}"},
    )

    assert answer.status_code == 422 and answer.json()["field"] == "alerts[0].labels.model"


def test_alerts_about_models_the_registry_does_not_know_are_counted_not_sent() -> None:
    """One webhook naming 20 models (each would get its own retrain trigger): only the one the
    registry knows becomes an event; the others are logged and counted."""
    world = World()
    http = client(world)
    alerts = [
        {**FIRING, "labels": {**FIRING["labels"], "model": f"made-up-{i}"}, "fingerprint": f"{i}"}
        for i in range(19)
    ]

    answer = http.post(
        "/alerts", json=webhook(*alerts, FIRING), headers={"Authorization": f"Bearer {TOKEN}"}
    )

    assert answer.status_code == 200, answer.text
    assert [event.payload["model"] for event in world.prefect.events] == [MODEL.name]
    assert len(answer.json()["ignored"]) == 19
    metrics = http.get("/metrics").text
    assert 'driftloop_monitor_alerts_ignored_total{reason="unknown model"} 19.0' in metrics


def test_alerts_wait_when_the_registry_cannot_be_read() -> None:
    world = World()

    def broken() -> set[str]:
        raise OSError("registry database unreachable")

    answer = client(world, known_models=broken).post(
        "/alerts", json=webhook(FIRING), headers={"Authorization": f"Bearer {TOKEN}"}
    )

    assert answer.status_code == 503 and world.prefect.events == []
