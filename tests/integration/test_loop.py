"""The closed loop on real processes: a Prefect server and process worker with the deployments
applied, the lakeFS-compatible server, `bentoml serve`, and the monitor.

In-distribution traffic triggers nothing. Drifted traffic with labels from the concept-drift
scenario makes the monitor declare drift; the automation creates a retrain run by itself; the
worker runs it; a new version serves, and its F1 on the drifted data beats the old model's. A
storm of drift events makes exactly one retrain run.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sklearn.metrics import f1_score

from driftloop.datasets.spec import load_spec
from driftloop.datasets.transactions import generate_transactions
from driftloop.events import DRIFT_DETECTED, Event, model_resource, send_events
from driftloop.prefect_api import PrefectAccess
from driftloop.serving import frame_records
from driftloop.settings import fast_monitor_env
from driftloop.stack.processes import Component
from tests.integration.conftest import LakeFSServer, PrefectServer, served_world
from tests.integration.prefect_events import events_named
from tests.polling import eventually

SPEC = load_spec("transactions")
MODEL_NAME = "transactions-classifier"
log = logging.getLogger(__name__)
PROJECT = Path(__file__).resolve().parents[2]


@dataclass
class Loop:
    env: dict[str, str]
    prefect: PrefectAccess
    inference: Component
    monitor: Component
    retrain_id: str
    home: Path

    def url(self, component: Component, path: str) -> str:
        root = component.health_url.rsplit("/", 1)[0]
        return root + path

    def serving_version(self) -> str:
        return str(httpx.get(self.url(self.inference, "/model"), timeout=10).json()["version"])

    def retrain_runs(self, since: datetime | None = None) -> list[dict[str, Any]]:
        """Runs of the retrain deployment created after ``since``: other tests on the session's
        server apply the same deployment and send events of their own."""
        response = self.prefect.post(
            "/flow_runs/filter",
            {"flow_runs": {"deployment_id": {"any_": [self.retrain_id]}}},
            timeout=30,
        )
        response.raise_for_status()
        return [
            run
            for run in response.json()
            if since is None or datetime.fromisoformat(run["created"]) >= since
        ]

    def status(self) -> dict[str, Any]:
        return dict(httpx.get(self.url(self.monitor, "/status"), timeout=10).json())


def records_of(scenario: str, rows: int, seed: int) -> tuple[list[dict[str, Any]], list[int]]:
    frame = generate_transactions(rows, seed=seed, scenario=scenario)  # type: ignore[arg-type]
    records = frame_records(frame, SPEC.feature_names)
    return records, frame[SPEC.target].astype(int).tolist()


def send_traffic(loop: Loop, records: list[dict[str, Any]], truth: list[int] | None) -> list[dict]:
    """POST the records in lists of 50; send each true label as feedback when given."""
    answers: list[dict[str, Any]] = []
    with httpx.Client(timeout=30) as client:
        for start in range(0, len(records), 50):
            response = client.post(
                loop.url(loop.inference, "/predict"), json=records[start : start + 50]
            )
            response.raise_for_status()
            answers.extend(response.json())
        if truth is not None:
            for answer, label in zip(answers, truth, strict=True):
                client.post(
                    loop.url(loop.inference, "/feedback"),
                    json={"prediction_id": answer["prediction_id"], "label": label},
                ).raise_for_status()
    return answers


def f1_of(answers: list[dict[str, Any]], truth: list[int]) -> float:
    return float(f1_score(truth, [a["label"] for a in answers]))


@pytest.fixture(scope="module")
def loop(
    prefect_server: PrefectServer,
    lakefs_server: LakeFSServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Loop]:
    settings = fast_monitor_env()
    home = tmp_path_factory.mktemp("loop")
    with served_world(
        prefect_server, lakefs_server, home, rows=6000, settings=settings, worker=True
    ) as world:
        yield Loop(world.env, world.prefect, world.inference, world.monitor, world.retrain_id, home)


def wait_for(what: str, check: Any, timeout: float) -> Any:
    return eventually(check, what, timeout=timeout, interval=1)


def judged_after(loop: Loop, judged: int) -> None:
    """Wait until the monitor has judged a window beyond the first ``judged``."""
    eventually(
        lambda: loop.status()["windows_judged"] > judged,
        f"the monitor to judge window {judged + 1}",
        timeout=60,
    )


def test_in_distribution_traffic_triggers_nothing(loop: Loop) -> None:
    since = datetime.now(UTC)
    before = loop.status()["windows_judged"]
    for seed in range(31, 41):  # ten windows of in-distribution traffic, with labels
        records, truth = records_of("baseline", 500, seed)
        send_traffic(loop, records, truth)
        judged_after(loop, before)
        before = loop.status()["windows_judged"]
        assert loop.status()["state"] == "in distribution", loop.status()

    assert loop.retrain_runs(since) == []
    assert not loop.status()["drift_declared"]


def test_concept_drift_retrains_and_a_better_model_serves(loop: Loop) -> None:
    old_version = loop.serving_version()
    probe, probe_truth = records_of("concept_drift", 2000, 99)

    started, since = time.monotonic(), datetime.now(UTC)
    for seed in (41, 42, 43):
        judged = loop.status()["windows_judged"]
        records, truth = records_of("concept_drift", 500, seed)
        send_traffic(loop, records, truth)
        judged_after(loop, judged)  # each window is judged on its own traffic
    wait_for("drift declared", lambda: loop.status()["drift_declared"], timeout=90)
    runs = wait_for("a retrain run", lambda: loop.retrain_runs(since), timeout=60)
    assert len(runs) == 1
    assert runs[0]["parameters"]["reason"] == DRIFT_DETECTED
    assert runs[0]["parameters"]["model_version"] == old_version

    def finished() -> dict[str, Any] | None:
        run = loop.retrain_runs(since)[0]
        return run if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

    run = wait_for("the retrain run to finish", finished, timeout=300)
    assert run["state_type"] == "COMPLETED", (
        run["state"],
        (loop.home / "worker.log").read_text()[-3000:],
    )
    new_version = wait_for(
        "the new version serving",
        lambda: (v := loop.serving_version()) != old_version and v,
        timeout=30,
    )
    elapsed = time.monotonic() - started

    # Both versions judged on the same fresh drifted traffic: the new one's F1 is higher.
    from driftloop.serving import load_version

    old = load_version(f"{MODEL_NAME}:{old_version}")
    new = load_version(f"{MODEL_NAME}:{new_version}")
    old_f1 = f1_score(probe_truth, (old.score(probe) >= old.threshold).astype(int))
    new_f1 = f1_score(probe_truth, (new.score(probe) >= new.threshold).astype(int))
    served = send_traffic(loop, probe[:200], None)
    assert {a["model_version"] for a in served} == {new_version}
    assert new_f1 > old_f1, (old_f1, new_f1)
    log.info("loop closed in %.0f s: F1 on drifted data %.3f -> %.3f", elapsed, old_f1, new_f1)


def test_a_storm_of_drift_events_makes_one_retrain_run(loop: Loop) -> None:
    model = f"storm-{uuid.uuid4().hex[:6]}"  # its own resource: its own cooldown window
    payload = {"model_version": model, "drift_share": 0.9, "report": "lakefs://storm/x.html"}
    events = [Event(DRIFT_DETECTED, model_resource(model), payload) for _ in range(100)]
    # Ten bursts of ten over about ten seconds, well inside the trigger's cooldown (600 s): how
    # long sending takes on a busy machine is not what this test judges.
    for start in range(0, 100, 10):
        send_events(loop.prefect, events[start : start + 10])
        time.sleep(0.9)

    def storm_runs() -> list[dict[str, Any]]:
        return [r for r in loop.retrain_runs() if r["parameters"].get("model_version") == model]

    wait_for("the storm's retrain run", storm_runs, timeout=30)
    # Not a fixed sleep: once Prefect has stored all 100 events, count the runs.
    wait_for(
        "Prefect to have all 100 storm events",
        lambda: (
            len(events_named(loop.prefect, DRIFT_DETECTED, resource=model_resource(model))) == 100
        ),
        timeout=60,
    )
    assert len(storm_runs()) == 1
