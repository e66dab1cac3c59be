"""`driftloop deploy` applies prefect.yaml to a real Prefect server: the work pool, three
deployments with typed parameters, a paused ingest schedule, the retrain concurrency limit and
its two reactive triggers; a second run changes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.commands import run_driftloop as driftloop
from tests.integration.conftest import PrefectServer

PROJECT = Path(__file__).resolve().parents[2]


def post(api_url: str, path: str, body: dict[str, Any] | None = None) -> Any:
    response = httpx.post(f"{api_url}{path}", json=body or {}, timeout=30)
    response.raise_for_status()
    return response.json()


def test_deploy_applies_the_deployments_and_the_retrain_trigger(
    prefect_server: PrefectServer, tmp_path: Path
) -> None:
    api = prefect_server.api_url
    env = {
        "DRIFTLOOP_PREFECT__API_URL": api,
        "DRIFTLOOP_HOME": str(tmp_path / "home"),
        "DRIFTLOOP_PREFECT__WORK_POOL": "deploy-test-pool",
        "DRIFTLOOP_PREFECT__RETRAIN_COOLDOWN_SECONDS": "900",
    }

    first = driftloop("deploy", cwd=PROJECT, env=env)
    again = driftloop("deploy", cwd=PROJECT, env=env)

    assert first.returncode == 0, first.stdout + first.stderr
    assert again.returncode == 0, again.stdout + again.stderr
    assert "deployed ingest, train and retrain" in first.stdout
    pool = httpx.get(f"{api}/work_pools/deploy-test-pool").json()
    assert pool["type"] == "process"

    deployments = {d["name"]: d for d in post(api, "/deployments/filter")}
    assert {"ingest", "train", "retrain"} <= set(deployments)
    for deployment in deployments.values():
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
    assert retrain["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"

    automations = [
        a
        for a in post(api, "/automations/filter")
        if any(action.get("deployment_id") == retrain["id"] for action in a["actions"])
    ]
    assert sorted(a["name"] for a in automations) == ["retrain on alert", "retrain on drift"]
    expected = {
        "retrain on drift": "driftloop.drift.detected",
        "retrain on alert": "driftloop.alert.firing",
    }
    for automation in automations:
        trigger = automation["trigger"]
        assert trigger["expect"] == [expected[automation["name"]]]
        assert trigger["posture"] == "Reactive" and trigger["threshold"] == 1
        assert trigger["for_each"] == ["prefect.resource.id"]
        assert trigger["within"] == 900
        assert trigger["match"] == {"prefect.resource.id": "driftloop.model.*"}
        assert automation["actions"][0]["parameters"]["reason"] == "{{ event.event }}"


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
