"""The prediction writer: batched transactions, a bounded buffer that drops and counts, no loss
while the database recovers, and a flush that writes at once. SQLite on disk (the real store);
the outage is a database whose writes are made to fail, since the point is the writer's
behaviour around it (the service tests stop a real PostgreSQL-backed store too)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from driftloop.datasets.transactions import EXAMPLE_RECORD
from driftloop.prediction_log import Prediction, PredictionLog, PredictionWriter


class CountingLog(PredictionLog):
    """A real SQLite prediction log that counts its transactions and can be made to fail."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.transactions = 0
        self.down = False

    def write(self, rows: Sequence[Prediction]) -> None:
        if self.down:
            raise ConnectionError("database unavailable")
        super().write(rows)
        self.transactions += 1


def prediction() -> Prediction:
    return Prediction(str(uuid.uuid4()), datetime.now(UTC), "m", "1", dict(EXAMPLE_RECORD), 0.3, 1)


def test_a_burst_of_predictions_is_written_in_a_few_transactions(tmp_path: Path) -> None:
    store = CountingLog(f"sqlite:///{tmp_path / 'log.sqlite'}")
    writer = PredictionWriter(store, interval_seconds=0.5)
    for _ in range(2000):
        writer.submit(prediction())

    assert writer.flush(10)
    writer.close()
    assert store.count() == 2000 == writer.written
    assert store.transactions <= 3  # batches of up to 1,000, not one per prediction


def test_flush_writes_without_waiting_for_the_interval(tmp_path: Path) -> None:
    store = CountingLog(f"sqlite:///{tmp_path / 'log.sqlite'}")
    writer = PredictionWriter(store, interval_seconds=30)
    one = prediction()
    writer.submit(one)

    started = time.monotonic()
    assert writer.flush(5)
    assert time.monotonic() - started < 2
    assert store.get(one.id) is not None
    writer.close()


def test_a_full_buffer_drops_and_counts_and_the_rest_survives_the_outage(tmp_path: Path) -> None:
    store = CountingLog(f"sqlite:///{tmp_path / 'log.sqlite'}")
    store.create()
    store.down = True
    dropped: list[int] = []
    writer = PredictionWriter(store, capacity=50, interval_seconds=0.05, on_drop=dropped.append)
    kept = [prediction() for _ in range(50)]
    for item in kept:
        writer.submit(item)
    for _ in range(30):
        writer.submit(prediction())

    assert writer.dropped == 30 and sum(dropped) == 30
    assert not writer.flush(0.3)  # nothing can be written while the database is down
    assert store.count() == 0

    store.down = False
    assert writer.flush(15)
    writer.close()
    assert store.count() == 50
    assert all(store.get(item.id) is not None for item in kept)


def test_close_writes_what_is_buffered(tmp_path: Path) -> None:
    store = CountingLog(f"sqlite:///{tmp_path / 'log.sqlite'}")
    writer = PredictionWriter(store, interval_seconds=60)
    for _ in range(10):
        writer.submit(prediction())
    writer.close()

    assert store.count() == 10
