"""Training, registry, gate and packaging on real processes (Prefect, lakeFS-compatible server)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)

from driftloop.lakefs_client import LakeFSClient
from driftloop.registry import ModelRegistry
from driftloop.settings import get_settings
from flows.common import prefect_api
from flows.ingest import ingest
from flows.package import package
from flows.train import train
from tests.integration.conftest import LakeFSServer, PrefectServer
from tests.integration.prefect_events import wait_for_event

MODEL = "transactions-classifier"


@pytest.fixture
def world(
    prefect_server: PrefectServer,
    lakefs_server: LakeFSServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[tuple[LakeFSClient, PrefectServer]]:
    """A repository, a DRIFTLOOP_HOME (so a registry) of this test's own, and two landed batches."""
    repo = "tr-" + request.node.name[5:35].replace("_", "-").lower().strip("-")
    for name, value in lakefs_server.settings_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DRIFTLOOP_LAKEFS__REPOSITORY", repo)
    monkeypatch.setenv("DRIFTLOOP_HOME", str(tmp_path / "home"))
    with prefect_api(prefect_server.access):
        ingest("transactions-classifier", "builtin:?rows=8000&seed=1", batch_id="day-1")
        ingest(
            "transactions-classifier",
            "builtin:?rows=8000&seed=2&start=2026-01-02",
            batch_id="day-2",
        )
        yield lakefs_server.client(repo), prefect_server


def registry() -> ModelRegistry:
    settings = get_settings()
    return ModelRegistry.from_settings(settings)


def test_training_from_a_pinned_commit_is_reproducible(
    world: tuple[LakeFSClient, PrefectServer],
) -> None:
    lake, _ = world
    head = lake.resolve("main")

    first = train(promote=False)
    lake.create_branch("later", "main")  # main moves on; the training input must not
    again = train(ref=head, promote=False)

    assert first.data_commit == head and len(head) == 64
    assert again.digest == first.digest
    assert again.metrics == first.metrics
    assert again.version != first.version


def test_lineage_leads_back_to_the_commit_batches_and_ingestion_runs(
    world: tuple[LakeFSClient, PrefectServer],
) -> None:
    lake, prefect = world

    outcome = train()
    version = registry().get(MODEL, str(outcome.version))

    assert version.data_commit == lake.resolve("main")
    assert [b.batch_id for b in version.batches] == ["day-1", "day-2"]
    assert sum(b.rows for b in version.batches) == 16_000
    for batch in version.batches:
        merge = lake.get_commit(batch.merge_commit)
        assert merge.metadata["driftloop.batch_id"] == batch.batch_id
        run_id = str(batch.run_url).rstrip("/").rsplit("/", 1)[1]
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(run_id)  # type: ignore[arg-type]
            assert client.read_flow(run.flow_id).name == "ingest"


def test_gate_rejects_a_worse_challenger_promotes_a_better_one_and_rollback_restores(
    world: tuple[LakeFSClient, PrefectServer],
) -> None:
    _, prefect = world
    first = train()
    assert first.stage == "production" and first.promoted

    worse = train(estimator="logistic_regression", holdout="newest_batch")

    assert worse.stage == "candidate" and not worse.promoted
    assert any("roc_auc" in reason for reason in worse.reasons)
    assert registry().production(MODEL).version == first.version  # type: ignore[union-attr]
    rejected = wait_for_event(prefect.access, "driftloop.model.rejected", version=worse.version)
    assert rejected["payload"]["reasons"] == worse.reasons
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["training-transactions-classifier"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[worse.flow_run_id]),
            )
        )
    assert "**rejected**" in str(artifact.data) and "## Lineage" in str(artifact.data)

    # Fraudsters change tactics: two batches of the new pattern land. The challenger learns from
    # the first; the newest is the holdout that it and production are both measured on.
    for day, seed in (("day-3", 3), ("day-4", 4)):
        ingest(
            "transactions-classifier",
            f"builtin:?rows=8000&seed={seed}&scenario=concept_drift",
            batch_id=day,
        )
    better = train(holdout="newest_batch")

    assert better.stage == "production" and better.promoted, better.reasons
    assert registry().production(MODEL).version == better.version  # type: ignore[union-attr]
    promoted = wait_for_event(prefect.access, "driftloop.model.promoted", version=better.version)
    assert promoted["payload"]["data_commit"] == better.data_commit

    restored = registry().rollback(MODEL)

    assert restored.version == first.version
    stages = {v.version: v.stage for v in registry().versions(MODEL)}
    assert stages[str(better.version)] == "archived"
    assert list(stages.values()).count("production") == 1


def test_a_bento_of_the_production_model_builds_offline(
    world: tuple[LakeFSClient, PrefectServer],
) -> None:
    import bentoml

    promoted = train()

    built = package()

    bento = bentoml.get(built.bento)
    assert built.models == [f"{MODEL}:{promoted.version}"]
    assert [str(model.tag) for model in bento.info.all_models] == built.models
    bento_files = {p.name for p in Path(bento.path).rglob("*")}
    assert any(name.startswith("driftloop-") and name.endswith(".whl") for name in bento_files)
    assert "service.py" in bento_files
    # The project travels with the model: `bentoml serve` runs in src/, where it finds it.
    source = Path(bento.path) / "src"
    assert (source / "driftloop.yaml").is_file() and (source / "transactions.yaml").is_file()
    assert built.image == ""  # no container engine on this machine
