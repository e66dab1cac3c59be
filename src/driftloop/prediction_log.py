"""The prediction log: every prediction, and its true label once feedback arrives, in SQL.

SQLite by default, PostgreSQL by URL (SQLAlchemy). The inference service never writes on the
request path: :class:`PredictionWriter` takes predictions into a bounded queue and a background
thread writes them in batches. When the database is down the thread keeps retrying, the queue
fills, and what does not fit is dropped and counted, so inference keeps answering; closing the
writer flushes what is queued.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pandas as pd
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
        self.engine = sa.create_engine(
            url,
            pool_pre_ping=True,
            connect_args=connect_args,
            json_serializer=lambda value: orjson.dumps(value).decode(),
        )
        if url.startswith("sqlite"):
            with self.engine.begin() as connection:
                connection.exec_driver_sql("PRAGMA journal_mode=WAL")
            # WAL with synchronous=NORMAL survives a crash of the service (not of the machine)
            # and saves an fsync per batch; it is a per-connection setting.
            sa.event.listen(
                self.engine,
                "connect",
                lambda connection, _: connection.execute("PRAGMA synchronous=NORMAL"),
            )

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
        """Store the true label of a prediction unless it has one; a repeat of the same label
        changes nothing.

        One conditional UPDATE (``... WHERE true_label IS NULL``), so of two clients racing with
        different labels exactly one is recorded and the other sees a conflict, on SQLite and
        PostgreSQL alike.
        """
        if not self._created:
            self.create()
        with self.engine.begin() as connection:
            updated = connection.execute(
                predictions.update()
                .where(predictions.c.id == prediction_id, predictions.c.true_label.is_(None))
                .values(true_label=true_label, feedback_at=datetime.now(UTC))
            )
            if updated.rowcount == 1:
                return FeedbackResult.RECORDED
            current = connection.execute(
                sa.select(predictions.c.true_label).where(predictions.c.id == prediction_id)
            ).first()
        if current is None:
            return FeedbackResult.UNKNOWN
        same = current.true_label == true_label
        return FeedbackResult.ALREADY_RECORDED if same else FeedbackResult.CONFLICT

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

    def window(self, model_name: str, version: str, rows: int) -> pd.DataFrame:
        """The newest ``rows`` predictions of one model version, oldest first.

        One column per feature, then ``score``, ``label``, ``true_label`` (NaN where no feedback
        came), ``created_at`` and ``prediction_id``.
        """
        if not self._created:
            self.create()
        query = (
            sa.select(
                predictions.c.id,
                predictions.c.created_at,
                predictions.c.features,
                predictions.c.score,
                predictions.c.label,
                predictions.c.true_label,
            )
            .where(predictions.c.model_name == model_name, predictions.c.model_version == version)
            .order_by(predictions.c.created_at.desc(), predictions.c.id.desc())
            .limit(rows)
        )
        with self.engine.connect() as connection:
            found = connection.execute(query).all()[::-1]
        features = pd.DataFrame([row.features for row in found])
        return features.assign(
            score=[row.score for row in found],
            label=[row.label for row in found],
            true_label=pd.array([row.true_label for row in found], dtype="Float64").astype(float),
            created_at=[row.created_at for row in found],
            prediction_id=[row.id for row in found],
        )

    def labelled(self, model_name: str, since: datetime | None = None) -> pd.DataFrame:
        """Predictions of ``model_name`` (any version) that received their true label, made
        after ``since``, oldest first: the features, ``true_label``, ``created_at``,
        ``prediction_id`` and the ``model_version`` that answered."""
        if not self._created:
            self.create()
        query = (
            sa.select(
                predictions.c.id,
                predictions.c.created_at,
                predictions.c.model_version,
                predictions.c.features,
                predictions.c.true_label,
            )
            .where(predictions.c.model_name == model_name, predictions.c.true_label.is_not(None))
            .order_by(predictions.c.created_at, predictions.c.id)
        )
        if since is not None:
            query = query.where(predictions.c.created_at > since)
        with self.engine.connect() as connection:
            found = connection.execute(query).all()
        features = pd.DataFrame([row.features for row in found])
        return features.assign(
            true_label=[int(row.true_label) for row in found],
            created_at=pd.to_datetime([row.created_at for row in found], utc=True),
            prediction_id=[row.id for row in found],
            model_version=[row.model_version for row in found],
        )

    def dispose(self) -> None:
        self.engine.dispose()


class PredictionWriter:
    """Writes predictions off the request path, in batches, through a bounded buffer.

    A request only appends to a deque (no lock, no wake-up of the writer thread); the thread
    wakes every ``interval_seconds`` (or at once when someone calls :meth:`flush`) and writes
    everything buffered in batches of at most ``batch_size``, one transaction each. Waking per
    prediction instead would mean one tiny transaction, and a thread switch, per request.
    """

    def __init__(
        self,
        log: PredictionLog,
        *,
        capacity: int = 10_000,
        batch_size: int = 1_000,
        interval_seconds: float = 0.2,
        on_drop: Callable[[int], None] = lambda count: None,
    ) -> None:
        self.log = log
        self.capacity = capacity
        self.batch_size = batch_size
        self.interval = interval_seconds
        self.on_drop = on_drop
        self.dropped = 0
        self.written = 0
        self._buffer: deque[Prediction] = deque()
        self._pending: list[Prediction] = []  # taken from the buffer, not yet written
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-writer", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        """Predictions accepted but not yet written."""
        return len(self._buffer) + len(self._pending)

    def submit(self, prediction: Prediction) -> None:
        """Buffer one prediction, never blocking: when the buffer is full it is dropped, counted."""
        if self.queued >= self.capacity:
            self.dropped += 1
            self.on_drop(1)
            return
        self._buffer.append(prediction)

    def flush(self, timeout: float = 10.0) -> bool:
        """Write everything buffered so far now; False if that took longer than ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.queued == 0:
                return True
            self._wake.set()
            time.sleep(0.005)
        return False

    def close(self, timeout: float = 10.0) -> None:
        """Write what is buffered (as far as the database allows within ``timeout``), then stop."""
        self.flush(timeout)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=timeout)

    def _run(self) -> None:
        backoff = 0.5
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            stopping = self._stop.is_set()
            while self._buffer or self._pending:
                while self._buffer and len(self._pending) < self.batch_size:
                    self._pending.append(self._buffer.popleft())
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
                self._pending = []
            if stopping:
                return
