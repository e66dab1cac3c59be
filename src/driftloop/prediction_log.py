"""The prediction log: every prediction, and its true label once feedback arrives, in SQL.

SQLite by default, PostgreSQL by URL (SQLAlchemy). The inference service does not write to SQL
on the request path: :class:`PredictionWriter` appends each answered prediction to a spool file
first (one ``write()`` before the answer leaves, which survives the process being killed) and a
background thread drains the spool into SQL in batches. Whatever a dead process left in its
spool is replayed by the next one; inserts ignore ids already present, so a replay after a crash
mid-drain writes nothing twice. When the database is down the spool grows (up to a capacity;
beyond it predictions are dropped and counted) and inference keeps answering.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

if TYPE_CHECKING:  # imported by the reads that return frames: the writer needs no pandas
    import pandas as pd

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
    # score: binary, the probability of 1; multiclass, that of the class answered; regression,
    # the value. label: 0/1, the class's index in the spec, or 0 (regression). true_label: the
    # same encoding as label, or the true value of a regression target.
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("label", sa.Integer, nullable=False),
    sa.Column("true_label", sa.Float, nullable=True),
    # When the label came (None: not yet); indexed: the monitor reads the labels since a time.
    sa.Column("feedback_at", sa.DateTime(timezone=True), nullable=True, index=True),
    # A rollout's challenger answers too: role "canary" (it answered the client) or "shadow" (it
    # scored a copy; ``paired_with`` is the champion's prediction of the same record, which
    # carries the label and the features: a shadow row's own are empty). NULL: the champion
    # (every row from before rollouts).
    sa.Column("role", sa.String(10), nullable=True),
    sa.Column("paired_with", sa.String(36), nullable=True, index=True),
)
ROLLOUT_COLUMNS = {"role": "VARCHAR(10)", "paired_with": "VARCHAR(36)"}
# The columns a prediction is written with (the label and its time come later, by feedback).
INSERTED = (
    "id", "created_at", "model_name", "model_version", "features", "score", "label", "role",
    "paired_with",
)  # fmt: skip
# Rows a client was answered with (production's and a canary's), not a shadow's copies.
ANSWERED = sa.or_(predictions.c.role.is_(None), predictions.c.role != "shadow")


def served(model_name: str, version: str) -> tuple[sa.ColumnElement[bool], ...]:
    """The rows of a model version's window: what it answered clients with (as production or a
    canary); a shadow's copies are not traffic the version served."""
    return (
        predictions.c.model_name == model_name,
        predictions.c.model_version == version,
        ANSWERED,
    )


_COUNTER_BITS = 20  # ids one call can make: far more than a request's records
_RAND_B = ((1 << 62) - 1) & ~((1 << _COUNTER_BITS) - 1)  # random bits above the counter
_VARIANT = 0b10 << 62
_LOW_48 = (1 << 48) - 1


def prediction_ids(count: int) -> list[str]:
    """``count`` new prediction ids: UUIDv7 (RFC 9562), the Unix millisecond of their making in
    the first 48 bits, then random bits, the ids of one call counting up in the last of them
    (RFC 9562 6.2, method 1: 54 random bits a call, a 20-bit counter within it).

    Time-ordered ids keep the log's indexes on ``id`` and ``paired_with`` growing at their right
    edge. With random ids (UUIDv4) every insert lands on a random page of a B-tree that grows
    with the log: at 240,000 rows a champion row and its shadow's cost 67 µs of CPU to write
    into SQLite against 28 µs with these (half of it system time, pages going to the WAL). The
    counter makes a request's ids one formatted number each (0.2 µs, not 1.5 µs).
    """
    if count > 1 << _COUNTER_BITS:
        raise ValueError(f"at most {1 << _COUNTER_BITS} ids at once, not {count}")
    millisecond = time.time_ns() // 1_000_000
    noise = int.from_bytes(os.urandom(10), "big")
    rand_a, rand_b = noise >> 68, noise & _RAND_B
    time_hex = f"{millisecond:012x}"
    tail = _VARIANT | rand_b
    prefix = f"{time_hex[:8]}-{time_hex[8:]}-7{rand_a:03x}-{tail >> 48:04x}-"
    low = tail & _LOW_48  # its counter bits are 0: counting up never carries past them
    return [f"{prefix}{low + index:012x}" for index in range(count)]


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
    role: str | None = None
    """None: the champion; "shadow" or "canary": a rollout's challenger."""
    paired_with: str | None = None
    """A shadow's: the champion's prediction of the same record."""

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
        self._sqlite = self.engine.dialect.name == "sqlite"
        if self.engine.dialect.name not in ("sqlite", "postgresql"):
            raise ValueError(f"the prediction log supports SQLite and PostgreSQL, not {url}")
        mark = "?" if self._sqlite else "%s"  # sqlite3's paramstyle, and psycopg's
        self._insert = (
            f"INSERT INTO predictions ({', '.join(INSERTED)}) "
            f"VALUES ({', '.join([mark] * len(INSERTED))}) ON CONFLICT (id) DO NOTHING"
        )

    def create(self) -> None:
        """Create the table if it is not there, and bring an older one up to date."""
        metadata.create_all(self.engine)
        self._upgrade()
        self._created = True

    def _upgrade(self) -> None:
        """Bring a log written by an older driftloop up to date: the rollout columns are added
        (empty: every older row is the champion's), ``feedback_at`` gets its index;
        ``true_label`` was an integer column before regression targets: on PostgreSQL it
        becomes double precision (SQLite stores a float in it as it is)."""
        inspector = sa.inspect(self.engine)
        columns = {c["name"]: c for c in inspector.get_columns("predictions")}
        indexes = {index["name"] for index in inspector.get_indexes("predictions")}
        if "ix_predictions_feedback_at" not in indexes:
            with self.engine.begin() as connection:
                connection.exec_driver_sql(
                    "CREATE INDEX IF NOT EXISTS ix_predictions_feedback_at "
                    "ON predictions (feedback_at)"
                )
            log.info("prediction log: indexed feedback_at")
        missing = [name for name in ROLLOUT_COLUMNS if name not in columns]
        if missing:
            with self.engine.begin() as connection:
                for name in missing:
                    connection.exec_driver_sql(
                        f"ALTER TABLE predictions ADD COLUMN {name} {ROLLOUT_COLUMNS[name]}"
                    )
                connection.exec_driver_sql(
                    "CREATE INDEX IF NOT EXISTS ix_predictions_paired_with "
                    "ON predictions (paired_with)"
                )
            log.info("prediction log: added the columns %s", ", ".join(missing))
        if self.engine.dialect.name != "postgresql":
            return
        if isinstance(columns["true_label"]["type"], sa.Integer):
            with self.engine.begin() as connection:
                connection.exec_driver_sql(
                    "ALTER TABLE predictions ALTER COLUMN true_label TYPE double precision"
                )
            log.info("prediction log: true_label is now a float column")

    def write(self, rows: Sequence[Prediction]) -> None:
        """Insert ``rows``; a prediction id already in the log is left as it is (a replay).

        One ``executemany`` of the driver's own SQL, with the values already in the form the
        column stores: SQLAlchemy's per-value processing cost about as much as SQLite's insert
        itself (measured in the writer: 20 µs of CPU a row through it, 10 µs without)."""
        if not self._created:
            self.create()
        if not rows:
            return
        stamps: dict[datetime, Any] = {}  # a request's rows (and its shadow's) share one time
        values = []
        for row in rows:
            created = stamps.get(row.created_at)
            if created is None:
                created = stamps[row.created_at] = self._stored_time(row.created_at)
            values.append(
                (
                    row.id,
                    created,
                    row.model_name,
                    row.model_version,
                    orjson.dumps(row.features).decode(),
                    row.score,
                    row.label,
                    row.role,
                    row.paired_with,
                )
            )
        with self.engine.begin() as connection:
            connection.exec_driver_sql(self._insert, values)

    def _stored_time(self, moment: datetime) -> Any:
        """SQLite: the text SQLAlchemy's DateTime reads back (and compares as text)."""
        if not self._sqlite:
            return moment
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
        return moment.isoformat(" ", "microseconds")

    def record_feedback(
        self, prediction_id: str, true_label: float, model_name: str | None = None
    ) -> str:
        """Store the true label of a prediction (of ``model_name``, when given) unless it has
        one; a repeat of the same label changes nothing.

        One conditional UPDATE (``... WHERE true_label IS NULL``), so of two clients racing with
        different labels exactly one is recorded and the other sees a conflict, on SQLite and
        PostgreSQL alike.
        """
        if not self._created:
            self.create()
        same_model = predictions.c.model_name == model_name if model_name is not None else sa.true()
        # A shadow's copy is never a client's prediction: its label is its champion row's.
        same_model = sa.and_(same_model, ANSWERED)
        with self.engine.begin() as connection:
            updated = connection.execute(
                predictions.update()
                .where(
                    predictions.c.id == prediction_id,
                    predictions.c.true_label.is_(None),
                    same_model,
                )
                .values(true_label=true_label, feedback_at=datetime.now(UTC))
            )
            if updated.rowcount == 1:
                return FeedbackResult.RECORDED
            current = connection.execute(
                sa.select(predictions.c.true_label).where(
                    predictions.c.id == prediction_id, same_model
                )
            ).first()
        if current is None:
            return FeedbackResult.UNKNOWN
        same = current.true_label == true_label
        return FeedbackResult.ALREADY_RECORDED if same else FeedbackResult.CONFLICT

    def count(self) -> int:
        if not self._created:
            self.create()
        with self.engine.connect() as connection:
            return int(
                connection.execute(sa.select(sa.func.count()).select_from(predictions)).scalar_one()
            )

    def get(self, prediction_id: str) -> dict[str, Any] | None:
        if not self._created:
            self.create()
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(predictions).where(predictions.c.id == prediction_id)
            ).first()
        return None if row is None else dict(row._mapping)

    def window_size(self, model_name: str, version: str, rows: int) -> int:
        """How many rows :meth:`window` would return, counted without reading them."""
        if not self._created:
            self.create()
        newest = sa.select(sa.literal(1)).where(*served(model_name, version)).limit(rows).subquery()
        with self.engine.connect() as connection:
            return int(
                connection.execute(sa.select(sa.func.count()).select_from(newest)).scalar_one()
            )

    def window(self, model_name: str, version: str, rows: int) -> pd.DataFrame:
        """The newest ``rows`` predictions one model version answered (as production or as a
        canary; not a shadow's copies), oldest first.

        One column per feature, then ``score``, ``label``, ``true_label`` (NaN where no feedback
        came), ``created_at``, ``feedback_at`` (when the label came; NaT where none did) and
        ``prediction_id``.
        """
        import pandas as pd

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
                predictions.c.feedback_at,
            )
            .where(*served(model_name, version))
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
            feedback_at=pd.to_datetime([row.feedback_at for row in found], utc=True),
            prediction_id=[row.id for row in found],
        )

    def label_delays(
        self, model_name: str, since: datetime | None
    ) -> tuple[list[float], datetime | None]:
        """How long each label of ``model_name`` that arrived after ``since`` took (seconds
        from prediction to label), and when the newest of them arrived (``since`` when none
        did): the monitor reports the delay of each label once."""
        if not self._created:
            self.create()
        query = sa.select(predictions.c.created_at, predictions.c.feedback_at).where(
            predictions.c.model_name == model_name,
            predictions.c.feedback_at.is_not(None),
            ANSWERED,
        )
        if since is not None:
            query = query.where(predictions.c.feedback_at > since)
        with self.engine.connect() as connection:
            found = connection.execute(query).all()
        if not found:
            return [], since
        delays = [
            max((_aware(row.feedback_at) - _aware(row.created_at)).total_seconds(), 0.0)
            for row in found
        ]
        return delays, max(_aware(row.feedback_at) for row in found)

    def labelled(self, model_name: str, since: datetime | None = None) -> pd.DataFrame:
        """Predictions of ``model_name`` (any version) that received their true label, made
        after ``since``, oldest first: the features, ``true_label``, ``created_at``,
        ``prediction_id`` and the ``model_version`` that answered."""
        import pandas as pd

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
            .where(
                predictions.c.model_name == model_name,
                predictions.c.true_label.is_not(None),
                ANSWERED,
            )
            .order_by(predictions.c.created_at, predictions.c.id)
        )
        if since is not None:
            query = query.where(predictions.c.created_at > since)
        with self.engine.connect() as connection:
            found = connection.execute(query).all()
        features = pd.DataFrame([row.features for row in found])
        return features.assign(
            true_label=[float(row.true_label) for row in found],
            created_at=pd.to_datetime([row.created_at for row in found], utc=True),
            prediction_id=[row.id for row in found],
            model_version=[row.model_version for row in found],
        )

    def shadow_pairs(
        self, model_name: str, champion: str, challenger: str, since: datetime
    ) -> pd.DataFrame:
        """A shadow rollout's evidence: each labelled champion prediction of ``champion`` made
        after ``since`` beside the shadow ``challenger``'s prediction of the same record;
        columns ``champion_score``, ``challenger_score``, ``champion_label``,
        ``challenger_label``, ``true_label``, ``created_at``, oldest first."""
        import pandas as pd

        if not self._created:
            self.create()
        shadow = predictions.alias("shadow")
        query = (
            sa.select(
                predictions.c.score,
                shadow.c.score,
                predictions.c.label,
                shadow.c.label,
                predictions.c.true_label,
                predictions.c.created_at,
            )
            .join(shadow, shadow.c.paired_with == predictions.c.id)
            .where(
                predictions.c.model_name == model_name,
                predictions.c.model_version == champion,
                predictions.c.true_label.is_not(None),
                predictions.c.created_at > since,
                shadow.c.model_version == challenger,
                shadow.c.role == "shadow",
            )
            .order_by(predictions.c.created_at, predictions.c.id)
        )
        with self.engine.connect() as connection:
            found = connection.execute(query).all()
        columns = ["champion_score", "challenger_score", "champion_label", "challenger_label"]
        return pd.DataFrame(found, columns=[*columns, "true_label", "created_at"])

    def answered_outcomes(
        self, model_name: str, version: str, since: datetime, *, role: str | None
    ) -> pd.DataFrame:
        """Labelled predictions ``version`` answered clients with after ``since``, in ``role``
        (None: as the champion; "canary"): ``score``, ``label``, ``true_label``,
        ``created_at``, oldest first. A canary's evidence, one sample per model."""
        import pandas as pd

        if not self._created:
            self.create()
        as_role = predictions.c.role.is_(None) if role is None else predictions.c.role == role
        query = (
            sa.select(
                predictions.c.score,
                predictions.c.label,
                predictions.c.true_label,
                predictions.c.created_at,
            )
            .where(
                predictions.c.model_name == model_name,
                predictions.c.model_version == version,
                predictions.c.true_label.is_not(None),
                predictions.c.created_at > since,
                as_role,
            )
            .order_by(predictions.c.created_at, predictions.c.id)
        )
        with self.engine.connect() as connection:
            found = connection.execute(query).all()
        return pd.DataFrame(found, columns=["score", "label", "true_label", "created_at"])

    def dispose(self) -> None:
        self.engine.dispose()


class _Segment:
    """One spool file, held under an exclusive ``flock`` for as long as this process owns it.

    The kernel drops the lock when the process dies, however it dies: an unlocked segment is one
    nobody is writing or draining, and any process may adopt it.
    """

    def __init__(self, path: Path, fd: int, kept: list[Prediction] | None) -> None:
        self.path = path
        self.fd = fd
        self.predictions = 0
        # What this process wrote, kept in memory too: draining its own segment needs no
        # parsing; an adopted one (None) is read back from disk.
        self.kept = kept

    @classmethod
    def create(cls, folder: Path) -> _Segment:
        path = folder / f"{os.getpid()}-{uuid.uuid4().hex[:12]}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return cls(path, fd, [])

    @classmethod
    def adopt(cls, path: Path) -> _Segment | None:
        """The segment at ``path`` if no living process holds it, else None."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Drained and removed by its owner between our open and our lock: nothing to adopt.
            if os.fstat(fd).st_ino != path.stat().st_ino:
                raise FileNotFoundError(path)
        except OSError:
            os.close(fd)
            return None
        return cls(path, fd, None)

    def read(self) -> Iterator[Prediction]:
        """The predictions in the file; a torn last line (a write cut short) is skipped."""
        with self.path.open("rb") as file:
            for number, line in enumerate(file, start=1):
                if not line.endswith(b"\n"):
                    log.warning("%s: line %d is incomplete; skipped", self.path, number)
                    continue
                try:
                    row = orjson.loads(line)
                    row["created_at"] = datetime.fromisoformat(row["created_at"])
                    prediction = Prediction(**row)
                except (orjson.JSONDecodeError, TypeError, KeyError, ValueError) as problem:
                    log.error(
                        "%s: line %d is not a prediction (%s); skipped", self.path, number, problem
                    )
                    continue
                yield prediction

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        os.close(self.fd)


def _aware(moment: datetime) -> datetime:
    """A time from the log in UTC (SQLite gives it back without its zone)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def spool_key(url: str) -> str:
    """The spool subfolder of the prediction log at ``url`` (a digest: URLs hold passwords)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def spooled_predictions(folder: Path) -> int:
    """Predictions waiting in the spool files anywhere under ``folder`` (lines, counted)."""
    total = 0
    for path in folder.glob("**/*.jsonl"):
        try:
            total += path.read_bytes().count(b"\n")
        except FileNotFoundError:
            pass
    return total


class PredictionWriter:
    """Spools predictions to disk before they are answered and drains them into SQL in batches.

    :meth:`submit` appends the predictions to this process's spool segment with one unbuffered
    ``write()`` (no fsync: the data is in the kernel's page cache, which outlives the process)
    under a lock, and returns. A thread wakes every ``interval_seconds`` (or at once on
    :meth:`flush`), starts a new segment, and writes the finished one into SQL in batches of
    ``batch_size``, one transaction each, then deletes it. It also adopts segments that no
    living process holds (left by a worker that was killed) and drains them the same way; this
    happens at start-up too. While the database is down, segments stay on disk and are retried
    with a backoff; past ``capacity`` predictions waiting, new ones are dropped and counted.
    """

    def __init__(
        self,
        log: PredictionLog,
        spool: Path,
        *,
        capacity: int = 1_000_000,
        batch_size: int = 1_000,
        interval_seconds: float = 0.2,
        on_drop: Callable[[int], None] = lambda count: None,
    ) -> None:
        self.log = log
        # One folder per database: a spool is replayed into the log it was meant for, even when
        # services writing to different databases share DRIFTLOOP_HOME.
        self.spool = spool / spool_key(log.url)
        spool = self.spool
        self.capacity = capacity
        self.batch_size = batch_size
        self.interval = interval_seconds
        self.on_drop = on_drop
        self.dropped = 0
        self.written = 0
        spool.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()
        self._segment = _Segment.create(spool)
        self._finished: list[_Segment] = []  # owned by this process, waiting to be drained
        self._waiting = 0  # predictions spooled (or adopted) and not yet in SQL
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._adopt()
        self._thread = threading.Thread(target=self._run, name="prediction-writer", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        """Predictions accepted (spooled) but not yet written to SQL."""
        return self._waiting

    def submit(self, *batch: Prediction, spool: bool = True) -> None:
        """Spool ``batch``; on return it survives this process. Never waits for the database:
        past ``capacity`` waiting predictions, or when the spool cannot be written, the batch is
        dropped and counted.

        ``spool=False`` is for rows no client saw (a shadow's scores): they go into SQL with the
        next batch of the spooled ones, retried the same way, but only from memory, so a killed
        process loses them.
        """
        data = (
            b"".join(orjson.dumps(p.row(), option=orjson.OPT_APPEND_NEWLINE) for p in batch)
            if spool
            else b""
        )
        with self._lock:
            if self._waiting + len(batch) > self.capacity:
                self._drop(len(batch), "the spool is full")
                return
            try:
                written = os.write(self._segment.fd, data) if spool else 0
            except OSError as problem:
                self._drop(len(batch), f"the spool cannot be written ({problem})")
                return
            if written != len(data):  # a full disk: the line is torn, and skipped on replay
                self._drop(len(batch), "the spool's disk is full")
                return
            self._segment.predictions += len(batch)
            self._segment.kept.extend(batch)  # type: ignore[union-attr]
            self._waiting += len(batch)

    def _drop(self, count: int, why: str) -> None:
        if self.dropped == 0 or self.dropped // 1000 != (self.dropped + count) // 1000:
            log.error(
                "prediction log: %s; %d predictions dropped so far", why, self.dropped + count
            )
        self.dropped += count
        self.on_drop(count)

    def flush(self, timeout: float = 10.0) -> bool:
        """Write everything spooled so far to SQL now; False if it took longer than ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._waiting == 0:
                return True
            self._wake.set()
            time.sleep(0.005)
        return False

    def close(self, timeout: float = 10.0) -> None:
        """Write what is spooled (as far as the database allows within ``timeout``), then stop.
        What could not be written stays in the spool for the next start."""
        self.flush(timeout)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=timeout)
        with self._lock:
            segments = [self._segment, *self._finished]
            for segment in segments:
                if segment.predictions == 0:
                    segment.remove()
                else:  # the database did not take them in time: the next start replays them
                    os.close(segment.fd)

    def _run(self) -> None:
        backoff = 0.5
        adopt_every, last_adopted = 5.0, time.monotonic()
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            stopping = self._stop.is_set()
            if time.monotonic() - last_adopted > adopt_every:
                self._adopt()
                last_adopted = time.monotonic()
            with self._lock:
                if self._segment.predictions:
                    self._finished.append(self._segment)
                    self._segment = _Segment.create(self.spool)
            try:
                self._drain()
            except Exception as problem:  # the database is down: keep the segments, back off
                log.warning(
                    "prediction log write failed (%s); retrying in %.1f s", problem, backoff
                )
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.5
            if stopping:
                return

    def _drain(self) -> None:
        while self._finished:
            segment = self._finished[0]
            rows = segment.kept if segment.kept is not None else list(segment.read())
            for start in range(0, len(rows), self.batch_size):
                self.log.write(rows[start : start + self.batch_size])
            segment.remove()
            self._finished.pop(0)
            self.written += len(rows)
            with self._lock:
                self._waiting -= segment.predictions

    def _adopt(self) -> None:
        """Take over the spool segments of processes that died."""
        owned = {self._segment.path, *(segment.path for segment in self._finished)}
        for path in sorted(self.spool.glob("*.jsonl")):
            if path in owned:
                continue
            segment = _Segment.adopt(path)
            if segment is None:
                continue
            segment.predictions = sum(1 for _ in segment.read())
            log.warning(
                "replaying %d predictions a stopped process left in %s", segment.predictions, path
            )
            with self._lock:
                self._waiting += segment.predictions
            self._finished.append(segment)
