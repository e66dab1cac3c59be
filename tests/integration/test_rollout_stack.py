"""A rollout decided by the stack alone, on real processes: `bentoml serve` scores a shadow
challenger beside production, labelled traffic arrives, the monitor reports it to Prefect
(``driftloop.feedback.progress``), the judge deployment's automation starts the judge on the
process worker, the judge promotes the better challenger, and the service swaps it in while
answering. The judge's cron schedule is set to once a year here, so only the automation can have
started it. A real Prometheus scrapes the service and the monitor meanwhile: the dashboard's
rollout panels, empty outside a rollout, are evaluated on what it stored during this one."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from driftloop.dashboards import queries
from driftloop.datasets.transactions import generate_transactions
from driftloop.project import example_project
from driftloop.registry import ModelRegistry
from driftloop.serving import frame_records
from driftloop.settings import fast_monitor_env, get_settings
from driftloop.stack.processes import Component, free_port
from tests.integration.conftest import (
    LakeFSServer,
    PrefectServer,
    ServedWorld,
    root,
    scraping_prometheus,
    served_world,
)
from tests.integration.prefect_events import wait_for_event
from tests.integration.test_rollout import FRAUD_RATE, MODEL, SPEC, Asking, train_version
from tests.polling import eventually

NEVER_SOON = "0 0 1 1 *"  # the judge's cron: once a year, on 1 January


@pytest.fixture(scope="module")
def world(
    prefect_server: PrefectServer,
    lakefs_server: LakeFSServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServedWorld, Component]]:
    project = tmp_path_factory.mktemp("rollout-project")
    shutil.copytree(example_project("transactions").root, project, dirs_exist_ok=True)
    declared = project / "driftloop.yaml"
    declared.write_text(declared.read_text() + "    rollout: {mode: shadow, min_labels: 150}\n")
    settings = {
        **fast_monitor_env(consecutive_windows=1000),  # no drift declaration: no retrain here
        "DRIFTLOOP_PROJECT": str(project),
        "DRIFTLOOP_PREFECT__JUDGE_CRON": NEVER_SOON,
    }
    home = tmp_path_factory.mktemp("rollout-stack")
    with served_world(
        prefect_server, lakefs_server, home, rows=4000, settings=settings, worker=True
    ) as served:
        # No Alertmanager: no alert is tested here.
        prometheus = scraping_prometheus(home, served, f"127.0.0.1:{free_port()}")
        try:
            prometheus.wait_healthy(timeout=120)
            yield served, prometheus
        finally:
            prometheus.stop()


def scraped(prometheus: Component, metric: str) -> bool:
    """Whether Prometheus holds a sample of ``metric`` now."""
    answer = httpx.get(
        f"{root(prometheus)}/api/v1/query", params={"query": metric}, timeout=10
    ).json()
    return bool(answer["data"]["result"])


def model_info(world: ServedWorld) -> dict[str, Any]:
    return dict(httpx.get(f"{root(world.inference)}/model", timeout=10).json())


def send_labelled(world: ServedWorld, rows: int, seed: int) -> set[str]:
    """``rows`` transactions through /predict and each one's true label; the versions that
    answered."""
    frame = generate_transactions(rows, seed=seed, fraud_rate=FRAUD_RATE)
    records = frame_records(frame, SPEC.feature_names)
    base = root(world.inference)
    answers: list[dict[str, Any]] = []
    with httpx.Client(timeout=30) as client:
        for start in range(0, rows, 100):
            answer = client.post(f"{base}/predict", json=records[start : start + 100])
            answer.raise_for_status()
            answers += answer.json()
        for answer, label in zip(answers, frame[SPEC.target].tolist(), strict=True):
            given = {"prediction_id": answer["prediction_id"], "label": int(label)}
            client.post(f"{base}/feedback", json=given).raise_for_status()
    return {str(answer["model_version"]) for answer in answers}


def judge_runs(world: ServedWorld, since: datetime) -> list[dict[str, Any]]:
    deployments = world.prefect.post("/deployments/filter", {}).json()
    judge_id = next(
        d["id"] for d in deployments if d["name"] == "judge" and d["work_pool_name"] == world.pool
    )
    found = world.prefect.post(
        "/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [judge_id]}}}
    ).json()
    return [run for run in found if datetime.fromisoformat(run["created"]) >= since]


def test_the_judge_deployment_alone_promotes_a_better_shadow_and_the_panels_show_it(
    world: tuple[ServedWorld, Component],
) -> None:
    served, prometheus = world
    since = datetime.now(UTC)
    registry = ModelRegistry.from_settings(get_settings())
    # Production learned nothing (labels shuffled); the challenger learned the fraud rule.
    noise = train_version(registry, 4000, seed=5, corrupt="shuffle")
    good = train_version(registry, 12000, seed=2)
    registry.promote(MODEL, noise, "test: the champion to beat")
    eventually(lambda: model_info(served)["version"] == noise, "the champion answering", timeout=30)
    registry.start_rollout(MODEL, good, "shadow", "test: a better challenger")
    eventually(
        lambda: model_info(served)["rollout"]["challenger"] == good,
        "the challenger on live traffic as a shadow",
        timeout=30,
    )
    rollout_began = datetime.now(UTC)

    answering: set[str] = set()
    with Asking(f"{root(served.inference)}/predict") as asking:
        # Fewer labelled rows than a decision needs (min_labels 150) first: the monitor exports
        # the running difference and Prometheus stores it before the judge can decide (the
        # bounds come with the rows a decision needs, when the judge may act at once).
        answering.update(send_labelled(served, 100, 40))
        eventually(
            lambda: scraped(prometheus, "driftloop_rollout_loss_difference"),
            "the rollout's running difference in Prometheus",
            timeout=60,
        )
        # Labelled traffic keeps coming, as it would, until the stack has decided.
        seeds = iter(range(41, 1000))

        def promoted() -> bool:
            if registry.stages.production_version(MODEL) == good:
                return True
            answering.update(send_labelled(served, 300, next(seeds)))
            return False

        eventually(promoted, "the judge deployment to promote the shadow", timeout=240)
        eventually(
            lambda: model_info(served)["version"] == good,
            "the promoted shadow answering",
            timeout=30,
        )
        asked = len(asking.answered)
        eventually(lambda: len(asking.answered) > asked + 50, "requests after the swap", timeout=30)
    failures, answered = asking.failures, asking.answered
    decided = datetime.now(UTC)

    # Only the automation can have run the judge (its schedule is once a year).
    runs = judge_runs(served, since)
    completed = [run for run in runs if run["state_type"] == "COMPLETED"]
    assert completed, [(run["name"], run["state_name"]) for run in runs]
    assert {run["parameters"]["started_by"] for run in completed} == {
        "judge on labelled rollout traffic"
    }
    # The challenger answered no client until it was promoted; no request failed in the swap.
    assert noise in answering and failures == []
    assert answered[-1] == good and set(answered) <= {noise, good}
    event = wait_for_event(
        served.prefect, "driftloop.model.promoted", since=since.isoformat(), version=good
    )
    assert (event["payload"]["reason"], event["payload"]["role"]) == ("live", "shadow")
    assert event["payload"]["actor"]["kind"] == "automation"
    assert event["payload"]["evidence"]["lower"] > 0

    # The rollout panels, on what Prometheus scraped while the rollout ran.
    base = root(prometheus)
    empty = []
    for dashboard, panel, expr in queries(during_rollout=True):
        answer = httpx.get(
            f"{base}/api/v1/query_range",
            params={
                "query": expr,
                "start": rollout_began.timestamp(),
                "end": decided.timestamp(),
                "step": "1s",
            },
            timeout=10,
        ).json()
        assert answer["status"] == "success", (panel, expr, answer)
        if not answer["data"]["result"]:
            empty.append(f"{dashboard} / {panel}: {expr}")
    assert empty == []
    (per_role,) = [e for _, p, e in queries() if p == "Rollout: predictions per role"]
    roles = httpx.get(
        f"{base}/api/v1/query_range",
        params={"query": per_role, "start": rollout_began.timestamp(), "end": decided.timestamp(),
                "step": "1s"},
        timeout=10,
    ).json()["data"]["result"]  # fmt: skip
    assert {series["metric"]["role"] for series in roles} >= {"champion", "shadow"}
