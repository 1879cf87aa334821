"""SqliteHistoryStore on a temporary folder: rows, permissions, retention, damage set aside."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.storage.history_db import FILE_NAME, SCHEMA_VERSION, SqliteHistoryStore
from gateway.domain.history import (
    DeliveryState,
    EventKind,
    HistoryEvent,
    HistoryQuery,
    Retention,
    SeriesSample,
    SessionDelivery,
    SessionNumbered,
    SessionStarted,
    SessionStopped,
)
from gateway.domain.model import iso_utc

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
TAG = "04A1B2C3D4E5F6"


def started(ref: str = "c1-a", at: datetime = T0, meter_wh: int = 1_000) -> SessionStarted:
    return SessionStarted(ref, 1, "left", TAG, at, meter_wh)


def stopped(ref: str = "c1-a", at: datetime = T0 + timedelta(hours=1), meter_wh: int = 8_400) -> SessionStopped:
    return SessionStopped(ref, 1, "left", TAG, at, meter_wh, "ev_disconnected", 7_400.0)


def test_a_session_is_one_row_completed_at_its_stop(tmp_path: Path) -> None:
    store = SqliteHistoryStore(tmp_path / "history")
    store.write([started()])
    (running,) = store.sessions()
    assert (running.stopped_at, running.delivery, running.energy_wh) == (None, None, None)
    store.write([SessionNumbered("c1-a", 77), stopped()])
    (row,) = store.sessions()
    assert (row.meter_start_wh, row.meter_stop_wh, row.energy_wh) == (1_000, 8_400, 7_400)
    assert (row.started_at, row.stopped_at, row.duration_s) == (
        "2026-03-01T08:00:00.000Z",
        "2026-03-01T09:00:00.000Z",
        3600,
    )
    assert (row.csms_transaction_id, row.delivery, row.stop_reason, row.peak_power_w) == (
        77,
        DeliveryState.QUEUED,
        "ev_disconnected",
        7_400.0,
    )
    assert row.id_tag == TAG and row.masked_id_tag == "****E5F6"
    assert TAG not in repr(row)
    store.write([SessionDelivery("c1-a", DeliveryState.DELIVERED)])
    assert store.sessions()[0].delivery is DeliveryState.DELIVERED


def test_a_delivery_seen_before_the_stop_is_not_undone_by_it(tmp_path: Path) -> None:
    """The outbox may report a delivery before the history has taken the stop event."""
    store = SqliteHistoryStore(tmp_path / "history")
    store.write([started(), SessionDelivery("c1-a", DeliveryState.DELIVERED), stopped()])
    assert store.sessions()[0].delivery is DeliveryState.DELIVERED
    store.write([SessionDelivery("c1-a", DeliveryState.PARKED), SessionDelivery("c1-a", DeliveryState.DELIVERED)])
    assert store.sessions()[0].delivery is DeliveryState.PARKED  # a parked end stays visible


def test_a_stop_without_its_start_still_makes_a_row(tmp_path: Path) -> None:
    store = SqliteHistoryStore(tmp_path / "history")
    store.write([stopped()])
    (row,) = store.sessions()
    assert (row.meter_stop_wh, row.meter_start_wh, row.energy_wh) == (8_400, None, None)


def test_events_and_series_read_back(tmp_path: Path) -> None:
    store = SqliteHistoryStore(tmp_path / "history")
    detail = {"kind": "over_temperature", "vendor_code": "13", "duration_s": 30.0}
    store.write(
        [
            HistoryEvent(T0, EventKind.FAULT_CLEARED, 2, "right", detail),
            SeriesSample(T0, 1, 7_400.0, 1_000, "charging"),
            SeriesSample(T0, 1, 7_300.0, 1_010, "charging"),  # the same minute again replaces it
            SeriesSample(T0 + timedelta(minutes=1), 0, 9_000.0, 5_000, None),
        ]
    )
    (event,) = store.events()
    assert (event.kind, event.connector_id, event.device, event.detail) == ("fault_cleared", 2, "right", detail)
    series = store.series(HistoryQuery(since=T0))
    assert [(s.connector_id, s.power_w) for s in series] == [(1, 7_300.0), (0, 9_000.0)]
    assert store.series(HistoryQuery(since=T0 + timedelta(minutes=1)))[0].connector_id == 0


def test_the_file_is_private_and_versioned(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = SqliteHistoryStore(tmp_path / "history")
        store.write([started()])
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "history").stat().st_mode) == 0o700
    for path in (tmp_path / "history").iterdir():  # the database and its -wal / -shm
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    store.close()
    with sqlite3.connect(tmp_path / "history" / FILE_NAME) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_failed_batch_leaves_nothing_of_itself(tmp_path: Path) -> None:
    store = SqliteHistoryStore(tmp_path / "history")
    bad = HistoryEvent(T0, EventKind.CSMS_UP, detail={"not json": object()})
    with pytest.raises(TypeError):
        store.write([started(), bad])
    assert store.sessions() == []
    store.write([started()])  # and the store goes on
    assert len(store.sessions()) == 1


def test_retention_prunes_old_rows_in_bounded_steps(tmp_path: Path) -> None:
    store = SqliteHistoryStore(tmp_path / "history")
    now = T0 + timedelta(days=500)
    old = [x for i in range(5) for x in (started(f"old-{i}", T0), stopped(f"old-{i}", T0 + timedelta(hours=1)))]
    store.write(
        [
            *old,
            started("running-since-long", T0),  # never stopped: not pruned (its bill is not settled)
            started("recent", now - timedelta(days=10)),
            HistoryEvent(T0, EventKind.CSMS_DOWN),
            HistoryEvent(now, EventKind.CSMS_UP),
            SeriesSample(now - timedelta(days=8), 1, 1.0, 1, "charging"),
            SeriesSample(now - timedelta(days=6), 1, 2.0, 2, "charging"),
        ]
    )
    retention = Retention(sessions_days=400, events_days=400)
    assert store.prune(now, retention, limit=3) == 3  # bounded
    while store.prune(now, retention, limit=3) == 3:
        pass
    assert sorted(s.local_ref for s in store.sessions()) == ["recent", "running-since-long"]
    assert [e.kind for e in store.events()] == ["csms_up"]
    assert [s.power_w for s in store.series(HistoryQuery(since=T0))] == [2.0]


def test_a_file_that_is_not_a_database_is_set_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "history"
    folder.mkdir()
    (folder / FILE_NAME).write_bytes(b"this is no sqlite file, just garbage " * 200)
    with caplog.at_level(logging.WARNING):
        store = SqliteHistoryStore(folder)
    (problem,) = store.problems()
    assert "kept as history." in problem.what and problem.what.endswith("a fresh one was started")
    assert [p.name for p in folder.glob("*.corrupt")] and len(caplog.records) == 1
    store.write([started()])
    assert len(store.sessions()) == 1


def test_a_file_of_a_newer_version_is_set_aside_not_changed(tmp_path: Path) -> None:
    folder = tmp_path / "history"
    folder.mkdir()
    with sqlite3.connect(folder / FILE_NAME) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    store = SqliteHistoryStore(folder)
    assert "newer version" in store.problems()[0].what
    (aside,) = folder.glob("*.corrupt")
    with sqlite3.connect(aside) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


def test_a_store_that_cannot_start_keeps_nothing_and_raises_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "history"
    blocker.write_text("a file where the folder belongs")
    store = SqliteHistoryStore(blocker)
    assert "no history is kept" in store.problems()[0].what
    store.write([started()])
    assert store.sessions() == [] and store.prune(T0, Retention(), 10) == 0


def test_damage_found_while_in_use_sets_the_file_aside_and_keeps_the_batch(tmp_path: Path) -> None:
    folder = tmp_path / "history"
    store = SqliteHistoryStore(folder)
    store.write([started("before")])
    store.close()  # (checkpoints the WAL into the file)
    path = folder / FILE_NAME
    store = SqliteHistoryStore(folder)  # opened while the file is fine
    assert store._db is not None
    store._db.execute("PRAGMA cache_size=0")
    with open(path, "r+b") as raw:  # then every page after the first is overwritten
        size = os.fstat(raw.fileno()).st_size
        assert size > 4096
        raw.seek(4096)
        raw.write(b"\xff" * (size - 4096))
    store.write([started("after")])
    assert [s.local_ref for s in store.sessions()] == ["after"]
    (problem,) = store.problems()
    assert "kept as" in problem.what and "malformed" in problem.what


def test_damage_found_at_start_sets_the_file_aside(tmp_path: Path) -> None:
    """A header that still reads but pages that do not (a power cut on a card that lies about
    fsync): the check at opening finds it."""
    folder = tmp_path / "history"
    store = SqliteHistoryStore(folder)
    store.write([started(f"s{i}") for i in range(200)])
    store.close()
    path = folder / FILE_NAME
    with open(path, "r+b") as raw:
        raw.seek(4096)
        raw.write(os.urandom(8192))
    store = SqliteHistoryStore(folder)
    assert len(store.problems()) == 1 and "kept as" in store.problems()[0].what
    assert store.sessions() == []
    assert len(list(folder.glob("history.*.corrupt"))) == 1


def test_reads_filter_by_time_connector_id_tag_and_kind(tmp_path: Path) -> None:
    store = SqliteHistoryStore(tmp_path / "history")
    store.write(
        [
            SessionStarted("a", 1, "left", TAG, T0, 0),
            SessionStarted("b", 2, "right", "OTHER-CARD-42", T0 + timedelta(hours=1), 0),
            SessionStarted("c", 1, "left", TAG, T0 + timedelta(hours=2), 0),
            HistoryEvent(T0, EventKind.CSMS_DOWN),
            HistoryEvent(T0 + timedelta(hours=1), EventKind.FAULT_RAISED, 2, "right"),
            HistoryEvent(T0 + timedelta(hours=2), EventKind.CSMS_UP),
            *[SeriesSample(T0 + timedelta(minutes=m), c, m, m, "charging", 16.0) for m in range(5) for c in (0, 1)],
        ]
    )
    refs = lambda query: [s.local_ref for s in store.sessions(query)]  # noqa: E731
    assert refs(HistoryQuery()) == ["c", "b", "a"]  # newest first
    assert refs(HistoryQuery(since=T0 + timedelta(hours=1))) == ["c", "b"]  # since: inclusive
    assert refs(HistoryQuery(until=T0 + timedelta(hours=1))) == ["a"]  # until: exclusive
    assert refs(HistoryQuery(connector_id=1)) == ["c", "a"]
    assert refs(HistoryQuery(id_tag="OTHER-CARD-42")) == ["b"]
    assert refs(HistoryQuery(id_tag="****E5F6")) == []  # the full tag only: a mask finds nothing
    assert refs(HistoryQuery(limit=1)) == ["c"]
    kinds = lambda query: [e.kind for e in store.events(query)]  # noqa: E731
    assert kinds(HistoryQuery(kinds=("csms_down", "csms_up"))) == ["csms_up", "csms_down"]
    assert kinds(HistoryQuery(connector_id=2)) == ["fault_raised"]
    series = store.series(HistoryQuery(connector_id=1, since=T0 + timedelta(minutes=1), limit=3))
    assert [(s.minute[14:16], s.power_w, s.limit_a) for s in series] == [  # the newest 3, oldest first
        ("02", 2.0, 16.0),
        ("03", 3.0, 16.0),
        ("04", 4.0, 16.0),
    ]
    with pytest.raises(ValueError, match="limit"):
        HistoryQuery(limit=0)


def test_a_file_of_schema_1_is_migrated_in_place(tmp_path: Path) -> None:
    """The first slice wrote schema 1 (series without limit_a): its rows stay, the column comes."""
    folder = tmp_path / "history"
    folder.mkdir()
    with sqlite3.connect(folder / FILE_NAME) as db:
        db.executescript(
            "CREATE TABLE sessions (local_ref TEXT PRIMARY KEY, connector_id INTEGER NOT NULL, device TEXT NOT NULL,"
            " id_tag TEXT NOT NULL, started_at TEXT, stopped_at TEXT, meter_start_wh INTEGER, meter_stop_wh INTEGER,"
            " energy_wh INTEGER, peak_power_w REAL, stop_reason TEXT, csms_transaction_id INTEGER, delivery TEXT);"
            "CREATE TABLE events (id INTEGER PRIMARY KEY, at TEXT NOT NULL, kind TEXT NOT NULL, connector_id INTEGER,"
            " device TEXT, detail TEXT NOT NULL);"
            "CREATE TABLE series (minute TEXT NOT NULL, connector_id INTEGER NOT NULL, power_w REAL,"
            " energy_wh INTEGER, status TEXT, PRIMARY KEY (minute, connector_id)) WITHOUT ROWID;"
            "INSERT INTO series VALUES ('2026-03-01T08:00:00.000Z', 1, 11.0, 5, 'charging');"
            "PRAGMA user_version=1;"
        )
    store = SqliteHistoryStore(folder)
    assert store.problems() == []
    store.write([SeriesSample(T0 + timedelta(minutes=1), 1, 12.0, 6, "charging", 10.0)])
    assert [(s.power_w, s.limit_a) for s in store.series()] == [(11.0, None), (12.0, 10.0)]
    store.close()
    with sqlite3.connect(folder / FILE_NAME) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2


def test_a_read_does_not_wait_for_a_write_in_flight(tmp_path: Path) -> None:
    """Each reading thread has a read-only connection of its own (WAL): a page's read of a day's
    series must not wait for the writer's fsync, nor hold it up."""
    store = SqliteHistoryStore(tmp_path / "history")
    store.write([started()])
    with store._lock, ThreadPoolExecutor(max_workers=2) as pool:  # as a write holds it
        reads = [pool.submit(store.sessions) for _ in range(4)]
        assert [len(read.result(timeout=5)) for read in reads] == [1] * 4
    assert 1 <= len(store._reader_connections) <= 2  # one per thread, kept
    store.close()
    assert store._reader_connections == [] and store.sessions() == []


def test_a_reader_follows_the_file_when_a_damaged_one_is_set_aside(tmp_path: Path) -> None:
    folder = tmp_path / "history"
    store = SqliteHistoryStore(folder)
    store.write([started("before")])
    assert [s.local_ref for s in store.sessions()] == ["before"]  # this thread's reader, on the first file
    store._set_aside("a test says so")
    store.write([started("after")])
    assert [s.local_ref for s in store.sessions()] == ["after"]  # on the fresh one
    assert len(store._reader_connections) == 1  # the old reader was closed


def test_rows_beyond_the_caps_are_pruned_oldest_first(tmp_path: Path) -> None:
    """A charger that flaps a fault every poll must not fill the disk within the retention days."""
    store = SqliteHistoryStore(tmp_path / "history")
    store.write([HistoryEvent(T0 + timedelta(seconds=i), EventKind.FAULT_RAISED, 1, "left") for i in range(50)])
    store.write([x for i in range(6) for x in (started(f"s{i}", T0 + timedelta(hours=i)), stopped(f"s{i}"))])
    store.write([started("running", T0 - timedelta(hours=1))])  # the oldest, but running: kept
    capped = Retention(max_events=20, max_sessions=3)
    while store.prune(T0, capped, limit=7) == 7:  # (bounded steps, as the service calls it)
        pass
    events = store.events(HistoryQuery(limit=100))
    assert len(events) == 20 and events[-1].at == iso_utc(T0 + timedelta(seconds=30))  # the newest 20
    assert sorted(s.local_ref for s in store.sessions()) == ["running", "s4", "s5"]
    assert store.prune(T0, capped, limit=7) == 0
