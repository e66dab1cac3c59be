"""The prediction log on SQLite and on PostgreSQL: feedback that races.

Two clients sending different labels for the same prediction at the same moment: exactly one
is recorded, the other is told the prediction already has a different label; the stored label
is the one that was acknowledged.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from driftloop.datasets.transactions import EXAMPLE_RECORD
from driftloop.prediction_log import FeedbackResult, Prediction, PredictionLog
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
