"""`driftloop deploy` applies prefect.yaml to a real Prefect server: the work pool, three
deployments with typed parameters, a paused ingest schedule, the retrain concurrency limit and
its two reactive triggers; a second run changes nothing."""

from __future__ import annotations

import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from driftloop.events import ALERT_FIRING, DRIFT_DETECTED, Event, model_resource
from driftloop.prefect_api import PrefectAccess
from tests.commands import run_driftloop as driftloop
from tests.integration.conftest import PrefectServer
from tests.polling import eventually

PROJECT = Path(__file__).resolve().parents[2]


def post(api: PrefectAccess, path: str, body: dict[str, Any] | None = None) -> Any:
    response = api.post(path, body or {}, timeout=30)
    response.raise_for_status()
    return response.json()


@dataclass(frozen=True)
class Deployed:
    first: subprocess.CompletedProcess[str]
    again: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def deployed(prefect_server: PrefectServer, tmp_path_factory: pytest.TempPathFactory) -> Deployed:
    """`driftloop deploy` run twice on the session's server (basic auth on)."""
    env = {
        **prefect_server.settings_env(),
        "DRIFTLOOP_HOME": str(tmp_path_factory.mktemp("deploy-home")),
        "DRIFTLOOP_PREFECT__WORK_POOL": "deploy-test-pool",
        "DRIFTLOOP_PREFECT__RETRAIN_COOLDOWN_SECONDS": "900",
    }
    return Deployed(
        driftloop("deploy", cwd=PROJECT, env=env), driftloop("deploy", cwd=PROJECT, env=env)
    )


def test_deploy_applies_the_deployments_and_the_retrain_trigger(
    prefect_server: PrefectServer, deployed: Deployed
) -> None:
    api = prefect_server.access
    first, again = deployed.first, deployed.again

    assert first.returncode == 0, first.stdout + first.stderr
    assert again.returncode == 0, again.stdout + again.stderr
    assert "deployed ingest, train and retrain" in first.stdout
    pool = api.get("/work_pools/deploy-test-pool").json()
    assert pool["type"] == "process"

    deployments = {d["name"]: d for d in post(api, "/deployments/filter")}
    assert {"ingest", "train", "retrain", "judge"} <= set(deployments)
    # prefect.yaml's; other tests of the session deploy flows of their own to this server.
    for name in ("ingest", "train", "retrain", "judge"):
        deployment = deployments[name]
        assert deployment["description"] and deployment["work_pool_name"] == "deploy-test-pool"
        assert deployment["pull_steps"][0]["prefect.deployments.steps.set_working_directory"] == {
            "directory": str(PROJECT)
        }
    schedules = deployments["ingest"]["schedules"]
    assert len(schedules) == 1 and schedules[0]["schedule"]["cron"] == "0 * * * *"
    assert schedules[0]["active"] is False  # paused in the embedded stack
    retrain = deployments["retrain"]
    properties = retrain["parameter_openapi_schema"]["properties"]
    assert {"number", "null"} <= {t.get("type") for t in properties["drift_share"]["anyOf"]}
    assert properties["min_labelled_rows"]["type"] == "integer"
    assert retrain["global_concurrency_limit"]["limit"] == 1
    assert retrain["concurrency_options"]["collision_strategy"] == "ENQUEUE"

    automations = [
        a
        for a in post(api, "/automations/filter")
        if any(action.get("deployment_id") == retrain["id"] for action in a["actions"])
    ]
    assert [a["name"] for a in automations] == ["retrain on drift or alert"]
    trigger = automations[0]["trigger"]
    assert sorted(trigger["expect"]) == [
        "driftloop.alert.firing",
        "driftloop.drift.detected",
        "driftloop.performance.degraded",
    ]
    assert trigger["posture"] == "Reactive" and trigger["threshold"] == 1
    assert trigger["for_each"] == ["prefect.resource.id"]
    assert trigger["within"] == 900
    assert trigger["match"] == {"prefect.resource.id": "driftloop.model.*"}
    assert automations[0]["actions"][0]["parameters"]["reason"] == "{{ event.event }}"

    judge = deployments["judge"]
    (judged,) = judge["schedules"]
    assert judged["schedule"]["cron"] == "*/5 * * * *" and judged["active"] is True
    assert judge["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
    (on_labels,) = [
        a
        for a in post(api, "/automations/filter")
        if any(action.get("deployment_id") == judge["id"] for action in a["actions"])
    ]
    assert on_labels["trigger"]["expect"] == ["driftloop.feedback.progress"]
    assert on_labels["trigger"]["for_each"] == ["prefect.resource.id"]
    assert on_labels["actions"][0]["parameters"]["model"] == "{{ event.payload.get('model') }}"


def retrain_deployment(api: PrefectAccess, deployed: Deployed) -> dict[str, Any]:
    assert deployed.first.returncode == 0, deployed.first.stdout + deployed.first.stderr
    return dict(next(d for d in post(api, "/deployments/filter") if d["name"] == "retrain"))


def drift(model: str) -> dict[str, Any]:
    """A driftloop.drift.detected event about ``model``, with ``model`` as its version too."""
    payload = {"model_version": model, "drift_share": 0.8, "report": f"lakefs://{model}"}
    return Event(DRIFT_DETECTED, model_resource(model), payload).to_json()


def delete(api: PrefectAccess, runs: list[dict[str, Any]]) -> None:
    """No worker polls the test pool: do not leave its runs scheduled."""
    for run in runs:
        httpx.delete(f"{api.url}/flow_runs/{run['id']}", headers=api.headers(), timeout=10)


def retrain_runs(api: PrefectAccess, deployment_id: str, model_version: str) -> list[Any]:
    runs = post(api, "/flow_runs/filter", {"deployments": {"id": {"any_": [deployment_id]}}})
    return [run for run in runs if run["parameters"].get("model_version") == model_version]


def test_prefect_refuses_anonymous_calls_and_an_anonymous_event_starts_no_run(
    prefect_server: PrefectServer, deployed: Deployed
) -> None:
    api = prefect_server.access
    retrain = retrain_deployment(api, deployed)
    tag = uuid.uuid4().hex[:8]

    anonymous = httpx.post(f"{api.url}/events", json=[drift(f"anonymous-{tag}")], timeout=10)
    guessed = PrefectAccess(api.url, auth_string="driftloop:guess").post(
        "/events", [drift(f"guessed-{tag}")]
    )
    started = httpx.post(f"{api.url}/deployments/{retrain['id']}/create_flow_run", json={})
    read = httpx.post(f"{api.url}/flow_runs/filter", json={}, timeout=10)

    assert [anonymous.status_code, guessed.status_code] == [401, 401]
    assert [started.status_code, read.status_code] == [401, 401]
    assert httpx.get(f"{api.url}/health", timeout=10).status_code == 200  # probes stay open

    # The same event, signed in, starts a retrain: the trigger is live, so the anonymous event
    # would have started one too.
    api.post("/events", [drift(f"signed-{tag}")]).raise_for_status()
    signed = eventually(
        lambda: retrain_runs(api, retrain["id"], f"signed-{tag}"), "the signed event's retrain"
    )
    assert retrain_runs(api, retrain["id"], f"anonymous-{tag}") == []
    assert retrain_runs(api, retrain["id"], f"guessed-{tag}") == []
    delete(api, signed)


def test_drift_and_an_alert_about_one_model_start_one_retrain_within_the_cooldown(
    prefect_server: PrefectServer, deployed: Deployed
) -> None:
    # Each model has one cooldown, whatever the event: a drift declared by the monitor and a
    # Prometheus alert a few seconds later once started two runs (one per trigger).
    api = prefect_server.access
    retrain = retrain_deployment(api, deployed)
    tag = uuid.uuid4().hex[:8]
    since = datetime.now(UTC)

    def alert(model: str, name: str) -> dict[str, Any]:
        payload = {"model": model, "alertname": name, "status": "firing"}
        return Event(ALERT_FIRING, model_resource(model), payload).to_json()

    api.post("/events", [drift(f"cooldown-{tag}")]).raise_for_status()
    time.sleep(2)
    api.post("/events", [alert(f"cooldown-{tag}", f"Cooldown{tag}")]).raise_for_status()
    api.post("/events", [alert(f"marker-{tag}", f"Marker{tag}")]).raise_for_status()  # last

    def runs() -> list[dict[str, Any]]:
        found = post(api, "/flow_runs/filter", {"deployments": {"id": {"any_": [retrain["id"]]}}})
        return [r for r in found if datetime.fromisoformat(r["created"]) >= since]

    # An alert starts a retrain with what it carries (no drift fields).
    marker = eventually(
        lambda: [r for r in runs() if r["parameters"].get("alertname") == f"Marker{tag}"],
        "the retrain of the alert sent last",
    )
    assert marker[0]["parameters"]["reason"] == ALERT_FIRING
    assert marker[0]["parameters"]["model_version"] is None
    time.sleep(3)  # the alert went in before the marker: give it the same time again
    started = runs()
    ours = [
        r
        for r in started
        if r["parameters"].get("model_version") == f"cooldown-{tag}"
        or r["parameters"].get("alertname") == f"Cooldown{tag}"
    ]
    assert [r["parameters"]["reason"] for r in ours] == [DRIFT_DETECTED]
    delete(api, started)


def test_deploy_with_wrong_prefect_credentials_says_so(
    prefect_server: PrefectServer, tmp_path: Path
) -> None:
    result = driftloop(
        "deploy",
        cwd=PROJECT,
        env={
            "DRIFTLOOP_PREFECT__API_URL": prefect_server.api_url,
            "DRIFTLOOP_PREFECT__AUTH_STRING": "driftloop:wrong",
            "DRIFTLOOP_HOME": str(tmp_path),
        },
    )

    assert result.returncode == 1
    assert f"the Prefect server at {prefect_server.api_url} refused credentials" in result.stderr
    assert "DRIFTLOOP_PREFECT__AUTH_STRING" in result.stderr
    assert "Traceback" not in result.stderr


def test_deploy_without_a_server_says_where_it_looked(tmp_path: Path) -> None:
    result = driftloop(
        "deploy",
        cwd=PROJECT,
        env={
            "DRIFTLOOP_PREFECT__API_URL": "http://127.0.0.1:9/api",
            "DRIFTLOOP_HOME": str(tmp_path),
        },
    )

    assert result.returncode == 1
    assert "no Prefect server answers at http://127.0.0.1:9/api" in result.stderr
