"""`driftloop ingest` as a user runs it: a subprocess against the real servers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from driftloop.datasets.transactions import generate_transactions
from driftloop.stack.processes import free_port
from tests.commands import run_driftloop as driftloop
from tests.integration.conftest import LakeFSServer, PrefectServer


def settings_env(prefect: PrefectServer, lakefs: LakeFSServer, repo: str) -> dict[str, str]:
    return {
        **lakefs.settings_env(),
        **prefect.settings_env(),
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
    env = prefect_server.settings_env()

    result = driftloop("ingest", env=env, cwd=tmp_path)

    assert result.returncode == 1
    assert "DRIFTLOOP_LAKEFS__ACCESS_KEY_ID" in result.stderr


def unreadable_sources(folder: Path) -> dict[str, Path]:
    (folder / "empty.csv").write_text("")
    (folder / "zero.parquet").write_bytes(b"")
    return {
        "missing file": folder / "no-such-file.csv",
        "empty CSV": folder / "empty.csv",
        "0-byte Parquet": folder / "zero.parquet",
    }


@pytest.mark.parametrize("kind", ["missing file", "empty CSV", "0-byte Parquet"])
def test_an_unreadable_source_is_one_line_with_the_run_beside_it(
    prefect_server: PrefectServer, lakefs_server: LakeFSServer, tmp_path: Path, kind: str
) -> None:
    """These once printed 72-78 lines with two Prefect tracebacks."""
    source = unreadable_sources(tmp_path)[kind]
    env = settings_env(prefect_server, lakefs_server, "cli-unreadable")

    result = driftloop("ingest", "--source", str(source), env=env, cwd=tmp_path)

    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(source.name) in errors[0], output
    assert "/runs/flow-run/" in output[output.index("error:") :], output


def test_training_on_a_branch_that_does_not_exist_fails_at_once_in_one_line(
    prefect_server: PrefectServer, lakefs_server: LakeFSServer, tmp_path: Path
) -> None:
    """A 404 was retried three times over 22 s and ended in a traceback."""
    env = settings_env(prefect_server, lakefs_server, "cli-happy")
    driftloop("ingest", "--source", "builtin:?rows=800&seed=9", env=env, cwd=tmp_path)

    started = time.monotonic()
    result = driftloop("train", "--ref", "no-such-branch", env=env, cwd=tmp_path)

    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output, output
    assert "no-such-branch" in output[output.index("error:") :]
    assert time.monotonic() - started < 20  # no retry of a 404 (about 22 s of them before)


def test_an_unknown_estimator_is_refused_before_anything_runs(tmp_path: Path) -> None:
    result = driftloop("train", "--estimator", "nope", cwd=tmp_path)

    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in output, output
    assert "nope" in output and "hist_gradient_boosting" in output
