"""SqliteHistoryStore: the operator's history (sessions, event log, one-minute series) in SQLite.

Why SQLite (the standard library's ``sqlite3``) and not the outbox's line files: the history is
read by query (a month of sessions for one id tag, the last 24 h of one connector), kept for
more than a year and pruned from the old end, which is what a query database does well; the
outbox is a queue read from the head only.

* Durability: WAL with ``synchronous=FULL``, so a commit is on disk when ``write`` returns, and
  each ``write`` is one transaction: a kill -9 leaves every batch whole or absent, never a
  partial row (SQLite's own guarantee, tested in tests/integration/test_history.py).
* Privacy: the file holds full id tags. It lives in ``<state_dir>/history/`` (0700) and is
  created 0600 before SQLite opens it; SQLite gives its ``-wal`` and ``-shm`` files the database's
  mode.
* Damage never stops the gateway: a file SQLite cannot open, that is not a database, that a newer
  version wrote, or that turns out damaged while in use, is renamed aside as
  ``history.<time>.corrupt`` (with its ``-wal``/``-shm``), a fresh one is started, and the
  problem is logged once and reported by ``problems()``. Should even that fail, the store keeps
  nothing (every ``write`` is a no-op) and says so: the history is never worth a charger.
* Schema: versioned with ``PRAGMA user_version`` (docs/history.md shows it); an older file is
  migrated in place, in one transaction, when it is opened.
* Threads: the history service writes from its worker thread through the writing connection
  (behind a lock); the page and the API read from other threads, each through a read-only
  connection of its own (WAL lets readers and the writer go on beside each other): a read of a
  day's series (half a second at 50 connectors) holds up neither a write nor another read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from adapters.storage.atomic import fsync_directory
from adapters.storage.history_rows import (
    MIGRATIONS,
    SCHEMA,
    SCHEMA_VERSION,
    SESSION_COLUMNS,
    apply,
    clause,
    conditions,
    session_record,
)
from adapters.storage.private import make_private_directory, open_private
from gateway.domain.history import (
    EVERYTHING,
    EventRecord,
    HistoryQuery,
    HistoryWrite,
    Retention,
    SeriesRecord,
    SessionRecord,
)
from gateway.domain.model import iso_utc
from gateway.domain.outbox import StoreProblem

log = logging.getLogger(__name__)

FILE_NAME = "history.sqlite3"


class _Damaged(Exception):
    """The file is not a usable history database (the reason is the message)."""


class HistoryUnreadable(Exception):
    """``open_read_only`` found a file it cannot read as a history (the reason is the message)."""


class SqliteHistoryStore:
    """The ``HistoryStore`` port on one SQLite file. Not thread-safe: one call at a time (the
    history service makes them one after the other from worker threads)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / FILE_NAME
        self._problems: list[StoreProblem] = []
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._generation = 0  # counts the files opened: a reader of an older one opens again
        self._readers: threading.local | None = threading.local()
        self._reader_connections: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()  # (not the writer's: a read never waits for a commit)
        self._open_or_start_afresh()

    @classmethod
    def open_read_only(cls, directory: Path) -> SqliteHistoryStore:
        """The history as it is, for a reader beside the gateway (``ocpp-gateway sessions``): never
        creates, migrates or sets aside anything. Raises ``OSError`` as the file's own ``open``
        does (FileNotFoundError, PermissionError), or ``HistoryUnreadable`` with the reason.

        Without a ``-wal`` beside it no connection holds the file (the writer's last close
        removes it), so it is opened immutable and SQLite creates no ``-wal``/``-shm`` for this
        reader either; with one, the gateway runs and SQLite's reader protocol applies."""
        store = cls.__new__(cls)
        store.directory, store.path, store._problems = directory, directory / FILE_NAME, []
        store._db, store._lock, store._readers, store._reader_connections = None, threading.Lock(), None, []
        store._readers_lock = threading.Lock()
        with open(store.path, "rb") as file:  # the plain reasons: no file yet, permission denied
            if file.read(16) != b"SQLite format 3\x00":
                raise HistoryUnreadable("not an SQLite database (damaged?)")
        live = Path(f"{store.path}-wal").exists()
        uri = f"{store.path.absolute().as_uri()}?mode=ro{'' if live else '&immutable=1'}"
        try:
            store._db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
            version = store._db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as exc:
            store.close()
            raise HistoryUnreadable(str(exc)) from None
        if not 1 <= version <= SCHEMA_VERSION:
            store.close()
            newer = f"written by a newer version (schema {version}, this one knows {SCHEMA_VERSION})"
            raise HistoryUnreadable(newer if version > SCHEMA_VERSION else "not a history file (no schema)")
        return store

    # -- opening ----------------------------------------------------------------------------------
    def _open_or_start_afresh(self) -> None:
        try:
            make_private_directory(self.directory)
            self._db = self._open()
            return
        except (_Damaged, sqlite3.DatabaseError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
        self._set_aside(reason)

    def _open(self) -> sqlite3.Connection:
        if not self.path.exists():
            os.close(open_private(self.path, os.O_RDWR | os.O_CREAT))  # 0600 before SQLite sees it
        elif self.path.is_dir():
            raise _Damaged("a folder stands where the history file belongs")
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]  # reads the header: not a db fails here
            if version > SCHEMA_VERSION:
                raise _Damaged(f"written by a newer version (schema {version}, this one knows {SCHEMA_VERSION})")
            if db.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
                raise _Damaged("cannot switch to write-ahead logging")
            db.execute("PRAGMA synchronous=FULL")
            if (problem := db.execute("PRAGMA quick_check(1)").fetchone()[0]) != "ok":
                raise _Damaged(f"damaged ({problem})")
            if version < SCHEMA_VERSION:
                with _transaction(db):
                    statements = filter(str.strip, SCHEMA.split(";")) if version == 0 else MIGRATIONS[version - 1 :]
                    for statement in statements:
                        db.execute(statement)
                    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            db.close()
            raise
        self._generation += 1
        return db

    def _set_aside(self, reason: str) -> None:
        """Move the unusable file (and its WAL) aside and start a fresh one; logged once."""
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = self.directory / f"history.{stamp}.corrupt"
        try:
            if self.path.exists():
                os.replace(self.path, aside)
            for suffix in ("-wal", "-shm"):
                side = Path(f"{self.path}{suffix}")
                if side.exists():
                    os.replace(side, Path(f"{aside}{suffix}"))
            with contextlib.suppress(OSError):
                fsync_directory(self.directory)
            self._db = self._open()
        except (_Damaged, sqlite3.DatabaseError, OSError) as exc:
            self._report(
                f"history file unusable ({reason}), and no fresh one could be started ({exc}): "
                "no history is kept until the gateway restarts; charging and billing go on"
            )
            return
        what = f"history file unusable ({reason}); kept as {aside.name}, a fresh one was started"
        self._report(what if aside.exists() else f"history file unusable ({reason}); a fresh one was started")

    def _report(self, what: str) -> None:
        problem = StoreProblem(what, str(self.path))
        log.warning("%s: %s", problem.path, problem.what)
        self._problems.append(problem)

    def problems(self) -> list[StoreProblem]:
        return list(self._problems)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
        with self._readers_lock:
            for reader in self._reader_connections:
                reader.close()
            self._reader_connections.clear()

    # -- writing ----------------------------------------------------------------------------------
    def write(self, items: Sequence[HistoryWrite]) -> None:
        """All of ``items`` in one transaction (see the port). A file found damaged here is set
        aside and the batch goes into the fresh one; a refusing disk raises ``OSError``."""
        with self._lock:
            self._write_locked(items)

    def _write_locked(self, items: Sequence[HistoryWrite]) -> None:
        if not items or self._db is None:
            return
        try:
            self._write(self._db, items)
        except sqlite3.OperationalError as exc:  # disk full, I/O error, locked: the batch is not kept
            raise OSError(f"history: {exc}") from exc
        except sqlite3.DatabaseError as exc:  # malformed: the file itself is bad
            self._set_aside(str(exc))
            if self._db is not None:
                self._write(self._db, items)

    @staticmethod
    def _write(db: sqlite3.Connection, items: Sequence[HistoryWrite]) -> None:
        with _transaction(db):
            for item in items:
                apply(db, item)

    def prune(self, now: datetime, retention: Retention, limit: int) -> int:
        """Bounded deletes from the old end of each table (see the port)."""
        with self._lock:
            return self._prune_locked(now, retention, limit)

    def _prune_locked(self, now: datetime, retention: Retention, limit: int) -> int:
        if self._db is None:
            return 0
        cutoffs = [
            ("sessions", "rowid", "started_at", retention.sessions_days, "AND stopped_at IS NOT NULL"),
            ("events", "id", "at", retention.events_days, ""),
            ("series", "minute", "minute", retention.series_days, ""),
        ]
        removed = 0
        try:
            with _transaction(self._db):
                for table, key, column, days, condition in cutoffs:
                    before = iso_utc(now - timedelta(days=days))
                    cursor = self._db.execute(
                        f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} "
                        f"WHERE {column} < ? {condition} ORDER BY {column} LIMIT ?)",
                        (before, limit - removed),
                    )
                    removed += max(cursor.rowcount, 0)
                    if removed >= limit:
                        return removed
                # then the caps on rows, oldest first (keys grow with every insert)
                for table, key, cap, condition in (
                    ("events", "id", retention.max_events, ""),
                    ("sessions", "rowid", retention.max_sessions, "AND stopped_at IS NOT NULL"),
                ):
                    cursor = self._db.execute(
                        f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE "
                        f"{key} <= (SELECT max({key}) FROM {table}) - ? {condition} ORDER BY {key} LIMIT ?)",
                        (cap, limit - removed),
                    )
                    removed += max(cursor.rowcount, 0)
                    if removed >= limit:
                        return removed
        except sqlite3.OperationalError as exc:
            raise OSError(f"history: {exc}") from exc
        return removed

    # -- reading ----------------------------------------------------------------------------------
    def sessions(self, query: HistoryQuery = EVERYTHING) -> list[SessionRecord]:
        where, parameters = conditions(query, "started_at")
        if query.id_tag is not None:
            where.append("id_tag = ?")
            parameters.append(query.id_tag)
        rows = self._query(
            f"SELECT {SESSION_COLUMNS} FROM sessions{clause(where)} ORDER BY started_at DESC LIMIT ?",
            (*parameters, query.limit),
        )
        return [session_record(row) for row in rows]

    def events(self, query: HistoryQuery = EVERYTHING) -> list[EventRecord]:
        where, parameters = conditions(query, "at")
        if query.kinds:
            where.append(f"kind IN ({', '.join('?' * len(query.kinds))})")
            parameters.extend(query.kinds)
        rows = self._query(
            f"SELECT at, kind, connector_id, device, detail FROM events{clause(where)} "
            "ORDER BY at DESC, id DESC LIMIT ?",
            (*parameters, query.limit),
        )
        return [EventRecord(at, kind, cid, device, json.loads(detail)) for at, kind, cid, device, detail in rows]

    def series(self, query: HistoryQuery = EVERYTHING) -> list[SeriesRecord]:
        where, parameters = conditions(query, "minute")
        rows = self._query(
            "SELECT minute, connector_id, power_w, energy_wh, status, limit_a FROM "
            f"(SELECT * FROM series{clause(where)} ORDER BY minute DESC, connector_id DESC LIMIT ?) "
            "ORDER BY minute, connector_id",
            (*parameters, query.limit),
        )
        return [SeriesRecord(*row) for row in rows]

    def _query(self, sql: str, parameters: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """Rows of a read; a file that fails here raises ``OSError`` (the reader says it cannot
        read the history now) and is left to the next write to set aside."""
        try:
            if self._readers is None:  # opened read-only: its one connection is for reading
                with self._lock:
                    return [] if self._db is None else self._db.execute(sql, parameters).fetchall()
            reader = self._reader()
            return [] if reader is None else reader.execute(sql, parameters).fetchall()
        except sqlite3.Error as exc:
            raise OSError(f"history: {exc}") from exc

    def _reader(self) -> sqlite3.Connection | None:
        """This thread's read-only connection to the file in use (None: no file is kept)."""
        assert self._readers is not None
        local = self._readers
        with self._readers_lock:
            if self._db is None:
                return None
            if getattr(local, "generation", None) == self._generation:
                return local.db
            if (old := getattr(local, "db", None)) is not None:  # of a file since set aside
                with contextlib.suppress(ValueError):
                    self._reader_connections.remove(old)
                old.close()
            uri = f"{self.path.absolute().as_uri()}?mode=ro"
            local.db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
            local.generation = self._generation
            self._reader_connections.append(local.db)
            return local.db


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE .. COMMIT, or ROLLBACK on any error (autocommit mode: explicit bounds)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
