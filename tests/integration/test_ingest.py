"""The ingest flow on real processes: a Prefect server and the lakeFS-compatible server."""

from __future__ import annotations

import contextvars
import io
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from driftloop.datasets.spec import load_spec
from driftloop.datasets.transactions import generate_transactions
from driftloop.ingestion import (
    BatchRejected,
    IngestOutcome,
    batch_path,
    ingest_branch,
    read_dataset,
    report_path,
)
from driftloop.lakefs_client import LakeFSClient
from flows.common import prefect_api
from flows.ingest import ingest
from tests.integration.conftest import LakeFSServer, PrefectServer, run_lakefs_server
from tests.integration.prefect_events import wait_for_event

REPO = "driftloop"


@pytest.fixture
def use_prefect(prefect_server: PrefectServer) -> Iterator[PrefectServer]:
    with prefect_api(prefect_server.access):
        yield prefect_server


def point_settings_at(monkeypatch: pytest.MonkeyPatch, server: LakeFSServer, repo: str) -> None:
    for name, value in server.settings_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DRIFTLOOP_LAKEFS__REPOSITORY", repo)
    monkeypatch.setenv("DRIFTLOOP_LAKEFS__REQUEST_RETRIES", "2")


@pytest.fixture
def lake(
    lakefs_server: LakeFSServer, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> LakeFSClient:
    """A client of a repository of this test's own, with settings pointing there."""
    repo = "ing-" + request.node.name[5:40].replace("_", "-").lower().strip("-")
    point_settings_at(monkeypatch, lakefs_server, repo)
    return lakefs_server.client(repo)


def source_file(tmp_path: Path, frame: pd.DataFrame, name: str = "batch.parquet") -> str:
    path = tmp_path / name
    frame.to_parquet(path) if name.endswith(".parquet") else frame.to_csv(path, index=False)
    return str(path)


def in_this_context(target: Callable[..., None], *args: object) -> threading.Thread:
    """Start ``target`` in a thread that sees this thread's Prefect settings (contextvars)."""
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(target, *args))
    thread.start()
    return thread


def merges_of(lake: LakeFSClient, batch_id: str) -> int:
    """How many commits on main's first-parent line merged ``batch_id``."""
    return sum(
        1
        for commit in lake.log("main", amount=1000)
        if commit.metadata.get("driftloop.batch_id") == batch_id and len(commit.parents) == 2
    )


def test_valid_batch_lands_on_main_with_its_lineage(
    use_prefect: PrefectServer, lake: LakeFSClient
) -> None:
    outcome = ingest("transactions-classifier", "builtin:?rows=3000&seed=11", batch_id="day-1")

    assert outcome.status == "merged"
    head = lake.get_commit("main")
    assert head.id == outcome.commit_id and len(head.id) == 64
    assert head.metadata["driftloop.batch_id"] == "day-1"
    assert head.metadata["driftloop.dataset"] == "transactions"
    assert head.metadata["driftloop.rows"] == "3000"
    assert head.metadata["driftloop.schema_sha256"] == load_spec("transactions").schema_sha256()
    assert head.metadata["driftloop.source"] == "builtin:?rows=3000&seed=11"
    assert head.metadata["::lakefs::Prefect::url[url:ui]"].startswith("http")
    stored = pd.read_parquet(io.BytesIO(lake.download("main", batch_path("transactions", "day-1"))))
    expected = generate_transactions(3000, seed=11)
    assert stored["transaction_id"].tolist() == expected["transaction_id"].tolist()
    assert stored["amount"].tolist() == expected["amount"].tolist()
    assert not lake.branch_exists(ingest_branch("day-1"))
    event = wait_for_event(
        use_prefect.access, "driftloop.ingest.merged", batch_id="day-1", data_commit=head.id
    )
    assert event["resource"]["prefect.resource.id"] == "driftloop.model.transactions-classifier"
    assert event["payload"]["data_commit"] == head.id and event["payload"]["rows"] == 3000


def test_reingesting_a_landed_batch_is_a_no_op_that_says_so(
    use_prefect: PrefectServer, lake: LakeFSClient, caplog: pytest.LogCaptureFixture
) -> None:
    first = ingest("transactions-classifier", "builtin:?rows=500&seed=3")
    head = lake.branch_head("main")

    again = ingest("transactions-classifier", "builtin:?rows=500&seed=3")

    assert first.status == "merged" and again.status == "already_ingested"
    assert again.batch_id == first.batch_id  # derived from the content
    assert lake.branch_head("main") == head
    assert "already on main" in caplog.text


def test_invalid_batch_is_rejected_and_main_is_unchanged(
    use_prefect: PrefectServer, lake: LakeFSClient, tmp_path: Path
) -> None:
    ingest("transactions-classifier", "builtin:?rows=500&seed=1", batch_id="good")
    head = lake.branch_head("main")
    frame = generate_transactions(400, seed=2)
    frame.loc[3, "amount"] = -50.0
    frame.loc[5, "merchant_category"] = "casino"
    frame.loc[7, "transaction_id"] = frame.loc[8, "transaction_id"]
    frame = frame.drop(columns=["device"])

    with pytest.raises(BatchRejected) as rejected:
        ingest("transactions-classifier", source_file(tmp_path, frame), batch_id="bad")

    message = str(rejected.value)
    for check in ("schema", "ranges", "categories", "duplicates"):
        assert f"- {check}:" in message
    assert "device" in message and "casino" in message and "amount" in message
    assert lake.branch_head("main") == head
    assert not lake.exists("main", batch_path("transactions", "bad"))
    branch = ingest_branch("bad")
    assert lake.exists(branch, batch_path("transactions", "bad"))
    assert b'"passed": false' in lake.download(branch, report_path("transactions", "bad"))
    event = wait_for_event(use_prefect.access, "driftloop.ingest.rejected", batch_id="bad")
    assert set(event["payload"]["failed_checks"]) >= {
        "schema",
        "ranges",
        "categories",
        "duplicates",
    }
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["validation-bad"]))
        )
    assert artifacts and "FAIL" in str(artifacts[0].data)


def test_reading_at_an_older_commit_returns_the_older_data(
    use_prefect: PrefectServer, lake: LakeFSClient
) -> None:
    first = ingest("transactions-classifier", "builtin:?rows=300&seed=21", batch_id="b-1").commit_id
    second = ingest(
        "transactions-classifier", "builtin:?rows=200&seed=22", batch_id="b-2"
    ).commit_id

    old = read_dataset(lake, str(first), "transactions")
    new = read_dataset(lake, str(second), "transactions")

    assert len(old) == 300 and len(new) == 500
    assert set(old["transaction_id"]) < set(new["transaction_id"])


def test_two_concurrent_ingestions_both_land(
    use_prefect: PrefectServer, lake: LakeFSClient
) -> None:
    outcomes: dict[str, object] = {}

    def run(batch: str, seed: int) -> None:
        try:
            outcomes[batch] = ingest(
                "transactions-classifier", f"builtin:?rows=2000&seed={seed}", batch_id=batch
            )
        except Exception as error:  # reported by the assertion below
            outcomes[batch] = error

    threads = [in_this_context(run, f"par-{n}", 40 + n) for n in range(2)]
    for thread in threads:
        thread.join(timeout=180)

    assert {k: v.status for k, v in outcomes.items() if isinstance(v, IngestOutcome)} == {
        "par-0": "merged",
        "par-1": "merged",
    }, outcomes
    assert merges_of(lake, "par-0") == 1 and merges_of(lake, "par-1") == 1
    assert len(read_dataset(lake, lake.resolve("main"), "transactions")) == 4000


@pytest.mark.parametrize("crash_at", ["upload", "commit", "merge"])
def test_kill_9_of_the_server_mid_ingest_then_a_rerun_lands_the_batch_exactly_once(
    use_prefect: PrefectServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    crash_at: str,
) -> None:
    home = tmp_path / "lakefs"
    crashing = run_lakefs_server(home, crash_at=crash_at)
    port = int(crashing.endpoint.rsplit(":", 1)[1])
    point_settings_at(monkeypatch, crashing, REPO)
    lake = crashing.client(REPO)
    lake.ensure_repository("local://driftloop")
    first: dict[str, object] = {}

    def first_attempt() -> None:
        try:
            first["outcome"] = ingest(
                "transactions-classifier", "builtin:?rows=5000&seed=5", batch_id="crash"
            )
        except Exception as error:
            first["error"] = error

    attempt = in_this_context(first_attempt)
    crashing.component.process.wait(timeout=120)  # the server SIGKILLs itself at the crash point
    assert crashing.component.process.returncode == -9
    restarted = run_lakefs_server(home, port=port)  # same data, same address, no crash point
    try:
        attempt.join(timeout=180)
        assert lake.log("main")  # readable after the crash
        rerun = ingest("transactions-classifier", "builtin:?rows=5000&seed=5", batch_id="crash")

        assert rerun.status in ("merged", "already_ingested"), (first, rerun)
        assert merges_of(lake, "crash") == 1
        assert len(read_dataset(lake, lake.resolve("main"), "transactions")) == 5000
        assert not lake.branch_exists(ingest_branch("crash"))
        assert lake.uncommitted("main") == []
    finally:
        restarted.component.stop()
        crashing.component.stop()
