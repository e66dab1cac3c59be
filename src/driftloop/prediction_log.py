"""The prediction log: every prediction, and its true label once feedback arrives, in SQL.

SQLite by default, PostgreSQL by URL (SQLAlchemy). The log stores what one model answered in one
call as one row (``prediction_groups``: a request's records, their scores and labels; the ids
of its predictions follow from the first one, see :func:`prediction_ids`), and each true label
as a row of its own (``prediction_labels``) that names its group and position. Writing a
100-record request is one insert, not a hundred; the readers below expand groups into one row
per prediction, so the monitor, the retrain flow and a rollout's judge see predictions as before.

The inference service does not write to SQL on the request path: :class:`PredictionWriter`
appends each answered group to a spool file first (one ``write()`` before the answer leaves,
which survives the process being killed) and a background thread drains the spool into SQL in
batches. Whatever a dead process left in its spool is replayed by the next one; inserts ignore
ids already present, so a replay after a crash mid-drain writes nothing twice. When the database
is down the spool grows (up to a capacity; beyond it predictions are dropped and counted) and
inference keeps answering.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
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
groups = sa.Table(
    "prediction_groups",
    metadata,
    # The id of the group's first prediction; the others count up from it (prediction_ids).
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_version", sa.String(100), nullable=False),
    # NULL: the champion; "canary" (answered the client) or "shadow" (scored a copy).
    sa.Column("role", sa.String(10), nullable=True),
    sa.Column("size", sa.Integer, nullable=False),
    # JSON lists of ``size`` items each: the records (empty for a shadow: its records are the
    # paired champion predictions'), the scores and the labels (see Prediction). ``paired_with``:
    # a shadow's, the champion prediction of each record; NULL otherwise.
    sa.Column("features", sa.JSON, nullable=False),
    sa.Column("scores", sa.JSON, nullable=False),
    sa.Column("labels", sa.JSON, nullable=False),
    sa.Column("paired_with", sa.JSON, nullable=True),
    # A version's window: its newest groups, read backwards along this index.
    sa.Index("ix_prediction_groups_version", "model_name", "model_version", "created_at"),
)
labels = sa.Table(
    "prediction_labels",
    metadata,
    sa.Column("prediction_id", sa.String(36), primary_key=True),
    sa.Column("group_id", sa.String(36), nullable=False, index=True),
    sa.Column("position", sa.Integer, nullable=False),
    # 0/1, the class's index in the spec, or the true value of a regression target.
    sa.Column("true_label", sa.Float, nullable=False),
    # When the label came; indexed: the monitor reads the labels since a time.
    sa.Column("feedback_at", sa.DateTime(timezone=True), nullable=False, index=True),
)
# The columns a group is written with.
INSERTED = (
    "id", "created_at", "model_name", "model_version", "role", "size", "features", "scores",
    "labels", "paired_with",
)  # fmt: skip
# Groups a client was answered with (production's and a canary's), not a shadow's copies.
ANSWERED = sa.or_(groups.c.role.is_(None), groups.c.role != "shadow")


def served(model_name: str, version: str) -> tuple[sa.ColumnElement[bool], ...]:
    """The groups of a model version's window: what it answered clients with (as production or
    a canary); a shadow's copies are not traffic the version served."""
    return (groups.c.model_name == model_name, groups.c.model_version == version, ANSWERED)


def _text(column: sa.ColumnElement[Any]) -> sa.ColumnElement[str]:
    """A JSON column read as its text: decoded once per group here, not by the driver per row."""
    return sa.cast(column, sa.Text)


def _group_lists(*names: str) -> list[sa.ColumnElement[Any]]:
    """A group's JSON lists ``names`` (records, scores and labels unless named) as their text."""
    return [_text(groups.c[name]).label(name) for name in names or ("features", "scores", "labels")]


def _whole_group() -> list[sa.ColumnElement[Any]]:
    """Every column of a group, its records as text (read by :func:`_records`)."""
    return [
        _text(column).label("features") if column.name == "features" else column
        for column in groups.c
    ]


def _records(text: str | bytes) -> list[dict[str, Any]]:
    """A group's records from their JSON. They are stored as the client sent them, which may
    hold a number orjson does not read (an integer beyond 64 bits): those go through the
    standard library's parser."""
    try:
        return orjson.loads(text)  # type: ignore[no-any-return]
    except orjson.JSONDecodeError:
        return json.loads(text)  # type: ignore[no-any-return]


_COUNTER_BITS = 20  # ids one call can make: far more than a request's records
_COUNTER = (1 << _COUNTER_BITS) - 1
_RAND_B = ((1 << 62) - 1) & ~_COUNTER  # random bits above the counter
_VARIANT = 0b10 << 62
_LOW_48 = (1 << 48) - 1


def prediction_ids(count: int) -> list[str]:
    """``count`` new prediction ids: UUIDv7 (RFC 9562), the Unix millisecond of their making in
    the first 48 bits, then random bits, the ids of one call counting up in the last of them
    (RFC 9562 6.2, method 1: 54 random bits a call, a 20-bit counter within it, 0 for the first).

    Time-ordered ids keep the log's primary keys growing at their right edge (with random ids
    every insert lands on a random page of a B-tree that grows with the log: 67 µs of CPU a row
    at 240,000 rows against 28 µs). The counter makes a call's ids one formatted number each,
    and lets the log store a call's predictions as one group: any of its ids names the group's
    first (:func:`group_of`).
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


def following_ids(first: str, count: int) -> list[str]:
    """The ids of a group of ``count`` predictions whose first id is ``first``."""
    if count == 1:
        return [first]
    low = int(first[24:], 16)
    return [f"{first[:24]}{low + index:012x}" for index in range(count)]


def group_of(prediction_id: str) -> tuple[str, int] | None:
    """The first id of the call that made ``prediction_id`` and its position in it, when it is
    an id :func:`prediction_ids` made (None otherwise: another writer's id is a group of one)."""
    if len(prediction_id) != 36 or prediction_id[14] != "7" or prediction_id[23] != "-":
        return None
    try:
        low = int(prediction_id[24:], 16)
    except ValueError:
        return None
    if f"{low:012x}" != prediction_id[24:]:  # written another way: not an id made here
        return None
    return f"{prediction_id[:24]}{low & ~_COUNTER:012x}", low & _COUNTER


@dataclass(frozen=True)
class Prediction:
    """One answered record (a group of one, as the log stores it)."""

    id: str
    created_at: datetime
    model_name: str
    model_version: str
    features: dict[str, Any]
    score: float
    label: int
    """0/1, the class's index in the spec, or 0 (regression)."""
    role: str | None = None
    """None: the champion; "shadow" or "canary": a rollout's challenger."""
    paired_with: str | None = None
    """A shadow's: the champion's prediction of the same record."""

    def group(self) -> PredictionGroup:
        return PredictionGroup(
            self.id,
            self.created_at,
            self.model_name,
            self.model_version,
            orjson.dumps([self.features] if self.role != "shadow" else []),
            [self.score],
            [self.label],
            self.role,
            [self.paired_with] if self.paired_with is not None else None,
        )


@dataclass(frozen=True, slots=True)
class PredictionGroup:
    """What one model answered in one call: a request's records (or a shadow's batch of
    copies), the ids counting up from ``id`` (:func:`prediction_ids`)."""

    id: str
    created_at: datetime
    model_name: str
    model_version: str
    features: bytes
    """The records, in order, as a JSON list (as the client sent them, when they came as one
    list); empty for a shadow (its records are its champion rows')."""
    scores: list[float]
    """Binary: the probability of 1; multiclass: that of the class answered; regression: the
    value."""
    labels: list[int]
    role: str | None = None
    paired_with: list[str] | None = None

    @property
    def size(self) -> int:
        return len(self.scores)

    @property
    def ids(self) -> list[str]:
        return following_ids(self.id, self.size)

    def line(self) -> bytes:
        """The group as one line of a spool file (the records' JSON as it is, not encoded
        again)."""
        head = orjson.dumps(
            {
                "size": self.size,
                "id": self.id,
                "created_at": self.created_at,
                "model_name": self.model_name,
                "model_version": self.model_version,
                "scores": self.scores,
                "labels": self.labels,
                "role": self.role,
                "paired_with": self.paired_with,
            }
        )
        # JSON text inside a line must not break it: a client's raw body may hold newlines.
        features = self.features.replace(b"\n", b" ").replace(b"\r", b" ")
        return head[:-1] + b',"features":' + features + b"}\n"

    @classmethod
    def from_line(cls, line: bytes) -> PredictionGroup:
        """A group from its spool line (or a prediction, as driftloop spooled them before)."""
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            row = json.loads(line)
        row["created_at"] = datetime.fromisoformat(row["created_at"])
        if "size" not in row:
            return Prediction(**row).group()
        del row["size"]
        row["features"] = json.dumps(row["features"]).encode()
        return cls(**row)


def _as_group(item: Prediction | PredictionGroup) -> PredictionGroup:
    return item.group() if isinstance(item, Prediction) else item


class FeedbackResult:
    RECORDED = "recorded"
    ALREADY_RECORDED = "already recorded"
    CONFLICT = "conflicting label"
    UNKNOWN = "unknown prediction"


SQLITE_PAGE_SIZE = 16_384  # of a new SQLite log


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
            json_deserializer=orjson.loads,
        )
        self._sqlite = self.engine.dialect.name == "sqlite"
        if self._sqlite:
            with self.engine.begin() as connection:
                # A new log gets 16 KB pages (before WAL, which fixes the page size): a request
                # of 100 records (about 20 KB) takes one page and one overflow page instead of
                # five 4 KB pages, and its insert costs about a third. A log an older driftloop
                # made keeps its pages (the pragma does nothing there).
                connection.exec_driver_sql(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
                connection.exec_driver_sql("PRAGMA journal_mode=WAL")
            # WAL with synchronous=NORMAL survives a crash of the service (not of the machine)
            # and saves an fsync per batch; it is a per-connection setting.
            sa.event.listen(
                self.engine,
                "connect",
                lambda connection, _: connection.execute("PRAGMA synchronous=NORMAL"),
            )

        self._created = False
        if self.engine.dialect.name not in ("sqlite", "postgresql"):
            raise ValueError(f"the prediction log supports SQLite and PostgreSQL, not {url}")
        mark = "?" if self._sqlite else "%s"  # sqlite3's paramstyle, and psycopg's
        self._insert = (
            f"INSERT INTO prediction_groups ({', '.join(INSERTED)}) "
            f"VALUES ({', '.join([mark] * len(INSERTED))}) ON CONFLICT (id) DO NOTHING"
        )

    def create(self) -> None:
        """Create the tables if they are not there, and bring an older log up to date."""
        metadata.create_all(self.engine)
        self._upgrade()
        self._created = True

    def _upgrade(self) -> None:
        """Move the rows of a log written by an older driftloop (``predictions``: one row per
        prediction, its label in it) into the groups and labels tables, each a group of one, in
        one transaction, and drop the old table: a move cut short leaves the old table whole."""
        inspector = sa.inspect(self.engine)
        if "predictions" not in inspector.get_table_names():
            return
        present = {column["name"] for column in inspector.get_columns("predictions")}
        old = sa.table("predictions", *(sa.column(name) for name in sorted(present)))
        wanted = ["id", "created_at", "model_name", "model_version", "features", "score", "label"]
        wanted += ["true_label", "feedback_at"]
        wanted += [name for name in ("role", "paired_with") if name in present]
        moved = 0
        with self.engine.begin() as connection:
            rows = connection.execute(
                sa.select(*(old.c[name] for name in wanted)).order_by(old.c.created_at)
            )
            while chunk := rows.fetchmany(5_000):
                batch, labelled = [], []
                for row in chunk:
                    values = row._mapping
                    features = values["features"]
                    if isinstance(features, str):
                        features = orjson.loads(features)
                    role = values.get("role")
                    prediction = Prediction(
                        values["id"],
                        _aware(_as_time(values["created_at"])),
                        values["model_name"],
                        values["model_version"],
                        features,
                        float(values["score"]),
                        int(values["label"]),
                        role,
                        values.get("paired_with"),
                    )
                    batch.append(prediction.group())
                    if values["true_label"] is not None and role != "shadow":
                        labelled.append(
                            {
                                "prediction_id": values["id"],
                                "group_id": values["id"],
                                "position": 0,
                                "true_label": float(values["true_label"]),
                                "feedback_at": _aware(_as_time(values["feedback_at"])),
                            }
                        )
                self._insert_groups(connection, batch)
                if labelled:
                    connection.execute(labels.insert(), labelled)
                moved += len(chunk)
            connection.exec_driver_sql("DROP TABLE predictions")
        log.info("prediction log: moved %d predictions into prediction_groups", moved)

    def write(self, rows: Sequence[Prediction | PredictionGroup]) -> None:
        """Insert ``rows`` (a prediction is a group of one); a group whose id is already in the
        log is left as it is (a replay).

        One ``executemany`` of the driver's own SQL, with the values already in the form the
        column stores: SQLAlchemy's per-value processing cost about as much as the insert."""
        if not self._created:
            self.create()
        if not rows:
            return
        with self.engine.begin() as connection:
            self._insert_groups(connection, [_as_group(row) for row in rows])

    def _insert_groups(self, connection: sa.Connection, rows: Sequence[PredictionGroup]) -> None:
        stamps: dict[datetime, Any] = {}  # a request's groups (and its shadow's) share one time
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
                    row.role,
                    len(row.scores),
                    row.features.decode(),
                    orjson.dumps(row.scores).decode(),
                    orjson.dumps(row.labels).decode(),
                    None if row.paired_with is None else orjson.dumps(row.paired_with).decode(),
                )
            )
        connection.exec_driver_sql(self._insert, values)

    def _stored_time(self, moment: datetime) -> Any:
        """SQLite: the text SQLAlchemy's DateTime reads back (and compares as text)."""
        if not self._sqlite:
            return moment
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
        return moment.isoformat(" ", "microseconds")

    def _find(
        self, connection: sa.Connection, prediction_id: str, *columns: sa.ColumnElement[Any]
    ) -> tuple[sa.Row[Any], int] | None:
        """The group holding ``prediction_id`` (its ``columns``, or all of them) and its
        position in it."""
        candidates = [(prediction_id, 0)]
        if (derived := group_of(prediction_id)) is not None and derived[1] != 0:
            candidates.append(derived)
        for key, position in candidates:
            found = connection.execute(
                sa.select(*(columns or _whole_group())).where(
                    groups.c.id == key, groups.c.size > position
                )
            ).first()
            if found is not None:
                return found, position
        return None

    def record_feedback(
        self, prediction_id: str, true_label: float, model_name: str | None = None
    ) -> str:
        """Store the true label of a prediction (of ``model_name``, when given) unless it has
        one; a repeat of the same label changes nothing.

        One insert that does nothing on an id already labelled (``ON CONFLICT DO NOTHING``), so
        of two clients racing with different labels exactly one is recorded and the other sees
        a conflict, on SQLite and PostgreSQL alike. A shadow's copy is never a client's
        prediction: its id is unknown here.
        """
        if not self._created:
            self.create()
        with self.engine.begin() as connection:
            found = self._find(
                connection, prediction_id, groups.c.id, groups.c.role, groups.c.model_name
            )
            if found is None:
                return FeedbackResult.UNKNOWN
            group, position = found
            if group.role == "shadow" or model_name not in (None, group.model_name):
                return FeedbackResult.UNKNOWN
            from sqlalchemy.dialects import postgresql, sqlite

            insert = sqlite.insert(labels) if self._sqlite else postgresql.insert(labels)
            added = connection.execute(
                insert.values(
                    prediction_id=prediction_id,
                    group_id=group.id,
                    position=position,
                    true_label=true_label,
                    feedback_at=datetime.now(UTC),
                )
                .on_conflict_do_nothing(index_elements=["prediction_id"])
                .returning(labels.c.prediction_id)
            ).first()
            if added is not None:
                return FeedbackResult.RECORDED
            current = connection.execute(
                sa.select(labels.c.true_label).where(labels.c.prediction_id == prediction_id)
            ).scalar_one()
        same = current == true_label
        return FeedbackResult.ALREADY_RECORDED if same else FeedbackResult.CONFLICT

    def count(self) -> int:
        """Predictions in the log (a shadow's copies too)."""
        if not self._created:
            self.create()
        with self.engine.connect() as connection:
            total = connection.execute(sa.select(sa.func.sum(groups.c.size))).scalar_one()
        return int(total or 0)

    def get(self, prediction_id: str) -> dict[str, Any] | None:
        """One prediction as a row: id, created_at, model_name, model_version, features, score,
        label, true_label, feedback_at, role, paired_with."""
        if not self._created:
            self.create()
        with self.engine.connect() as connection:
            found = self._find(connection, prediction_id)
            if found is None:
                return None
            group, position = found
            came = self._labels_of(connection, [group.id])
        return _as_row(group, position, _records(group.features), came)

    def rows(self) -> Iterator[dict[str, Any]]:
        """Every prediction in the log, a shadow's copies too, as :meth:`get` gives one, oldest
        first (for inspection and tests: it reads the whole log)."""
        if not self._created:
            self.create()
        with self.engine.connect() as connection:
            found = connection.execute(
                sa.select(*_whole_group()).order_by(groups.c.created_at, groups.c.id)
            ).all()
            came = self._labels_of(connection, [group.id for group in found])
        for group in found:
            records = _records(group.features)
            for position in range(group.size):
                yield _as_row(group, position, records, came)

    def _newest_groups(
        self, connection: sa.Connection, model_name: str, version: str, rows: int
    ) -> Iterator[sa.Row[Any]]:
        """The groups of a version's window, newest first, until they hold ``rows`` predictions
        (read as they are needed: a window of 100-record requests reads a hundredth of the rows
        one of single records does)."""
        query = (
            sa.select(
                groups.c.id,
                groups.c.created_at,
                groups.c.size,
                *_group_lists(),
            )
            .where(*served(model_name, version))
            .order_by(groups.c.created_at.desc(), groups.c.id.desc())
        )
        taken, page, before = 0, min(max(rows, 1), 5_000), query
        while taken < rows:
            found = connection.execute(before.limit(page)).all()
            for group in found:
                yield group
                taken += group.size
                if taken >= rows:
                    return
            if len(found) < page:
                return
            last = found[-1]  # the next page: the groups older than the last one read
            before = query.where(
                sa.or_(
                    groups.c.created_at < last.created_at,
                    sa.and_(groups.c.created_at == last.created_at, groups.c.id < last.id),
                )
            )

    def window_size(self, model_name: str, version: str, rows: int) -> int:
        """How many rows :meth:`window` would return, counted without reading the records."""
        if not self._created:
            self.create()
        newest = (
            sa.select(groups.c.size)
            .where(*served(model_name, version))
            .order_by(groups.c.created_at.desc(), groups.c.id.desc())
            .limit(rows)
            .subquery()
        )
        with self.engine.connect() as connection:
            total = connection.execute(sa.select(sa.func.sum(newest.c.size))).scalar_one()
        return min(int(total or 0), rows)

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
        with self.engine.connect() as connection:
            found = list(self._newest_groups(connection, model_name, version, rows))[::-1]
            came = self._labels_of(connection, [group.id for group in found])
        records: list[dict[str, Any]] = []
        scores: list[float] = []
        answers: list[int] = []
        made: list[datetime] = []
        ids: list[str] = []
        for group in found:
            records += _records(group.features)
            scores += orjson.loads(group.scores)
            answers += orjson.loads(group.labels)
            made += [group.created_at] * group.size
            ids += following_ids(group.id, group.size)
        extra = len(ids) - rows  # the oldest group may hold more than the window wants
        if extra > 0:
            del records[:extra], scores[:extra], answers[:extra], made[:extra], ids[:extra]
        truth = [came.get(prediction_id, (None, None)) for prediction_id in ids]
        return pd.DataFrame(records).assign(
            score=scores,
            label=answers,
            true_label=pd.array([t[0] for t in truth], dtype="Float64").astype(float),
            created_at=made,
            feedback_at=pd.to_datetime([t[1] for t in truth], utc=True),
            prediction_id=ids,
        )

    def _labels_of(
        self, connection: sa.Connection, group_ids: list[str]
    ) -> dict[str, tuple[float, datetime]]:
        """The labels (and when they came) of the predictions in ``group_ids``, by id."""
        came: dict[str, tuple[float, datetime]] = {}
        for start in range(0, len(group_ids), 1_000):
            chunk = group_ids[start : start + 1_000]
            for row in connection.execute(
                sa.select(labels.c.prediction_id, labels.c.true_label, labels.c.feedback_at).where(
                    labels.c.group_id.in_(chunk)
                )
            ):
                came[row.prediction_id] = (row.true_label, row.feedback_at)
        return came

    def label_delays(
        self, model_name: str, since: datetime | None
    ) -> tuple[list[float], datetime | None]:
        """How long each label of ``model_name`` that arrived after ``since`` took (seconds
        from prediction to label), and when the newest of them arrived (``since`` when none
        did): the monitor reports the delay of each label once."""
        if not self._created:
            self.create()
        query = (
            sa.select(groups.c.created_at, labels.c.feedback_at)
            .join(groups, groups.c.id == labels.c.group_id)
            .where(groups.c.model_name == model_name, ANSWERED)
        )
        if since is not None:
            query = query.where(labels.c.feedback_at > since)
        with self.engine.connect() as connection:
            found = connection.execute(query).all()
        if not found:
            return [], since
        delays = [
            max((_aware(row.feedback_at) - _aware(row.created_at)).total_seconds(), 0.0)
            for row in found
        ]
        return delays, max(_aware(row.feedback_at) for row in found)

    def _labelled_rows(
        self,
        connection: sa.Connection,
        conditions: Iterable[sa.ColumnElement[bool]],
        columns: Iterable[sa.ColumnElement[Any]] = (),
        *,
        records: bool = False,
    ) -> Iterator[tuple[Any, dict[str, list[Any]]]]:
        """Each labelled prediction of the groups meeting ``conditions``, oldest first: its row
        (the label's columns, the group's id, created_at, and ``columns``) and its group's
        JSON lists (scores, labels, and with ``records`` the features), decoded once per group:
        the records, most of a group's bytes, are read only by a caller that wants them."""
        lists = ("features", "scores", "labels") if records else ("scores", "labels")
        query = (
            sa.select(
                labels.c.prediction_id,
                labels.c.position,
                labels.c.true_label,
                groups.c.id,
                groups.c.created_at,
                *columns,
                *_group_lists(*lists),
            )
            .join(groups, groups.c.id == labels.c.group_id)
            .where(*conditions)
            .order_by(groups.c.created_at, groups.c.id, labels.c.position)
        )
        current: tuple[str, dict[str, list[Any]]] | None = None
        for row in connection.execute(query):
            if current is None or current[0] != row.id:
                decoded = {"scores": orjson.loads(row.scores), "labels": orjson.loads(row.labels)}
                if records:
                    decoded["features"] = _records(row.features)
                current = (row.id, decoded)
            yield row, current[1]

    def labelled(self, model_name: str, since: datetime | None = None) -> pd.DataFrame:
        """Predictions of ``model_name`` (any version) that received their true label, made
        after ``since``, oldest first: the features, ``true_label``, ``created_at``,
        ``prediction_id`` and the ``model_version`` that answered."""
        import pandas as pd

        if not self._created:
            self.create()
        conditions = [groups.c.model_name == model_name, ANSWERED]
        if since is not None:
            conditions.append(groups.c.created_at > since)
        records, truth, made, ids, versions = [], [], [], [], []
        with self.engine.connect() as connection:
            rows = self._labelled_rows(
                connection, conditions, [groups.c.model_version], records=True
            )
            for row, group in rows:
                records.append(group["features"][row.position])
                truth.append(float(row.true_label))
                made.append(row.created_at)
                ids.append(row.prediction_id)
                versions.append(row.model_version)
        return pd.DataFrame(records).assign(
            true_label=truth,
            created_at=pd.to_datetime(made, utc=True),
            prediction_id=ids,
            model_version=versions,
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
        champions: dict[str, tuple[float, float, int, datetime, str, int]] = {}
        shadow = (
            sa.select(
                groups.c.id,
                groups.c.size,
                *_group_lists("scores", "labels", "paired_with"),
            )
            # A shadow group is stamped with the newest champion time it scored a copy of.
            .where(
                groups.c.model_name == model_name,
                groups.c.model_version == challenger,
                groups.c.role == "shadow",
                groups.c.created_at > since,
            )
        )
        with self.engine.connect() as connection:
            conditions = [
                groups.c.model_name == model_name,
                groups.c.model_version == champion,
                groups.c.role.is_(None),
                groups.c.created_at > since,
            ]
            for row, group in self._labelled_rows(connection, conditions):
                champions[row.prediction_id] = (
                    float(row.true_label),
                    group["scores"][row.position],
                    group["labels"][row.position],
                    row.created_at,
                    row.id,
                    row.position,
                )
            shadows = connection.execute(shadow).all()
        found = []
        for copies in shadows:
            scores, answers = orjson.loads(copies.scores), orjson.loads(copies.labels)
            for index, paired in enumerate(orjson.loads(copies.paired_with or "[]")):
                if (first := champions.get(paired)) is not None:
                    truth, score, label, made, key, position = first
                    found.append(
                        (made, key, position, score, scores[index], label, answers[index], truth)
                    )
        found.sort(key=lambda pair: pair[:3])
        columns = ["champion_score", "challenger_score", "champion_label", "challenger_label"]
        return pd.DataFrame(
            [pair[3:] + (pair[0],) for pair in found],
            columns=[*columns, "true_label", "created_at"],
        )

    def answered_outcomes(
        self, model_name: str, version: str, since: datetime, *, role: str | None
    ) -> pd.DataFrame:
        """Labelled predictions ``version`` answered clients with after ``since``, in ``role``
        (None: as the champion; "canary"): ``score``, ``label``, ``true_label``,
        ``created_at``, oldest first. A canary's evidence, one sample per model."""
        import pandas as pd

        if not self._created:
            self.create()
        as_role = groups.c.role.is_(None) if role is None else groups.c.role == role
        conditions = [
            groups.c.model_name == model_name,
            groups.c.model_version == version,
            groups.c.created_at > since,
            as_role,
        ]
        with self.engine.connect() as connection:
            found = [
                (
                    group["scores"][row.position],
                    group["labels"][row.position],
                    float(row.true_label),
                    row.created_at,
                )
                for row, group in self._labelled_rows(connection, conditions)
            ]
        return pd.DataFrame(found, columns=["score", "label", "true_label", "created_at"])

    def dispose(self) -> None:
        self.engine.dispose()


class _Segment:
    """One spool file, held under an exclusive ``flock`` for as long as this process owns it.

    The kernel drops the lock when the process dies, however it dies: an unlocked segment is one
    nobody is writing or draining, and any process may adopt it.
    """

    def __init__(self, path: Path, fd: int, kept: list[PredictionGroup] | None) -> None:
        self.path = path
        self.fd = fd
        self.predictions = 0  # in its groups
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

    def read(self) -> Iterator[PredictionGroup]:
        """The groups in the file; a torn last line (a write cut short) is skipped."""
        with self.path.open("rb") as file:
            for number, line in enumerate(file, start=1):
                if not line.endswith(b"\n"):
                    log.warning("%s: line %d is incomplete; skipped", self.path, number)
                    continue
                try:
                    group = PredictionGroup.from_line(line)
                except (orjson.JSONDecodeError, TypeError, KeyError, ValueError) as problem:
                    log.error(
                        "%s: line %d is not a prediction (%s); skipped", self.path, number, problem
                    )
                    continue
                yield group

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        os.close(self.fd)


def _as_row(
    group: Any,
    position: int,
    records: list[dict[str, Any]],
    came: dict[str, tuple[float, datetime]],
) -> dict[str, Any]:
    """The prediction at ``position`` of a group read from SQL, as one row (``came``: labels by
    prediction id)."""
    prediction_id = following_ids(group.id, group.size)[position]
    true_label, feedback_at = came.get(prediction_id, (None, None))
    return {
        "id": prediction_id,
        "created_at": group.created_at,
        "model_name": group.model_name,
        "model_version": group.model_version,
        "features": records[position] if records else {},  # a shadow's are its champion's
        "score": group.scores[position],
        "label": group.labels[position],
        "true_label": true_label,
        "feedback_at": feedback_at,
        "role": group.role,
        "paired_with": group.paired_with[position] if group.paired_with else None,
    }


def _as_time(value: datetime | str) -> datetime:
    """A time read from an untyped column (SQLite gives text)."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _aware(moment: datetime) -> datetime:
    """A time from the log in UTC (SQLite gives it back without its zone)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def spool_key(url: str) -> str:
    """The spool subfolder of the prediction log at ``url`` (a digest: URLs hold passwords)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def spooled_predictions(folder: Path) -> int:
    """Predictions waiting in the spool files anywhere under ``folder``."""
    total = 0
    for path in folder.glob("**/*.jsonl"):
        try:
            lines = path.read_bytes().splitlines()
        except FileNotFoundError:
            continue
        for line in lines:
            try:
                total += orjson.loads(line).get("size", 1)
            except orjson.JSONDecodeError:  # a torn last line
                continue
    return total


class PredictionWriter:
    """Spools predictions to disk before they are answered and drains them into SQL in batches.

    :meth:`submit` appends the groups to this process's spool segment (a line each) with one
    unbuffered ``write()`` (no fsync: the data is in the kernel's page cache, which outlives
    the process) under a lock, and returns. A thread wakes every ``interval_seconds`` (or at once on
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

    def submit(self, *batch: PredictionGroup | Prediction, spool: bool = True) -> None:
        """Spool ``batch`` (a prediction is a group of one); on return it survives this process.
        Never waits for the database: past ``capacity`` waiting predictions, or when the spool
        cannot be written, the batch is dropped and counted.

        ``spool=False`` is for rows no client saw (a shadow's scores): they go into SQL with the
        next batch of the spooled ones, retried the same way, but only from memory, so a killed
        process loses them.
        """
        found = [_as_group(item) for item in batch]
        count = sum(len(group.scores) for group in found)
        data = b"".join(group.line() for group in found) if spool else b""
        with self._lock:
            if self._waiting + count > self.capacity:
                self._drop(count, "the spool is full")
                return
            try:
                written = os.write(self._segment.fd, data) if spool else 0
            except OSError as problem:
                self._drop(count, f"the spool cannot be written ({problem})")
                return
            if written != len(data):  # a full disk: the line is torn, and skipped on replay
                self._drop(count, "the spool's disk is full")
                return
            self._segment.predictions += count
            self._segment.kept.extend(found)  # type: ignore[union-attr]
            self._waiting += count

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
            self.written += segment.predictions
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
            segment.predictions = sum(len(group.scores) for group in segment.read())
            log.warning(
                "replaying %d predictions a stopped process left in %s", segment.predictions, path
            )
            with self._lock:
                self._waiting += segment.predictions
            self._finished.append(segment)
