"""The prediction writer: a spool on disk before the answer, batched transactions, a bounded spool
that drops and counts, no loss while the database recovers, replay of what a dead process left,
and a flush that writes at once. SQLite on disk (the real store); the outage is a database
whose writes are made to fail, since the point is the writer's behaviour around it (the service
tests stop a real PostgreSQL-backed store, and kill the real worker, too)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from driftloop.datasets.transactions import EXAMPLE_RECORD
from driftloop.prediction_log import (
    SQLITE_PAGE_SIZE,
    Prediction,
    PredictionGroup,
    PredictionLog,
    PredictionWriter,
    following_ids,
    group_of,
    prediction_ids,
    spool_key,
    spooled_predictions,
)


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


def test_prediction_ids_are_uuidv7_in_the_order_they_were_made() -> None:
    """Time-ordered ids (RFC 9562 version 7): a later prediction's id sorts after an earlier
    one's, so the log's indexes grow at their right edge."""
    before = time.time_ns() // 1_000_000
    first = prediction_ids(1000)
    time.sleep(0.002)
    later = prediction_ids(3)
    after = time.time_ns() // 1_000_000

    assert len(set(first + later)) == 1003
    for text in first + later:
        made = uuid.UUID(text)
        assert str(made) == text
        assert made.version == 7 and made.variant == uuid.RFC_4122
        assert before <= made.int >> 80 <= after  # the millisecond it was made
    assert max(first) < min(later)


def test_a_burst_of_predictions_is_written_in_a_few_transactions(tmp_path: Path) -> None:
    store = CountingLog(f"sqlite:///{tmp_path / 'log.sqlite'}")
    writer = PredictionWriter(store, tmp_path / "spool", interval_seconds=0.5)
    for _ in range(2000):
        writer.submit(prediction())

    assert writer.flush(10)
    writer.close()
    assert store.count() == 2000 == writer.written
    assert store.transactions <= 3  # batches of up to 1,000, not one per prediction


def test_flush_writes_without_waiting_for_the_interval(tmp_path: Path) -> None:
    store = CountingLog(f"sqlite:///{tmp_path / 'log.sqlite'}")
    writer = PredictionWriter(store, tmp_path / "spool", interval_seconds=30)
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
    writer = PredictionWriter(
        store, tmp_path / "spool", capacity=50, interval_seconds=0.05, on_drop=dropped.append
    )
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


def test_unspooled_rows_wait_out_an_outage_in_memory_and_never_touch_the_spool(
    tmp_path: Path,
) -> None:
    """A shadow's rows (``spool=False``): not on disk, so a killed worker loses them, but a
    database outage does not."""
    store = CountingLog(f"sqlite:///{tmp_path / 'log.sqlite'}")
    store.create()
    store.down = True
    writer = PredictionWriter(store, tmp_path / "spool", interval_seconds=0.05)
    spooled, unspooled = prediction(), [prediction() for _ in range(5)]
    writer.submit(spooled)
    writer.submit(*unspooled, spool=False)

    assert writer.queued == 6
    assert spooled_predictions(tmp_path / "spool") == 1  # only the client's prediction
    assert not writer.flush(0.3)
    store.down = False
    assert writer.flush(15)
    writer.close()
    assert all(store.get(item.id) is not None for item in [spooled, *unspooled])


def test_close_writes_what_is_buffered(tmp_path: Path) -> None:
    store = CountingLog(f"sqlite:///{tmp_path / 'log.sqlite'}")
    writer = PredictionWriter(store, tmp_path / "spool", interval_seconds=60)
    for _ in range(10):
        writer.submit(prediction())
    writer.close()

    assert store.count() == 10


def test_a_submitted_prediction_is_on_disk_before_submit_returns(tmp_path: Path) -> None:
    store = CountingLog(f"sqlite:///{tmp_path / 'log.sqlite'}")
    writer = PredictionWriter(store, tmp_path / "spool", interval_seconds=60)
    writer.submit(prediction(), prediction())

    assert spooled_predictions(tmp_path / "spool") == 2 and store.count() == 0
    writer.close()
    assert spooled_predictions(tmp_path / "spool") == 0 and store.count() == 2


def test_what_a_killed_process_spooled_is_replayed_once_by_the_next(tmp_path: Path) -> None:
    """A child process spools 300 predictions and is killed (SIGKILL) before its writer runs:
    the next writer over the same spool writes all 300, and a second replay writes nothing twice."""
    url = f"sqlite:///{tmp_path / 'log.sqlite'}"
    spool = tmp_path / "spool"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import os, signal, uuid
                from pathlib import Path
                from datetime import UTC, datetime
                from driftloop.prediction_log import Prediction, PredictionLog, PredictionWriter
                log = PredictionLog({url!r})
                writer = PredictionWriter(log, Path({str(spool)!r}), interval_seconds=3600)
                now = datetime.now(UTC)
                for _ in range(300):
                    writer.submit(Prediction(str(uuid.uuid4()), now, "m", "1", {{}}, 0.5, 1))
                print("spooled", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.communicate(timeout=60)[0].strip() == "spooled"
    assert child.returncode == -9
    store = CountingLog(url)
    assert store.count() == 0 and spooled_predictions(spool) == 300

    writer = PredictionWriter(store, spool, interval_seconds=0.05)
    assert writer.flush(10)
    writer.close()

    assert store.count() == 300 and spooled_predictions(spool) == 0


def test_a_living_writers_spool_is_not_taken_over(tmp_path: Path) -> None:
    store = CountingLog(f"sqlite:///{tmp_path / 'log.sqlite'}")
    store.down = True
    first = PredictionWriter(store, tmp_path / "spool", interval_seconds=0.05)
    first.submit(*(prediction() for _ in range(20)))
    second = PredictionWriter(store, tmp_path / "spool", interval_seconds=0.05)

    assert first.queued == 20 and second.queued == 0
    store.down = False
    assert first.flush(10) and second.flush(10)
    first.close()
    second.close()
    assert store.count() == 20


def test_a_replay_after_a_crash_mid_drain_writes_nothing_twice(tmp_path: Path) -> None:
    store = CountingLog(f"sqlite:///{tmp_path / 'log.sqlite'}")
    rows = [prediction() for _ in range(10)]
    store.write(rows[:4])  # drained before the crash, still in the spool file after it

    store.write(rows)

    assert store.count() == 10


def test_a_torn_last_line_is_skipped_and_the_rest_replayed(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    store = CountingLog(f"sqlite:///{tmp_path / 'log.sqlite'}")
    store.down = True
    whole = PredictionWriter(store, spool, interval_seconds=3600)
    whole.submit(prediction(), prediction())
    segment = next(path for path in spool.glob("*/*.jsonl") if path.stat().st_size)
    os.close(whole._segment.fd)  # let go of the file, as a killed process does
    with segment.open("ab") as file:
        file.write(b'{"id": "cut sho')
    store.down = False

    writer = PredictionWriter(store, spool, interval_seconds=0.05)
    assert writer.flush(10)
    writer.close()

    assert store.count() == 2


def test_a_spool_is_replayed_only_into_its_own_database(tmp_path: Path) -> None:
    """Two services sharing DRIFTLOOP_HOME but not their prediction log do not swap spools."""
    spool = tmp_path / "spool"
    down = CountingLog(f"sqlite:///{tmp_path / 'down.sqlite'}")
    down.down = True
    stuck = PredictionWriter(down, spool, interval_seconds=0.05)
    stuck.submit(*(prediction() for _ in range(5)))
    stuck.close(timeout=0.5)  # gives up: its 5 predictions stay in the spool
    other = CountingLog(f"sqlite:///{tmp_path / 'other.sqlite'}")

    writer = PredictionWriter(other, spool, interval_seconds=0.05)
    assert writer.flush(5)
    writer.close()

    assert other.count() == 0 and spooled_predictions(spool) == 5
    down.down = False
    PredictionWriter(down, spool, interval_seconds=0.05).close()
    assert down.count() == 5 and spooled_predictions(spool) == 0


def test_the_window_size_is_what_the_window_reads(tmp_path: Path) -> None:
    log = PredictionLog(f"sqlite:///{tmp_path / 'log.sqlite'}")
    ids = prediction_ids(7)
    now = datetime.now(UTC)
    rows = [Prediction(i, now, "m", "1", dict(EXAMPLE_RECORD), 0.3, 0) for i in ids[:4]]
    rows += [Prediction(ids[4], now, "m", "2", dict(EXAMPLE_RECORD), 0.3, 0)]  # another version
    rows += [  # a shadow's copies are not the version's traffic
        Prediction(i, now, "m", "1", {}, 0.3, 0, role="shadow", paired_with=ids[0]) for i in ids[5:]
    ]
    log.write(rows)
    for asked in (2, 4, 10):
        assert log.window_size("m", "1", asked) == len(log.window("m", "1", asked))
    assert [log.window_size("m", "1", n) for n in (2, 10)] == [2, 4]
    assert log.window_size("m", "3", 10) == 0 and log.window_size("other", "1", 10) == 0


def test_any_id_of_a_call_names_its_first_and_its_position_and_only_in_its_own_spelling() -> None:
    ids = prediction_ids(300)
    first = ids[0][:24] + "0000abc00000"  # a first id with letters in its counting part
    tenth = following_ids(first, 11)[10]

    assert following_ids(ids[0], 300) == ids
    assert [group_of(prediction_id) for prediction_id in ids[:3]] == [
        (ids[0], 0),
        (ids[0], 1),
        (ids[0], 2),
    ]
    assert group_of(ids[299]) == (ids[0], 299)
    assert tenth.endswith("0000abc0000a") and group_of(tenth) == (first, 10)
    # The same number in capitals, another writer's UUID, a name: not ids made here (a label
    # under another spelling would be a second label of the same prediction).
    assert group_of(tenth[:24] + tenth[24:].upper()) is None
    assert group_of(str(uuid.uuid4())) is None and group_of("c1") is None


def test_a_window_larger_than_a_page_of_groups_reads_each_prediction_once(tmp_path: Path) -> None:
    """A window reads groups newest first a page (5,000) at a time: one of 7,000 single-record
    groups, some sharing a time, is every prediction once, oldest first."""
    log = PredictionLog(f"sqlite:///{tmp_path / 'log.sqlite'}")
    start = datetime.now(UTC)
    ids = sorted(prediction_ids(1)[0] for _ in range(7_000))  # a time shared: by id
    log.write(
        [
            Prediction(i, start + timedelta(milliseconds=n // 3), "m", "1", {"x": n}, 0.5, 0)
            for n, i in enumerate(ids)
        ]
    )

    window = log.window("m", "1", 6_500)

    assert window["x"].tolist() == list(range(500, 7_000))
    assert window["prediction_id"].is_unique and log.window_size("m", "1", 6_500) == 6_500


def test_a_spool_an_older_driftloop_left_is_replayed_and_a_request_is_one_line(
    tmp_path: Path,
) -> None:
    """A spool line was one prediction before groups: a worker killed before an upgrade left
    such lines, and the upgraded writer replays them. A request of many records is one line
    now, its records as the client sent them (newlines in the body kept off the line)."""
    url = f"sqlite:///{tmp_path / 'log.sqlite'}"
    spool = tmp_path / "spool"
    folder = spool / spool_key(url)
    folder.mkdir(parents=True)
    old = [prediction() for _ in range(3)]
    (folder / "4242-older.jsonl").write_bytes(
        b"".join(orjson.dumps(p.__dict__, option=orjson.OPT_APPEND_NEWLINE) for p in old)
    )
    ids = prediction_ids(4)
    sent = json.dumps([dict(EXAMPLE_RECORD)] * 4, indent=2).encode()
    store = CountingLog(url)

    writer = PredictionWriter(store, spool, interval_seconds=60)
    writer.submit(PredictionGroup(ids[0], datetime.now(UTC), "m", "1", sent, [0.1] * 4, [0] * 4))
    lines = [path.read_bytes() for path in folder.glob("*.jsonl") if "older" not in path.name]
    assert [content.count(b"\n") for content in lines] == [1]
    assert spooled_predictions(spool) == 3 + 4
    writer.close()

    assert store.count() == 7 and spooled_predictions(spool) == 0
    assert store.get(old[1].id)["features"] == dict(EXAMPLE_RECORD)  # type: ignore[index]
    assert store.get(ids[3])["features"] == dict(EXAMPLE_RECORD)  # type: ignore[index]


def test_a_new_log_has_large_pages_and_an_older_log_keeps_its_own(tmp_path: Path) -> None:
    """A new SQLite log stores a request of 100 records in about one page; a log an older
    driftloop made (4 KB pages, WAL) is opened as it is and takes the same requests."""
    import sqlite3

    older = tmp_path / "older.sqlite"
    with sqlite3.connect(older) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
    body = orjson.dumps([EXAMPLE_RECORD] * 100)
    for path, pages in ((tmp_path / "new.sqlite", SQLITE_PAGE_SIZE), (older, 4096)):
        log = PredictionLog(f"sqlite:///{path}")
        ids = prediction_ids(100)
        now = datetime.now(UTC)
        log.write([PredictionGroup(ids[0], now, "m", "1", body, [0.5] * 100, [1] * 100)])
        with sqlite3.connect(path) as connection:
            assert connection.execute("PRAGMA page_size").fetchone()[0] == pages
        assert log.get(ids[99])["features"] == EXAMPLE_RECORD
        log.engine.dispose()
