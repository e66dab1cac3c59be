"""The model registry on a real BentoML store (on local disk) with its stages and history in
SQLite and in PostgreSQL (the local server): stages, promotion, rollback, racing promotions."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from driftloop.datasets.spec import load_spec
from driftloop.datasets.transactions import generate_transactions
from driftloop.registry import BatchLineage, ModelRegistry, RegistryError, StageStore
from driftloop.scoring import records_frame
from driftloop.serving import frame_records, load_version
from driftloop.training import TrainParams, split_frame, train_model
from tests.integration.databases import fresh_database

SPEC = load_spec("transactions")


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh registry database: a SQLite file, or a new database on the PostgreSQL server."""
    with fresh_database(request.param, tmp_path, "registry") as url:
        yield url


@pytest.fixture
def registry(registry_url: str) -> Iterator[ModelRegistry]:
    found = ModelRegistry(Path(os.environ["BENTOML_HOME"]), registry_url)
    yield found
    found.dispose()


@pytest.fixture(scope="module")
def trained() -> object:
    params = TrainParams(max_iter=20)
    frame = generate_transactions(3000, seed=3)
    return train_model(split_frame(frame, SPEC, params, None), SPEC, params)


def register(registry: ModelRegistry, trained: object, name: str, commit: str) -> str:
    version = registry.register(
        name,
        trained.pipeline,  # type: ignore[attr-defined]
        dataset="transactions",
        data_commit=commit,
        git_sha="abc123",
        metrics=trained.metrics.as_dict(),  # type: ignore[attr-defined]
        params=trained.params.model_dump(),  # type: ignore[attr-defined]
        digest=trained.digest,  # type: ignore[attr-defined]
        split=trained.split,  # type: ignore[attr-defined]
        batches=[BatchLineage("b1", "c" * 64, 3000, "http://prefect/runs/1")],
        spec=SPEC.model_dump(mode="json", exclude_none=True),
        calibration=trained.calibration,  # type: ignore[attr-defined]
    )
    return version.version


def test_a_registered_version_carries_labels_metadata_and_lineage(
    registry: ModelRegistry, trained: object
) -> None:
    import bentoml

    name = f"reg-{uuid.uuid4().hex[:8]}"
    version = register(registry, trained, name, "a" * 64)

    found = registry.get(name, version)
    labels = bentoml.models.get(f"{name}:{version}").info.labels

    assert found.stage == "candidate" and found.data_commit == "a" * 64
    assert labels == {
        "dataset": "transactions",
        "data_commit": "a" * 64,
        "stage": "candidate",
        "git_sha": "abc123",
    }
    assert found.batches == [BatchLineage("b1", "c" * 64, 3000, "http://prefect/runs/1")]
    assert found.metrics["roc_auc"] == trained.metrics["roc_auc"]
    assert found.calibration == trained.calibration  # type: ignore[attr-defined]
    assert found.calibration["task"] == "binary" and len(found.calibration["x"]) > 2
    assert registry.load(name, version).predict_proba  # a fitted pipeline comes back


# What the inference service's process does with a version: load it, score records.
SCORE_IN_A_FRESH_PROCESS = """
import json, sys
from driftloop.serving import load_version
model = load_version(sys.argv[1])
scores = model.score(json.load(sys.stdin)).tolist()
heavy = [name for name in ("sklearn", "pandas", "pyarrow") if name in sys.modules]
print(json.dumps({"scores": scores, "imported": heavy}))
"""


def test_a_version_is_served_through_its_stored_scorer_without_scikit_learn(
    registry: ModelRegistry, trained: object
) -> None:
    """The compiled scorer is checked and kept at registration: a process that serves the
    version loads neither the pipeline nor scikit-learn or pandas, and answers scikit-learn's
    scores to the last bit."""
    name = f"reg-{uuid.uuid4().hex[:8]}"
    version = register(registry, trained, name, "d" * 64)
    records = frame_records(
        generate_transactions(300, seed=8, scenario="covariate_shift"), SPEC.feature_names
    )
    features = SPEC.model_dump(mode="json", exclude_none=True)["features"]
    expected = trained.pipeline.predict_proba(records_frame(features, records))[:, 1]  # type: ignore[attr-defined]

    served = subprocess.run(
        [sys.executable, "-c", SCORE_IN_A_FRESH_PROCESS, f"{name}:{version}"],
        input=json.dumps(records),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    answer = json.loads(served.stdout)

    assert answer["imported"] == []
    assert answer["scores"] == expected.tolist()


def test_a_version_without_a_stored_scorer_is_compiled_when_loaded(
    registry: ModelRegistry, trained: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version an older driftloop registered (no compiled scorer kept with it) is compiled and
    checked when it is loaded, as before."""
    import bentoml

    name = f"reg-{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr("driftloop.scoring.compile_checked", lambda *args: None)
    version = register(registry, trained, name, "e" * 64)
    monkeypatch.undo()
    records = frame_records(generate_transactions(200, seed=9), SPEC.feature_names)

    loaded = load_version(f"{name}:{version}")

    assert bentoml.models.get(f"{name}:{version}").custom_objects == {}
    assert loaded.compiled is not None
    assert np.array_equal(
        loaded.score(records),
        trained.pipeline.predict_proba(loaded.frame(records))[:, 1],  # type: ignore[attr-defined]
    )


def test_exactly_one_production_version_and_rollback(
    registry: ModelRegistry, trained: object
) -> None:
    name = f"reg-{uuid.uuid4().hex[:8]}"
    first, second, third = (register(registry, trained, name, str(n) * 64) for n in range(3))

    registry.promote(name, first, "first")
    registry.promote(name, second, "better")
    stages = {v.version: v.stage for v in registry.versions(name)}

    assert stages == {first: "archived", second: "production", third: "candidate"}
    assert registry.rollback(name).version == first
    assert registry.production(name).version == first  # type: ignore[union-attr]
    assert [e.event for e in registry.history(name)][-3:] == ["promoted", "promoted", "promoted"]
    assert registry.history(name)[-1].detail == f"rollback from {second}"


def test_one_challenger_at_a_time_beside_production_then_promoted_or_withdrawn(
    registry: ModelRegistry, trained: object
) -> None:
    name = f"reg-{uuid.uuid4().hex[:8]}"
    champion, first, second = (register(registry, trained, name, str(n) * 64) for n in range(3))
    registry.promote(name, champion, "first")

    registry.start_rollout(name, first, "shadow", "passed the gate")
    registry.start_rollout(name, second, "canary", "passed the gate")  # replaces the shadow
    stages = {v.version: v.stage for v in registry.versions(name)}
    started = registry.stages.rollout_started_at(name, second)

    assert stages == {champion: "production", first: "candidate", second: "canary"}
    assert registry.challenger(name).version == second  # type: ignore[union-attr]
    assert registry.stages.challenger(name) == (second, "canary")
    assert started is not None and registry.stages.rollout_started_at(name, champion) is None
    assert ("withdrawn", f"replaced by {second}") in [
        (e.event, e.detail) for e in registry.history(name) if e.version == first
    ]

    registry.promote(name, second, "won live")
    assert registry.challenger(name) is None
    assert registry.production(name).version == second  # type: ignore[union-attr]
    with pytest.raises(RegistryError, match="is not on a rollout"):
        registry.withdraw(name, second, "too late")

    registry.start_rollout(name, first, "shadow", "again")
    withdrawn = registry.withdraw(name, first, "worse live")
    assert withdrawn.stage == "candidate" and registry.challenger(name) is None
    assert registry.history(name)[-1].event == "withdrawn"


def test_rollback_without_an_earlier_production_version_is_refused(
    registry: ModelRegistry, trained: object
) -> None:
    name = f"reg-{uuid.uuid4().hex[:8]}"
    only = register(registry, trained, name, "d" * 64)
    registry.promote(name, only, "first")

    with pytest.raises(RegistryError, match="no earlier production version"):
        registry.rollback(name)
    with pytest.raises(RegistryError, match="no model version"):
        registry.promote(name, "doesnotexist", "x")


def promote_repeatedly(url: str, name: str, version: str, times: int) -> None:
    """One process promoting ``version`` over and over (the other process does the same)."""
    stages = StageStore(url)
    for turn in range(times):
        stages.promote(name, version, f"turn {turn}")
    stages.dispose()


def test_two_processes_promoting_at_once_leave_exactly_one_production_version(
    registry_url: str,
) -> None:
    stages = StageStore(registry_url)
    name = f"race-{uuid.uuid4().hex[:8]}"
    for version in ("left", "right"):
        stages.add(name, version, "registered for the race")
    context = multiprocessing.get_context("spawn")
    racers = [
        context.Process(target=promote_repeatedly, args=(registry_url, name, version, 40))
        for version in ("left", "right")
    ]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=180)

    assert [racer.exitcode for racer in racers] == [0, 0]  # no promotion failed or deadlocked
    assert sorted(stages.of_model(name).values()) == ["archived", "production"]
    assert [entry.event for entry in stages.history(name)].count("promoted") == 80
    last = stages.history(name)[-1].version
    assert stages.production_version(name) == last  # the last promotion is the one that holds
    stages.dispose()
