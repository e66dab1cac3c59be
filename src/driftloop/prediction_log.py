"""The prediction log: every prediction, and its true label once feedback arrives, in SQL.

SQLite by default, PostgreSQL by URL (SQLAlchemy). The inference service never writes on the
request path: :class:`PredictionWriter` takes predictions into a bounded queue and a background
thread writes them in batches. When the database is down the thread keeps retrying, the queue
fills, and what does not fit is dropped and counted, so inference keeps answering; closing the
writer flushes what is queued.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

log = logging.getLogger(__name__)

metadata = sa.MetaData()
predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_version", sa.String(100), nullable=False, index=True),
    sa.Column("features", sa.JSON, nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("label", sa.Integer, nullable=False),
    sa.Column("true_label", sa.Integer, nullable=True),
    sa.Column("feedback_at", sa.DateTime(timezone=True), nullable=True),
)


@dataclass(frozen=True)
class Prediction:
    """One answered record."""

    id: str
    created_at: datetime
    model_name: str
    model_version: str
    features: dict[str, Any]
    score: float
    label: int

    def row(self) -> dict[str, Any]:
        return {**self.__dict__}


class FeedbackResult:
    RECORDED = "recorded"
    ALREADY_RECORDED = "already recorded"
    CONFLICT = "conflicting label"
    UNKNOWN = "unknown prediction"


class PredictionLog:
    """SQL access to the prediction log."""

    def __init__(self, url: str) -> None:
        self.url = url
        connect_args = {"timeout": 30} if url.startswith("sqlite") else {"connect_timeout": 5}
        self.engine = sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
        if url.startswith("sqlite"):
            with self.engine.begin() as connection:
                connection.exec_driver_sql("PRAGMA journal_mode=WAL")

        self._created = False

    def create(self) -> None:
        """Create the table if it is not there."""
        metadata.create_all(self.engine)
        self._created = True

    def write(self, rows: Sequence[Prediction]) -> None:
        if not self._created:
            self.create()
        if rows:
            with self.engine.begin() as connection:
                connection.execute(predictions.insert(), [row.row() for row in rows])

    def record_feedback(self, prediction_id: str, true_label: int) -> str:
        """Store the true label of a prediction; a repeat of the same label changes nothing."""
        if not self._created:
            self.create()
        with self.engine.begin() as connection:
            current = connection.execute(
                sa.select(predictions.c.true_label).where(predictions.c.id == prediction_id)
            ).first()
            if current is None:
                return FeedbackResult.UNKNOWN
            if current.true_label is not None:
                same = current.true_label == true_label
                return FeedbackResult.ALREADY_RECORDED if same else FeedbackResult.CONFLICT
            connection.execute(
                predictions.update()
                .where(predictions.c.id == prediction_id)
                .values(true_label=true_label, feedback_at=datetime.now(UTC))
            )
        return FeedbackResult.RECORDED

    def count(self) -> int:
        with self.engine.connect() as connection:
            return int(
                connection.execute(sa.select(sa.func.count()).select_from(predictions)).scalar_one()
            )

    def get(self, prediction_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(predictions).where(predictions.c.id == prediction_id)
            ).first()
        return None if row is None else dict(row._mapping)

    def dispose(self) -> None:
        self.engine.dispose()


class PredictionWriter:
    """Writes predictions off the request path, in batches, through a bounded queue."""

    def __init__(
        self,
        log: PredictionLog,
        *,
        capacity: int = 10_000,
        batch_size: int = 500,
        interval_seconds: float = 0.2,
        on_drop: Callable[[int], None] = lambda count: None,
    ) -> None:
        self.log = log
        self.batch_size = batch_size
        self.interval = interval_seconds
        self.on_drop = on_drop
        self.queue: queue.Queue[Prediction] = queue.Queue(maxsize=capacity)
        self.dropped = 0
        self.written = 0
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._pending: list[Prediction] = []
        self._thread = threading.Thread(target=self._run, name="prediction-writer", daemon=True)
        self._thread.start()

    def submit(self, prediction: Prediction) -> None:
        """Queue one prediction; never blocks: when the queue is full it is dropped and counted."""
        try:
            self.queue.put_nowait(prediction)
        except queue.Full:
            self.dropped += 1
            self.on_drop(1)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written; False if that took too long."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return False

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (as far as the database allows within ``timeout``), then stop."""
        self.flush(timeout)
        self._stop.set()
        self._thread.join(timeout=timeout)

    def _run(self) -> None:
        backoff = 0.5
        while not (self._stop.is_set() and not self._pending and self.queue.empty()):
            if not self._pending:
                self._take()
            if not self._pending:
                continue
            try:
                self.log.write(self._pending)
            except Exception as problem:  # the database is down: keep the batch, back off
                log.warning(
                    "prediction log write failed (%s); retrying in %.1f s", problem, backoff
                )
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.5
            self.written += len(self._pending)
            for _ in self._pending:
                self.queue.task_done()
            self._pending = []

    def _take(self) -> None:
        try:
            self._pending.append(self.queue.get(timeout=self.interval))
        except queue.Empty:
            return
        while len(self._pending) < self.batch_size:
            try:
                self._pending.append(self.queue.get_nowait())
            except queue.Empty:
                break
