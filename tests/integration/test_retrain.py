"""The retrain flow on real processes (Prefect server, lakeFS-compatible server): labelled
production traffic lands as a batch through the ingest flow, a model trained on the new commit
faces the gate, and a winner is packaged and promoted."""

from __future__ import annotations

import contextvars
import io
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from prefect.states import State
from sklearn.metrics import f1_score

from driftloop.datasets.spec import load_spec
from driftloop.datasets.transactions import generate_transactions
from driftloop.lakefs_client import LakeFSClient
from driftloop.prediction_log import Prediction, PredictionLog
from driftloop.registry import ModelRegistry
from driftloop.serving import frame_records, load_version
from driftloop.settings import get_settings
from flows.common import prefect_api
from flows.ingest import ingest
from flows.retrain import RetrainOutcome, retrain
from flows.train import train
from tests.integration.conftest import LakeFSServer, PrefectServer
from tests.polling import eventually

SPEC = load_spec("transactions")
MODEL_NAME = "transactions-classifier"


@pytest.fixture
def world(
    prefect_server: PrefectServer,
    lakefs_server: LakeFSServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[LakeFSClient]:
    """A production model trained on one landed batch of this test's own repository."""
    repo = f"retrain-{uuid.uuid4().hex[:8]}"
    for name, value in lakefs_server.settings_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DRIFTLOOP_LAKEFS__REPOSITORY", repo)
    monkeypatch.setenv("DRIFTLOOP_HOME", str(tmp_path / "home"))
    with prefect_api(prefect_server.access):
        ingest("transactions-classifier", "builtin:?rows=6000&seed=1", batch_id="day-1")
        train()
        yield lakefs_server.client(repo)


def served_with_feedback(
    rows: int, scenario: str, seed: int, edit: Callable[[pd.DataFrame], None] = lambda f: None
) -> tuple[list[dict], list[int]]:
    """``rows`` predictions of the production model logged, each with its true label; ``edit``
    may change the records first (the service accepts any value of the right type)."""
    settings = get_settings()
    registry = ModelRegistry.from_settings(settings)
    production = registry.production(MODEL_NAME)
    assert production is not None
    model = load_version(production.tag)
    frame = generate_transactions(rows, seed=seed, scenario=scenario)  # type: ignore[arg-type]
    edit(frame)
    records = frame_records(frame, SPEC.feature_names)
    truth = frame[SPEC.target].astype(int).tolist()
    log = PredictionLog(settings.prediction_log_url)
    now = datetime.now(UTC)
    predictions = [
        Prediction(
            str(uuid.uuid4()),
            now + timedelta(milliseconds=i),
            model.name,
            model.version,
            record,
            score,
            int(score >= model.threshold),
        )
        for i, (record, score) in enumerate(
            zip(records, model.score(records).tolist(), strict=True)
        )
    ]
    log.write(predictions)
    for prediction, label in zip(predictions, truth, strict=True):
        log.record_feedback(prediction.id, label)
    log.dispose()
    return records, truth


def f1_of(tag: str, records: list[dict], truth: list[int]) -> float:
    model = load_version(tag)
    return float(f1_score(truth, (model.score(records) >= model.threshold).astype(int)))


def test_labelled_drifted_traffic_becomes_a_batch_and_a_better_model(
    world: LakeFSClient,
) -> None:
    settings = get_settings()
    registry = ModelRegistry.from_settings(settings)
    before = registry.production(MODEL_NAME)
    assert before is not None
    served_with_feedback(3000, "concept_drift", seed=7)
    held_out = generate_transactions(4000, seed=9, scenario="concept_drift")
    records = frame_records(held_out, SPEC.feature_names)
    truth = held_out[SPEC.target].astype(int).tolist()

    outcome = retrain(reason="driftloop.drift.detected", model_version=before.version)

    assert isinstance(outcome, RetrainOutcome) and outcome.labelled_rows == 3000
    assert str(outcome.batch_id).startswith("feedback-")
    assert world.resolve("main") == outcome.data_commit
    assert f"datasets/transactions/batches/{outcome.batch_id}.parquet" in [
        o.path for o in world.list_objects("main", "datasets/transactions/batches/")
    ]
    after = registry.production(MODEL_NAME)
    assert after is not None
    assert outcome.promoted, outcome.reasons
    assert after.version == outcome.version != before.version
    assert after.data_commit == outcome.data_commit
    assert f1_of(after.tag, records, truth) > f1_of(before.tag, records, truth)


def test_too_few_labels_retrain_nothing(world: LakeFSClient) -> None:
    settings = get_settings()
    registry = ModelRegistry.from_settings(settings)
    before = registry.production(MODEL_NAME)
    served_with_feedback(50, "concept_drift", seed=7)

    state = retrain(min_labelled_rows=200, return_state=True)

    assert state.is_completed() and "only 50 new labelled predictions" in str(state.message)
    assert registry.production(MODEL_NAME) == before


def test_a_retrain_waits_for_late_labels_and_says_so_in_its_run(
    world: LakeFSClient, prefect_server: PrefectServer
) -> None:
    """Started on an estimated drop, before the labels: the run waits, logging how many labels
    there are, and retrains once they have come."""
    outcomes: list[State] = []
    here = contextvars.copy_context()  # the Prefect server this test talks to
    waiting = threading.Thread(
        target=here.run,
        args=(
            lambda: outcomes.append(
                retrain(
                    reason="driftloop.performance.degraded",
                    min_labelled_rows=300,
                    wait_for_labels_minutes=3,
                    label_poll_seconds=1,
                    return_state=True,
                )
            ),
        ),
    )
    waiting.start()
    time.sleep(4)  # the run looks a few times, finds nothing
    assert waiting.is_alive()
    served_with_feedback(1500, "concept_drift", seed=17)  # the labels come, one at a time
    waiting.join(timeout=300)

    (state,) = outcomes
    outcome = state.result()
    # The run goes on once min_labelled_rows have come: labels are recorded one by one, so it
    # may start while the rest are still arriving (on PostgreSQL it took 527 of the 1,500).
    assert isinstance(outcome, RetrainOutcome) and 300 <= outcome.labelled_rows <= 1500
    assert world.resolve("main") == outcome.data_commit  # the labelled batch landed
    assert outcome.reason == "driftloop.performance.degraded"
    run_id = str(state.state_details.flow_run_id)

    def said() -> list[str]:
        logs = prefect_server.access.post(
            "/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200}
        ).json()
        return [log["message"] for log in logs if log["message"].startswith("waiting for labels")]

    messages = eventually(said, "the run's waiting messages in Prefect", timeout=30)
    assert len(messages) >= 2 and messages[0].startswith("waiting for labels: 0 of 300")


def ids_on_main(client: LakeFSClient) -> pd.Series:
    """The transaction ids of every batch on main, repeats included."""
    frames = [
        pd.read_parquet(io.BytesIO(client.download("main", o.path)), columns=[SPEC.id_column])
        for o in client.list_objects("main", "datasets/transactions/batches/")
        if o.path.endswith(".parquet")
    ]
    return pd.concat(frames, ignore_index=True)[SPEC.id_column]


def test_retrains_after_a_rejected_one_land_no_row_twice(
    world: LakeFSClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gate-rejected retrain leaves production's data commit where it was; the next retrains
    export only what has not landed yet, and training never sees a row twice."""
    registry = ModelRegistry.from_settings(get_settings())
    monkeypatch.setenv("DRIFTLOOP_REGISTRY__GATE__MARGIN", "1.0")  # nothing can win
    served_with_feedback(1500, "baseline", seed=11)
    first = retrain()
    assert isinstance(first, RetrainOutcome) and not first.promoted
    served_with_feedback(600, "baseline", seed=12)

    second = retrain()
    monkeypatch.delenv("DRIFTLOOP_REGISTRY__GATE__MARGIN")
    served_with_feedback(2500, "concept_drift", seed=13)
    third = retrain()

    assert isinstance(second, RetrainOutcome) and second.labelled_rows == 600
    assert isinstance(third, RetrainOutcome) and third.labelled_rows == 2500
    ids = ids_on_main(world)
    assert not ids.duplicated().any(), f"{int(ids.duplicated().sum())} ids twice on main"
    assert len(ids) == 6000 + 1500 + 600 + 2500
    production = registry.production(MODEL_NAME)
    assert production is not None and third.promoted
    assert sum(batch.rows for batch in production.batches) == len(ids)


def test_rows_the_ingestion_checks_refuse_are_quarantined_and_the_rest_lands(
    world: LakeFSClient,
) -> None:
    """Out-of-range values are answered by /predict (drift is what the monitor is for), but a
    batch with them fails the range check: the retrain sets those rows aside with the reason
    and lands the others."""

    def out_of_range(frame: pd.DataFrame) -> None:
        frame.loc[:9, "amount"] = 1e9

    served_with_feedback(1500, "concept_drift", seed=21, edit=out_of_range)

    outcome = retrain()

    assert isinstance(outcome, RetrainOutcome), outcome
    assert outcome.labelled_rows == 1490 and outcome.quarantined_rows == 10
    landed = pd.read_parquet(
        io.BytesIO(
            world.download("main", f"datasets/transactions/batches/{outcome.batch_id}.parquet")
        )
    )
    assert len(landed) == 1490 and landed["amount"].max() < 1e9
    quarantine = pd.read_parquet(
        io.BytesIO(world.download("main", outcome.quarantine_path or "missing"))
    )
    assert len(quarantine) == 10 and (quarantine["amount"] == 1e9).all()
    assert quarantine["quarantine_reason"].str.contains("amount").all()
