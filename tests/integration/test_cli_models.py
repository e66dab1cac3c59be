"""`driftloop train` and `driftloop model ...` as a user runs them."""

from __future__ import annotations

import re
from pathlib import Path

from tests.commands import run_driftloop
from tests.integration.conftest import LakeFSServer, PrefectServer


def test_train_then_list_show_promote_and_roll_back(
    prefect_server: PrefectServer, lakefs_server: LakeFSServer, tmp_path: Path
) -> None:
    env = {
        **lakefs_server.settings_env(),
        "DRIFTLOOP_PREFECT__API_URL": prefect_server.api_url,
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
    packaged = driftloop("package")
    assert "Bento driftloop-inference:" in packaged and first.group(1) in packaged
    refused = run_driftloop("model", "show", "nope", env=env, cwd=tmp_path)
    assert refused.returncode == 1 and "no model version" in refused.stderr
