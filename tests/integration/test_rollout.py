"""The live judge on real processes: `bentoml serve` answering labelled traffic with a challenger
beside production, the judge flow reporting to a real Prefect server, the registry and the
prediction log on disk. A better shadow is promoted and swapped in without a failed request; a
worse one (trained on corrupted labels) is withdrawn without ever answering a client; a worse
canary answers its share and is rolled back.

(Here the test starts the judge flow; in the stack the judge deployment runs it on a schedule
and on the monitor's driftloop.feedback.progress events, see test_deploy.py.)"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
from scipy.stats import binom

from driftloop.datasets.transactions import generate_transactions
from driftloop.project import example_project
from driftloop.registry import BatchLineage, ModelRegistry
from driftloop.serving import frame_records
from driftloop.stack.processes import Component
from driftloop.training import TrainParams, split_frame, train_model
from flows.common import prefect_api
from flows.judge import judge
from tests.integration.conftest import PrefectServer
from tests.integration.prefect_events import wait_for_event
from tests.integration.test_grafana import TOKEN as GRAFANA_TOKEN
from tests.integration.test_grafana import GrafanaDouble
from tests.integration.test_inference import MODEL, SPEC, serve, url
from tests.polling import eventually

FRAUD_RATE = 0.1  # more positives than the demo's 3 %: fewer labels tell the models apart
LABELLED = 1500


def train_version(registry: ModelRegistry, rows: int, seed: int, corrupt: str = "") -> str:
    """Register a fraud model trained on ``rows`` transactions (10 % fraud); ``corrupt``:
    "shuffle" (it learns nothing) or "flip" (it learns the opposite). Its version."""
    frame = generate_transactions(rows, seed=seed, fraud_rate=FRAUD_RATE)
    if corrupt == "shuffle":
        frame["is_fraud"] = np.random.default_rng(seed).permutation(frame["is_fraud"])
    elif corrupt == "flip":
        frame["is_fraud"] = 1 - frame["is_fraud"]
    params = TrainParams(max_iter=60, seed=seed)
    trained = train_model(split_frame(frame, SPEC, params, None), SPEC, params)
    return registry.register_trained(
        MODEL, trained, spec=SPEC, data_commit=f"{seed}" * 64, git_sha="test",
        batches=[BatchLineage(f"b{seed}", "c" * 64, rows, None)],
    ).version  # fmt: skip


class Versions:
    """A registry with three versions: one that learned nothing (labels shuffled), a good one,
    and one trained on flipped labels."""

    def __init__(self, home: Path) -> None:
        import os

        self.home = home
        self.registry = ModelRegistry(
            Path(os.environ["BENTOML_HOME"]), f"sqlite:///{home / 'registry.sqlite'}"
        )
        self.noise = train_version(self.registry, 4000, seed=5, corrupt="shuffle")
        self.good = train_version(self.registry, 12000, seed=2)
        self.flipped = train_version(self.registry, 4000, seed=3, corrupt="flip")


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> Versions:
    return Versions(tmp_path_factory.mktemp("judge-home"))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("judge-project")
    shutil.copytree(example_project("transactions").root, folder, dirs_exist_ok=True)
    declared = folder / "driftloop.yaml"
    declared.write_text(declared.read_text() + "    rollout: {mode: shadow, min_labels: 150}\n")
    return folder


@pytest.fixture(scope="module")
def server(versions: Versions, project: Path) -> Iterator[Component]:
    versions.registry.promote(MODEL, versions.noise, "test: the champion to beat")
    component = serve(versions.home, "inference.log", project=str(project))
    try:
        component.wait_healthy(timeout=120)
        yield component
    finally:
        component.stop()


@pytest.fixture
def judged_here(
    versions: Versions,
    project: Path,
    prefect_server: PrefectServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[GrafanaDouble]:
    """The judge flow, run in this process over the same home and project as the service, with
    a Grafana to annotate (a double of its HTTP API: no Grafana server can run here)."""
    grafana = GrafanaDouble()
    monkeypatch.setenv("DRIFTLOOP_HOME", str(versions.home))
    monkeypatch.setenv("DRIFTLOOP_PROJECT", str(project))
    monkeypatch.setenv("DRIFTLOOP_GRAFANA__URL", grafana.url)
    monkeypatch.setenv("DRIFTLOOP_GRAFANA__TOKEN", GRAFANA_TOKEN)
    try:
        with prefect_api(prefect_server.access):
            yield grafana
    finally:
        grafana.server.shutdown()


def labelled_traffic(server: Component, rows: int, seed: int) -> list[dict[str, object]]:
    """Send ``rows`` transactions and the true label of each answer; the answers."""
    frame = generate_transactions(rows, seed=seed, fraud_rate=FRAUD_RATE)
    sent = frame_records(frame, SPEC.feature_names)
    truth = frame["is_fraud"].astype(int).tolist()
    answers: list[dict[str, object]] = []
    with httpx.Client(timeout=30) as client:
        for start in range(0, rows, 100):
            answer = client.post(url(server, "/predict"), json=sent[start : start + 100])
            assert answer.status_code == 200, answer.text
            answers += answer.json()
        for answer, label in zip(answers, truth, strict=True):
            given = {"prediction_id": answer["prediction_id"], "label": label}
            assert client.post(url(server, "/feedback"), json=given).status_code == 200
    return answers


class Asking:
    """Inside its block, one transaction sent to ``predict_url`` again and again from a thread:
    the version of every answer, in order, and every failure."""

    def __init__(self, predict_url: str) -> None:
        self.url = predict_url
        self.answered: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._ask)

    def __enter__(self) -> Asking:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _ask(self) -> None:
        record = frame_records(generate_transactions(1, seed=1), SPEC.feature_names)[0]
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                answer = client.post(self.url, json=record)
                if answer.status_code != 200:
                    self.failures.append(f"{answer.status_code} {answer.text}")
                else:
                    self.answered.append(answer.json()["model_version"])
                self._stop.wait(0.01)


def model_info(server: Component) -> dict[str, object]:
    return httpx.get(url(server, "/model")).json()  # type: ignore[no-any-return]


def start(versions: Versions, server: Component, version: str, role: str) -> None:
    versions.registry.start_rollout(MODEL, version, role, "test")  # type: ignore[arg-type]
    eventually(
        lambda: model_info(server)["rollout"]["challenger"] == version,  # type: ignore[index]
        f"{version} on live traffic as a {role}",
        timeout=30,
    )


def shadow_copies_logged(server: Component) -> bool:
    return model_info(server)["rollout"]["shadow_waiting"] == 0  # type: ignore[index]


def test_a_better_shadow_is_promoted_by_the_judge_and_swapped_in_without_a_failed_request(
    server: Component, versions: Versions, prefect_server: PrefectServer, judged_here: GrafanaDouble
) -> None:
    since = datetime.now(UTC).isoformat()
    start(versions, server, versions.good, "shadow")
    answers = labelled_traffic(server, LABELLED, seed=31)
    eventually(lambda: shadow_copies_logged(server), "every shadow copy scored", timeout=30)
    with Asking(url(server, "/predict")) as asking:
        (outcome,) = judge()
        eventually(
            lambda: model_info(server)["version"] == versions.good,
            "the promoted shadow answering",
            timeout=30,
        )
        asked = len(asking.answered)
        eventually(lambda: len(asking.answered) > asked + 50, "requests after the swap", timeout=30)
    failures, answered = asking.failures, asking.answered

    assert {answer["model_version"] for answer in answers} == {versions.noise}
    assert outcome.decision == "promote", outcome.reason
    assert outcome.evidence["samples"][0] >= 150 and outcome.evidence["lower"] > 0
    assert failures == []
    assert answered[-1] == versions.good and set(answered) <= {versions.noise, versions.good}
    assert model_info(server)["rollout"]["challenger"] is None
    event = wait_for_event(
        prefect_server.access, "driftloop.model.promoted", since=since, version=versions.good
    )
    assert (event["payload"]["reason"], event["payload"]["role"]) == ("live", "shadow")
    assert event["payload"]["previous_version"] == versions.noise
    assert event["payload"]["evidence"]["test"].startswith("mSPRT")
    # The run's artifact in Prefect's UI: the decision and the evidence behind it.
    artifacts = prefect_server.access.post(
        "/artifacts/filter", {"artifacts": {"key": {"any_": ["rollout-judgement"]}}, "limit": 50}
    ).json()
    shown = next(a["data"] for a in artifacts if versions.good in a["data"])
    assert f"{MODEL}: promote" in shown and "always-valid 95% bounds" in shown


def test_a_shadow_trained_on_corrupted_labels_is_withdrawn_and_never_answers(
    server: Component,
    versions: Versions,
    prefect_server: PrefectServer,
    judged_here: GrafanaDouble,
) -> None:
    since = datetime.now(UTC).isoformat()
    champion = str(model_info(server)["version"])
    start(versions, server, versions.flipped, "shadow")
    answers = labelled_traffic(server, 400, seed=32)
    eventually(lambda: shadow_copies_logged(server), "every shadow copy scored", timeout=30)

    (outcome,) = judge()

    assert outcome.decision == "reject", outcome.reason
    assert {answer["model_version"] for answer in answers} == {champion}
    eventually(
        lambda: model_info(server)["rollout"]["challenger"] is None, "the shadow gone", timeout=30
    )
    assert versions.registry.get(MODEL, versions.flipped).stage == "candidate"
    event = wait_for_event(
        prefect_server.access, "driftloop.model.rejected", since=since, version=versions.flipped
    )
    assert (event["payload"]["reason"], event["payload"]["role"]) == ("live", "shadow")
    assert event["payload"]["evidence"]["upper"] < 0
    # The decision on the dashboards: an annotation tagged with the model.
    ((text, tags),) = [
        (body["text"], body["tags"])
        for method, path, body, _ in judged_here.requests
        if (method, path) == ("POST", "/api/annotations")
    ]
    assert tags == ["driftloop", "rejection", MODEL]
    assert f"rejected {MODEL}:{versions.flipped}" in text and "live by" in text


def test_a_worse_canary_answers_its_share_then_is_rolled_back(
    server: Component, versions: Versions, judged_here: GrafanaDouble
) -> None:
    champion = str(model_info(server)["version"])
    start(versions, server, versions.flipped, "canary")

    answers = labelled_traffic(server, 2000, seed=33)
    by_canary = sum(answer["model_version"] == versions.flipped for answer in answers)
    (outcome,) = judge()
    eventually(
        lambda: model_info(server)["rollout"]["challenger"] is None, "the canary gone", timeout=30
    )
    after = labelled_traffic(server, 300, seed=34)

    low, high = binom.interval(0.99, len(answers), 0.1)
    assert low <= by_canary <= high, (by_canary, low, high)
    assert outcome.decision == "reject", outcome.reason
    assert outcome.evidence["samples"][1] == by_canary
    assert {answer["model_version"] for answer in after} == {champion}
