"""`driftloop ingest` as a user runs it: a subprocess against the real servers."""

from __future__ import annotations

from pathlib import Path

from driftloop.datasets.transactions import generate_transactions
from driftloop.stack.processes import free_port
from tests.commands import run_driftloop as driftloop
from tests.integration.conftest import LakeFSServer, PrefectServer


def settings_env(prefect: PrefectServer, lakefs: LakeFSServer, repo: str) -> dict[str, str]:
    return {
        **lakefs.settings_env(),
        "DRIFTLOOP_PREFECT__API_URL": prefect.api_url,
        "DRIFTLOOP_LAKEFS__REPOSITORY": repo,
    }


def test_ingest_command_lands_a_batch_and_says_where_to_look(
    prefect_server: PrefectServer, lakefs_server: LakeFSServer, tmp_path: Path
) -> None:
    env = settings_env(prefect_server, lakefs_server, "cli-happy")

    result = driftloop(
        "ingest",
        "--source",
        "builtin:?rows=800&seed=9",
        "--batch-id",
        "cli-1",
        env=env,
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "merged" in result.stdout
    assert "/runs/flow-run/" in result.stdout
    lake = lakefs_server.client("cli-happy")
    assert lake.get_commit("main").metadata["driftloop.batch_id"] == "cli-1"


def test_ingest_command_rejects_a_bad_file_listing_the_failed_checks(
    prefect_server: PrefectServer, lakefs_server: LakeFSServer, tmp_path: Path
) -> None:
    frame = generate_transactions(300, seed=1)
    frame.loc[0, "hour"] = 99
    frame.to_csv(tmp_path / "bad.csv", index=False)
    env = settings_env(prefect_server, lakefs_server, "cli-bad")

    result = driftloop("ingest", "--source", str(tmp_path / "bad.csv"), env=env, cwd=tmp_path)

    assert result.returncode == 1
    verdict = result.stderr[result.stderr.rindex("error:") :]  # after Prefect's own run log
    assert "ranges: hour" in verdict
    assert "branch 'ingest-transactions-" in verdict
    assert "main is unchanged" in verdict


def test_ingest_command_without_a_prefect_server_fails_clearly(
    lakefs_server: LakeFSServer, tmp_path: Path
) -> None:
    env = {
        **lakefs_server.settings_env(),
        "DRIFTLOOP_PREFECT__API_URL": f"http://127.0.0.1:{free_port()}/api",
    }

    result = driftloop("ingest", env=env, cwd=tmp_path)

    assert result.returncode == 1
    assert "no Prefect server answers" in result.stderr


def test_ingest_command_without_lakefs_credentials_names_the_variables(
    prefect_server: PrefectServer, tmp_path: Path
) -> None:
    env = {"DRIFTLOOP_PREFECT__API_URL": prefect_server.api_url}

    result = driftloop("ingest", env=env, cwd=tmp_path)

    assert result.returncode == 1
    assert "DRIFTLOOP_LAKEFS__ACCESS_KEY_ID" in result.stderr
