"""`driftloop train` and `driftloop model ...` as a user runs them."""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

from driftloop.project import example_project
from tests.commands import run_driftloop
from tests.integration.conftest import LakeFSServer, PrefectServer
from tests.integration.prefect_events import wait_for_event


def test_train_then_list_show_promote_and_roll_back(
    prefect_server: PrefectServer, lakefs_server: LakeFSServer, tmp_path: Path
) -> None:
    env = {
        **lakefs_server.settings_env(),
        **prefect_server.settings_env(),
        "DRIFTLOOP_LAKEFS__REPOSITORY": "cli-models",
        "DRIFTLOOP_HOME": str(tmp_path / "home"),
    }

    def driftloop(*args: str) -> str:
        result = run_driftloop(*args, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        return result.stdout

    driftloop("ingest", "--source", "builtin:?rows=6000&seed=1", "--batch-id", "b1")
    trained = driftloop("train")
    first = re.search(r"transactions-classifier:(\w+) is production", trained)
    assert first, trained
    assert "gate: no model in production" in trained
    second = re.search(r"transactions-classifier:(\w+) is", driftloop("train", "--no-promote"))
    assert second

    listed = driftloop("model", "list")
    shown = driftloop("model", "show", first.group(1))
    driftloop("model", "promote", second.group(1))
    after_promote = driftloop("model", "list")
    rolled = driftloop("model", "rollback")

    assert re.search(rf"{first.group(1)}\s+│ production", listed)
    assert re.search(rf"{second.group(1)}\s+│ candidate", listed)
    assert "lineage" in shown and "b1" in shown and "6000" in shown
    assert re.search(rf"{second.group(1)}\s+│ production", after_promote)
    assert f"{first.group(1)} is production again" in rolled
    history = driftloop("model", "history")
    for event in ("registered", "promoted", f"rollback from {second.group(1)}"):
        assert event in history
    packaged = driftloop("package", "--export", str(tmp_path / "dist"))
    assert "Bento driftloop-inference:" in packaged and first.group(1) in packaged
    (archive,) = (tmp_path / "dist").glob("driftloop-inference-*.bento")
    assert f"`bentoml import {archive}`" in packaged
    refused = run_driftloop("model", "show", "nope", env=env, cwd=tmp_path)
    assert refused.returncode == 1 and "no model version" in refused.stderr


def test_promotion_by_the_flow_and_by_hand_say_the_same_things_and_lists_script(
    prefect_server: PrefectServer, lakefs_server: LakeFSServer, tmp_path: Path
) -> None:
    env = {
        **lakefs_server.settings_env(),
        **prefect_server.settings_env(),
        "DRIFTLOOP_LAKEFS__REPOSITORY": "cli-promotions",
        "DRIFTLOOP_HOME": str(tmp_path / "home"),
        "COLUMNS": "80",  # what Rich assumes in a pipe
    }

    def driftloop(*args: str) -> str:
        result = run_driftloop(*args, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        return result.stdout

    since = datetime.now(UTC).isoformat()
    driftloop("ingest", "--source", "builtin:?rows=6000&seed=1", "--batch-id", "b1")
    by_flow = json.loads(driftloop("train", "--json"))
    assert by_flow["stage"] == "production" and len(by_flow["data_commit"]) == 64
    by_hand = json.loads(driftloop("train", "--no-promote", "--json"))
    by_hand_promoted = json.loads(driftloop("model", "promote", by_hand["version"], "--json"))

    promoted = "driftloop.model.promoted"
    api_url = prefect_server.access
    flow_event = wait_for_event(api_url, promoted, since=since, version=by_flow["version"])
    hand_event = wait_for_event(api_url, promoted, since=since, version=by_hand["version"])
    assert flow_event["payload"].keys() == hand_event["payload"].keys()
    assert flow_event["payload"]["actor"].keys() == hand_event["payload"]["actor"].keys()
    assert (flow_event["payload"]["trigger"], hand_event["payload"]["trigger"]) == (
        "gate",
        "manual",
    )
    assert flow_event["payload"]["actor"]["kind"] == "flow_run"
    assert flow_event["payload"]["actor"]["url"].startswith("http")
    assert hand_event["payload"]["actor"]["kind"] == "cli"
    assert hand_event["payload"]["previous_version"] == by_flow["version"]
    assert hand_event["payload"] == by_hand_promoted  # --json prints the event's payload
    assert hand_event["payload"]["metrics"] == by_hand["metrics"]

    listed = json.loads(driftloop("model", "list", "--json"))
    assert {v["version"]: v["stage"] for v in listed} == {
        by_flow["version"]: "archived",
        by_hand["version"]: "production",
    }
    table = driftloop("model", "list")  # a pipe of 80 columns: identifiers stay whole
    assert "…" not in table
    for version in listed:
        assert version["version"] in table and version["data_commit"] in table
    history = json.loads(driftloop("model", "history", "--json"))
    assert [entry["event"] for entry in history].count("promoted") == 2
    shown = json.loads(driftloop("model", "show", by_hand["version"], "--json"))
    assert shown["batches"][0]["batch_id"] == "b1"


def test_a_gate_winner_of_a_shadow_rollout_waits_beside_production_for_promote_or_abort(
    prefect_server: PrefectServer, lakefs_server: LakeFSServer, tmp_path: Path
) -> None:
    folder = tmp_path / "project"
    shutil.copytree(example_project("transactions").root, folder)
    declared = folder / "driftloop.yaml"
    # margin 0: a second run on the same commit and seed (the same model) passes the gate.
    declared.write_text(declared.read_text() + "    rollout: shadow\n    gate: {margin: 0.0}\n")
    env = {
        **lakefs_server.settings_env(),
        **prefect_server.settings_env(),
        "DRIFTLOOP_LAKEFS__REPOSITORY": "cli-rollouts",
        "DRIFTLOOP_HOME": str(tmp_path / "home"),
        "DRIFTLOOP_PROJECT": str(folder),
    }

    def driftloop(*args: str) -> str:
        result = run_driftloop(*args, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        return result.stdout

    since = datetime.now(UTC).isoformat()
    driftloop("ingest", "--source", "builtin:?rows=4000&seed=1", "--batch-id", "b1")
    first = json.loads(driftloop("train", "--json"))  # no production yet: straight there
    second = json.loads(driftloop("train", "--json"))
    status = json.loads(driftloop("model", "rollout", "status", "--json"))
    shown = driftloop("model", "rollout", "status")
    aborted = driftloop("model", "rollout", "abort")
    after_abort = json.loads(driftloop("model", "rollout", "status", "--json"))
    third = json.loads(driftloop("train", "--json"))
    promoted = json.loads(driftloop("model", "rollout", "promote", "--json"))
    refused = run_driftloop("model", "rollout", "abort", env=env, cwd=tmp_path)

    assert first["stage"] == "production"
    assert (second["stage"], second["promoted"]) == ("shadow", False)
    assert status["production"] == first["version"] and status["challenger"] == second["version"]
    assert (status["mode"], status["role"], status["overdue"]) == ("shadow", "shadow", False)
    assert f"shadow {second['version']}" in shown and "200 labelled rows" in shown
    assert "off live traffic" in aborted and after_abort["challenger"] is None
    assert third["stage"] == "shadow"
    assert (promoted["version"], promoted["previous_version"]) == (
        third["version"],
        first["version"],
    )
    assert (promoted["trigger"], promoted["role"]) == ("manual", "shadow")
    assert refused.returncode == 1 and "no challenger on live traffic" in refused.stderr
    started = wait_for_event(
        prefect_server.access, "driftloop.rollout.started", since=since, version=second["version"]
    )
    assert (started["payload"]["role"], started["payload"]["trigger"]) == ("shadow", "gate")
    assert started["payload"]["previous_version"] == first["version"]
    rejected = wait_for_event(
        prefect_server.access, "driftloop.model.rejected", since=since, version=second["version"]
    )
    assert (rejected["payload"]["trigger"], rejected["payload"]["reason"]) == ("manual", "manual")
    listed = {v["version"]: v["stage"] for v in json.loads(driftloop("model", "list", "--json"))}
    assert listed == {
        first["version"]: "archived",
        second["version"]: "candidate",
        third["version"]: "production",
    }
