"""The prediction log on SQLite and on PostgreSQL: feedback that races.

Two clients sending different labels for the same prediction at the same moment: exactly one
is recorded, the other is told the prediction already has a different label; the stored label
is the one that was acknowledged.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from driftloop.datasets.transactions import EXAMPLE_RECORD
from driftloop.prediction_log import (
    FeedbackResult,
    Prediction,
    PredictionGroup,
    PredictionLog,
    following_ids,
    groups,
    prediction_ids,
)
from tests.integration.databases import fresh_database


@pytest.fixture(params=["sqlite", "postgresql"])
def prediction_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PredictionLog]:
    with fresh_database(request.param, tmp_path, "predictions") as url:
        log = PredictionLog(url)
        yield log
        log.dispose()


def test_racing_conflicting_labels_have_exactly_one_winner(prediction_log: PredictionLog) -> None:
    ids = [str(uuid.uuid4()) for _ in range(50)]
    now = datetime.now(UTC)
    prediction_log.write([Prediction(i, now, "m", "1", dict(EXAMPLE_RECORD), 0.5, 1) for i in ids])
    outcomes: dict[tuple[str, int], str] = {}

    def send(prediction_id: str, label: int, start: threading.Barrier) -> None:
        start.wait()
        outcomes[(prediction_id, label)] = prediction_log.record_feedback(prediction_id, label)

    for prediction_id in ids:
        start = threading.Barrier(2)
        pair = [
            threading.Thread(target=send, args=(prediction_id, label, start)) for label in (0, 1)
        ]
        for thread in pair:
            thread.start()
        for thread in pair:
            thread.join()

    for prediction_id in ids:
        results = {label: outcomes[(prediction_id, label)] for label in (0, 1)}
        assert sorted(results.values()) == sorted(
            [FeedbackResult.RECORDED, FeedbackResult.CONFLICT]
        )
        winner = next(
            label for label, result in results.items() if result == FeedbackResult.RECORDED
        )
        row = prediction_log.get(prediction_id)
        assert row is not None and row["true_label"] == winner


@pytest.mark.parametrize("with_rollouts", [False, True])
def test_a_log_of_an_older_driftloop_moves_into_groups_with_its_labels(
    prediction_log: PredictionLog, with_rollouts: bool
) -> None:
    """Before groups, the log was one ``predictions`` row per prediction with its label in it
    (and before rollouts, without ``role`` and ``paired_with``): its rows move into the groups
    and labels tables, each a group of one, and keep their labels, times and ids."""
    older = sa.MetaData()
    rollout_columns = [
        sa.Column("role", sa.String(10), nullable=True),
        sa.Column("paired_with", sa.String(36), nullable=True),
    ]
    table = sa.Table(
        "predictions",
        older,
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(100), nullable=False),
        sa.Column("features", sa.JSON, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("label", sa.Integer, nullable=False),
        sa.Column("true_label", sa.Float, nullable=True),
        sa.Column("feedback_at", sa.DateTime(timezone=True), nullable=True),
        *(rollout_columns if with_rollouts else []),
    )
    older.create_all(prediction_log.engine)
    made = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    came = made + timedelta(minutes=5)
    common = {"model_name": "m", "model_version": "1", "features": dict(EXAMPLE_RECORD)}
    rows = [
        {"id": "labelled", "created_at": made, "score": 0.5, "label": 1, "true_label": 0.0,
         "feedback_at": came, **common},
        {"id": "waiting", "created_at": made + timedelta(seconds=1), "score": 0.2, "label": 0,
         "true_label": None, "feedback_at": None, **common},
    ]  # fmt: skip
    if with_rollouts:
        rows.append(
            {"id": "copy", "created_at": made, "score": 0.4, "label": 0, "role": "shadow",
             "paired_with": "labelled", "true_label": None, "feedback_at": None, **common}
        )  # fmt: skip
    if with_rollouts:
        rows[:2] = [{**row, "role": None, "paired_with": None} for row in rows[:2]]
    with prediction_log.engine.begin() as connection:
        connection.execute(table.insert(), rows)

    prediction_log.write([Prediction("new", datetime.now(UTC), "m", "1", {}, 0.4, 0)])

    assert "predictions" not in sa.inspect(prediction_log.engine).get_table_names()
    labelled = prediction_log.get("labelled")
    assert labelled is not None and labelled["true_label"] == 0.0
    assert labelled["features"] == dict(EXAMPLE_RECORD) and labelled["score"] == 0.5
    assert _aware(labelled["feedback_at"]) == came and _aware(labelled["created_at"]) == made
    assert prediction_log.record_feedback("waiting", 1) == FeedbackResult.RECORDED
    assert prediction_log.record_feedback("labelled", 1) == FeedbackResult.CONFLICT
    assert prediction_log.window("m", "1", 10)["prediction_id"].tolist() == [
        "labelled", "waiting", "new"
    ]  # fmt: skip
    assert prediction_log.count() == (4 if with_rollouts else 3)
    if with_rollouts:
        pairs = prediction_log.shadow_pairs("m", "1", "1", since=made - timedelta(seconds=1))
        assert pairs["challenger_score"].tolist() == [0.4]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def test_rollout_evidence_pairs_shadow_rows_with_the_labelled_champion_rows(
    prediction_log: PredictionLog,
) -> None:
    start = datetime.now(UTC)
    record = dict(EXAMPLE_RECORD)
    rows = []
    for n in range(6):
        champion_id = f"c{n}"
        rows.append(
            Prediction(champion_id, start + timedelta(seconds=n), "m", "v1", record, 0.1 * n, 0)
        )
        rows.append(
            Prediction(
                f"s{n}",
                start + timedelta(seconds=n),
                "m",
                "v2",
                record,
                0.05 * n,
                0,
                "shadow",
                champion_id,
            )
        )
    rows.append(Prediction("k0", start + timedelta(seconds=7), "m", "v2", record, 0.9, 1, "canary"))
    rows.append(Prediction("old", start - timedelta(hours=1), "m", "v1", record, 0.3, 0))
    prediction_log.write(rows)
    for prediction_id, label in (("c1", 1), ("c2", 0), ("c4", 1), ("k0", 1), ("old", 1)):
        assert prediction_log.record_feedback(prediction_id, label) == FeedbackResult.RECORDED

    pairs = prediction_log.shadow_pairs("m", "v1", "v2", since=start - timedelta(seconds=1))
    canary = prediction_log.answered_outcomes("m", "v2", start, role="canary")
    champion = prediction_log.answered_outcomes("m", "v1", start - timedelta(seconds=1), role=None)

    assert pairs["true_label"].tolist() == [1.0, 0.0, 1.0]
    assert pairs["champion_score"].tolist() == pytest.approx([0.1, 0.2, 0.4])
    assert pairs["challenger_score"].tolist() == pytest.approx([0.05, 0.1, 0.2])
    assert canary["true_label"].tolist() == [1.0] and canary["score"].tolist() == [0.9]
    assert champion["true_label"].tolist() == [1.0, 0.0, 1.0]  # not the hour-old row
    # A shadow's copies are not traffic: no window, no feedback, no retrain rows of their own.
    assert prediction_log.window("m", "v2", 100)["prediction_id"].tolist() == ["k0"]
    assert prediction_log.record_feedback("s1", 1) == FeedbackResult.UNKNOWN
    assert "s1" not in prediction_log.labelled("m")["prediction_id"].tolist()


def test_label_delays_are_read_once_each_and_windows_say_when_labels_came(
    prediction_log: PredictionLog,
) -> None:
    made = datetime.now(UTC) - timedelta(hours=2)
    ids = [str(uuid.uuid4()) for _ in range(4)]
    prediction_log.write([Prediction(i, made, "m", "1", dict(EXAMPLE_RECORD), 0.5, 1) for i in ids])
    for prediction_id in ids[:2]:
        prediction_log.record_feedback(prediction_id, 1)

    delays, until = prediction_log.label_delays("m", None)
    again, still = prediction_log.label_delays("m", until)
    prediction_log.record_feedback(ids[2], 0)
    later, _ = prediction_log.label_delays("m", still)
    window = prediction_log.window("m", "1", 10)

    assert len(delays) == 2 and all(7100 < delay < 7300 for delay in delays)
    assert until is not None and again == [] and still == until
    assert len(later) == 1  # only the label that came after the first look
    assert window["feedback_at"].notna().sum() == 3
    assert window["true_label"].notna().sum() == 3


def test_predictions_read_back_at_the_instant_they_were_made_in_any_time_zone(
    prediction_log: PredictionLog,
) -> None:
    """The writer hands the driver its own values (no SQLAlchemy processing): times in another
    zone or on a whole second, features and a shadow's pairing come back as they went in, and a
    replay of the same ids writes nothing twice."""
    whole_second = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    elsewhere = (whole_second + timedelta(seconds=1, microseconds=250)).astimezone(
        timezone(timedelta(hours=5, minutes=30))
    )
    ids = [str(uuid.uuid4()) for _ in range(3)]
    rows = [
        Prediction(ids[0], whole_second, "m", "1", dict(EXAMPLE_RECORD), 0.25, 0),
        Prediction(ids[1], elsewhere, "m", "1", {**EXAMPLE_RECORD, "channel": "póst"}, 0.75, 1),
        Prediction(ids[2], elsewhere, "m", "2", {}, 0.5, 1, "shadow", ids[1]),
    ]
    prediction_log.write(rows)
    prediction_log.write(rows)  # a replay after a crash mid-drain

    stored = [prediction_log.get(prediction_id) for prediction_id in ids]
    window = prediction_log.window("m", "1", 10)

    assert prediction_log.count() == 3
    # SQLite gives a time back without its zone (UTC)
    made = [row["created_at"] for row in stored if row]
    assert [moment if moment.tzinfo else moment.replace(tzinfo=UTC) for moment in made] == [
        whole_second,
        elsewhere,
        elsewhere,
    ]
    assert stored[1] is not None and stored[1]["features"]["channel"] == "póst"
    assert stored[2] is not None and (stored[2]["role"], stored[2]["paired_with"]) == (
        "shadow",
        ids[1],
    )
    assert list(window["prediction_id"]) == ids[:2]  # oldest first; the shadow's copy not in it
    assert list(window["score"]) == [0.25, 0.75]


def test_a_request_of_many_records_is_one_row_and_each_prediction_in_it_takes_a_label(
    prediction_log: PredictionLog,
) -> None:
    made = datetime.now(UTC) - timedelta(minutes=1)
    ids = prediction_ids(5)
    records = [{**EXAMPLE_RECORD, "amount": float(n)} for n in range(5)]
    # As a client sent them: whitespace, and an integer beyond 64 bits where a number goes.
    sent = json.dumps([*records[:4], {**records[4], "amount": 10**30}], indent=1).encode()
    request = PredictionGroup(
        ids[0], made, "m", "1", sent, [0.1, 0.2, 0.3, 0.4, 0.5], [0, 0, 0, 1, 1]
    )
    single = Prediction(prediction_ids(1)[0], made + timedelta(seconds=1), "m", "1", {}, 0.9, 1)
    prediction_log.write([request, single])
    prediction_log.write([request])  # a replay

    with prediction_log.engine.connect() as connection:
        stored = connection.execute(sa.select(sa.func.count()).select_from(groups)).scalar_one()
    assert stored == 2 and prediction_log.count() == 6
    assert prediction_log.record_feedback(ids[2], 1) == FeedbackResult.RECORDED
    assert prediction_log.record_feedback(ids[2], 0) == FeedbackResult.CONFLICT
    assert prediction_log.record_feedback(ids[4], 0, "other model") == FeedbackResult.UNKNOWN
    beyond = following_ids(ids[0], 6)[5]  # the id a sixth record would have had
    assert prediction_log.record_feedback(beyond, 1) == FeedbackResult.UNKNOWN
    row = prediction_log.get(ids[3])
    assert row is not None and (row["score"], row["label"], row["features"]) == (0.4, 1, records[3])

    newest = prediction_log.window("m", "1", 3)
    assert newest["prediction_id"].tolist() == [ids[3], ids[4], single.id]
    assert newest["amount"].tolist()[:2] == [3.0, float(10**30)]
    assert prediction_log.window_size("m", "1", 3) == 3
    whole = prediction_log.window("m", "1", 100)
    assert whole["prediction_id"].tolist() == [*ids, single.id]
    assert whole["true_label"].fillna(-1).tolist() == [-1, -1, 1.0, -1, -1, -1]
    labelled = prediction_log.labelled("m")
    assert labelled["prediction_id"].tolist() == [ids[2]]
    assert labelled["amount"].tolist() == [2.0]
