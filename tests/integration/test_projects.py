"""A user's own project, with two models of different tasks, under `driftloop up`.

The data is none the project ships: scikit-learn's bundled diabetes (regression) and wine
(multiclass) data, resampled with noise (tests/bundled_data.py), written as a project folder
with its CSVs, specs and driftloop.yaml. Every component is a real process (`driftloop up`,
Prometheus and Alertmanager left out: this test is about the loop, not the alerts). The test
makes a drift on one model at a time, with delayed labels: that model's monitor declares it,
Prefect's automation retrains that model only, a better version serves, and the other model's
version does not change.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, r2_score

from driftloop.serving import frame_records
from driftloop.settings import fast_monitor_env
from tests.bundled_data import (
    diabetes_frame,
    drifted_diabetes,
    drifted_wine,
    wine_frame,
    write_project,
)
from tests.commands import stack_ports
from tests.integration.test_stack import Place
from tests.polling import eventually

REGRESSION, MULTICLASS = "diabetes-model", "wine-model"
DIABETES_FEATURES = list(diabetes_frame().columns[:-1])
WINE_FEATURES = list(wine_frame().columns[:-1])


class Client:
    """The stack's inference service, one model's routes at a time."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = httpx.Client(timeout=30)

    def version(self, model: str) -> str | None:
        try:
            answer = self.http.get(f"{self.base}/models/{model}")
        except httpx.HTTPError:
            return None
        return answer.json()["version"] if answer.status_code == 200 else None

    def predict_and_label(
        self, model: str, frame: pd.DataFrame, features: list[str], target: str
    ) -> list[dict[str, Any]]:
        """Rows predicted in lists of 50, each list's true labels sent back before the next
        (traffic over a few seconds: the monitor judges several windows of it)."""
        records = frame_records(frame, features)
        labels = frame[target].tolist()
        answers: list[dict[str, Any]] = []
        for start in range(0, len(records), 50):
            response = self.http.post(
                f"{self.base}/models/{model}/predict", json=records[start : start + 50]
            )
            assert response.status_code == 200, response.text
            answered = response.json()
            for answer, label in zip(answered, labels[start : start + 50], strict=True):
                given = {"prediction_id": answer["prediction_id"], "label": label}
                reply = self.http.post(f"{self.base}/models/{model}/feedback", json=given)
                assert reply.status_code == 200, reply.text
            answers += answered
        return answers


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Place, Client]]:
    folder = tmp_path_factory.mktemp("own-project")
    write_project(
        folder,
        {
            REGRESSION: (diabetes_frame(1200, seed=1), "diabetes", "progression"),
            MULTICLASS: (wine_frame(1000, seed=1), "wine", "cultivar"),
        },
    )
    place = Place(folder, stack_ports())
    with place.output.open("wb") as output:
        up = subprocess.Popen(
            [str(Path(sys.executable).with_name("driftloop")), "up"],
            env={
                **place.env,
                **fast_monitor_env(),
                "DRIFTLOOP_STACK__OBSERVABILITY": "off",
                # The models' own cadence: the project could say it per model, the test says it
                # for both.
                "DRIFTLOOP_PREFECT__RETRAIN_COOLDOWN_SECONDS": "600",
            },
            cwd=folder,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        place.wait_status_ok(up, timeout=400)
        yield place, Client(f"http://127.0.0.1:{place.ports['inference']}")
    finally:
        os.killpg(up.pid, signal.SIGINT)
        place.finish(up)


def retrains(place: Place, since: datetime) -> list[dict[str, Any]]:
    runs = place.prefect().post(
        "/flow_runs/filter", {"flows": {"name": {"any_": ["retrain"]}}, "sort": "START_TIME_DESC"}
    )
    runs.raise_for_status()
    return [r for r in runs.json() if datetime.fromisoformat(r["created"]) >= since]


def close_the_loop(
    place: Place,
    client: Client,
    *,
    model: str,
    other: str,
    traffic: Callable[[int], list[dict[str, Any]]],
    other_traffic: Callable[[], object],
) -> tuple[str, str, list[dict[str, Any]]]:
    """Usual traffic to ``other``, then drifted, labelled traffic to ``model`` (100 rows at a
    time, each a new window for the monitor) until a retrain starts, then until a retrain of
    ``model`` completes and a new version serves; (old version, new version, the answers the
    old version gave)."""
    old, other_before = client.version(model), client.version(other)
    assert old and other_before
    since = datetime.now(UTC)
    other_traffic()
    answers: list[dict[str, Any]] = []
    seeds = iter(range(100, 200))

    def retrain_started() -> bool:
        answers.extend(traffic(next(seeds)))
        return bool(retrains(place, since))

    eventually(retrain_started, f"drift on {model} to start a retrain", timeout=300, interval=0)
    answers = [a for a in answers if a["model_version"] == old]

    def completed() -> dict[str, Any] | None:
        done = [r for r in retrains(place, since) if r["state_type"] == "COMPLETED"]
        return done[0] if done else None

    eventually(completed, f"a completed retrain of {model}", timeout=400, interval=2)
    new = eventually(
        lambda: v if (v := client.version(model)) not in (None, old) else None,
        f"a new version of {model} serving",
        timeout=60,
    )
    runs = retrains(place, since)
    assert [r["parameters"]["model"] for r in runs] == [model], runs  # one run, this model's
    assert runs[0]["parameters"]["reason"] == "driftloop.drift.detected"
    assert client.version(other) == other_before  # the other model was not retrained
    return old, new, answers


def test_two_models_of_different_tasks_each_close_the_loop_on_their_own(
    stack: tuple[Place, Client],
) -> None:
    place, client = stack
    status = httpx.get(f"http://127.0.0.1:{place.ports['monitor']}/status").json()
    assert set(status["models"]) == {REGRESSION, MULTICLASS}
    short = httpx.post(f"{client.base}/predict", json={})
    assert short.status_code == 404 and f"/models/{REGRESSION}/predict" in short.json()["detail"]
    listed = httpx.get(f"{client.base}/models").json()["models"]
    assert {(m["name"], m["task"]) for m in listed} == {
        (REGRESSION, "regression"),
        (MULTICLASS, "multiclass"),
    }
    assert f"{REGRESSION}:{client.version(REGRESSION)}" in place.run("status").stdout
    document = httpx.get(f"{client.base}/openapi.json").json()
    assert {f"/models/{m}/predict" for m in (REGRESSION, MULTICLASS)} <= set(document["paths"])
    # Feedback on one model's route labels only that model's predictions.
    wine_answer = httpx.post(
        f"{client.base}/models/{MULTICLASS}/predict",
        json=frame_records(wine_frame().head(1), WINE_FEATURES)[0],
    ).json()
    crossed = httpx.post(
        f"{client.base}/models/{REGRESSION}/feedback",
        json={"prediction_id": wine_answer["prediction_id"], "label": 100.0},
    )
    assert crossed.status_code == 404 and f"of model {REGRESSION}" in crossed.json()["detail"]

    # The regression model drifts; the multiclass model sees its usual traffic.
    shifted: list[pd.DataFrame] = []

    def regression_drift(seed: int) -> list[dict[str, Any]]:
        shifted.append(drifted_diabetes(100, seed))
        return client.predict_and_label(REGRESSION, shifted[-1], DIABETES_FEATURES, "progression")

    old, new, old_answers = close_the_loop(
        place,
        client,
        model=REGRESSION,
        other=MULTICLASS,
        traffic=regression_drift,
        other_traffic=lambda: client.predict_and_label(
            MULTICLASS, wine_frame(400, seed=3), WINE_FEATURES, "cultivar"
        ),
    )
    fresh = drifted_diabetes(300, seed=4)
    new_answers = client.predict_and_label(REGRESSION, fresh, DIABETES_FEATURES, "progression")
    assert {a["model_version"] for a in new_answers} == {new}
    sent = pd.concat(shifted, ignore_index=True).head(len(old_answers))  # the old version's
    old_r2 = r2_score(sent["progression"], [a["value"] for a in old_answers])
    new_r2 = r2_score(fresh["progression"], [a["value"] for a in new_answers])
    assert new_r2 > old_r2 + 0.5, (old_r2, new_r2)  # the old model misses the new concept

    # Then the multiclass model drifts; the regression model keeps its new version.
    rotated: list[pd.DataFrame] = []

    def multiclass_drift(seed: int) -> list[dict[str, Any]]:
        rotated.append(drifted_wine(100, seed))
        return client.predict_and_label(MULTICLASS, rotated[-1], WINE_FEATURES, "cultivar")

    old, new, old_answers = close_the_loop(
        place,
        client,
        model=MULTICLASS,
        other=REGRESSION,
        traffic=multiclass_drift,
        other_traffic=lambda: client.predict_and_label(
            REGRESSION, drifted_diabetes(200, seed=6), DIABETES_FEATURES, "progression"
        ),
    )
    fresh = drifted_wine(300, seed=7)
    new_answers = client.predict_and_label(MULTICLASS, fresh, WINE_FEATURES, "cultivar")
    sent = pd.concat(rotated, ignore_index=True).head(len(old_answers))
    old_f1 = f1_score(sent["cultivar"], [a["class"] for a in old_answers], average="macro")
    new_f1 = f1_score(fresh["cultivar"], [a["class"] for a in new_answers], average="macro")
    assert new_f1 > old_f1 + 0.3, (old_f1, new_f1)
    assert np.isclose(sum(new_answers[0]["probabilities"].values()), 1.0)
