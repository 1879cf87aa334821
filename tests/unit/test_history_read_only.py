"""``SqliteHistoryStore.open_read_only``: the history as it is, for a reader beside the gateway;
nothing created, migrated or set aside."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.storage.history_db import FILE_NAME, HistoryUnreadable, SqliteHistoryStore
from gateway.domain.history import SessionStarted

T0 = datetime(2026, 3, 1, 8, tzinfo=UTC)


def test_a_missing_history_raises_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        SqliteHistoryStore.open_read_only(tmp_path / "state" / "history")
    assert list(tmp_path.iterdir()) == []


def test_an_older_file_is_read_as_it_is_never_migrated(tmp_path: Path) -> None:
    store = SqliteHistoryStore(tmp_path)
    store.write([SessionStarted("a", 1, "left", "04A1B2C3D4E5F6", T0, 1_000)])
    store.close()
    with sqlite3.connect(tmp_path / FILE_NAME) as db:
        db.execute("PRAGMA user_version=1")  # as the first release wrote it (its sessions are the same)
    db.close()
    reader = SqliteHistoryStore.open_read_only(tmp_path)
    try:
        assert [s.local_ref for s in reader.sessions()] == ["a"]
        assert reader.problems() == []
    finally:
        reader.close()
    with sqlite3.connect(tmp_path / FILE_NAME) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    db.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILE_NAME]


def test_it_cannot_write(tmp_path: Path) -> None:
    SqliteHistoryStore(tmp_path).close()
    reader = SqliteHistoryStore.open_read_only(tmp_path)
    try:
        with pytest.raises(OSError, match="readonly"):
            reader.write([SessionStarted("a", 1, "left", "04A1B2C3D4E5F6", T0, 1_000)])
    finally:
        reader.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILE_NAME]


def test_a_newer_file_is_refused_with_the_reason(tmp_path: Path) -> None:
    SqliteHistoryStore(tmp_path).close()
    with sqlite3.connect(tmp_path / FILE_NAME) as db:
        db.execute("PRAGMA user_version=7")
    db.close()
    with pytest.raises(HistoryUnreadable, match=r"written by a newer version \(schema 7, this one knows 2\)"):
        SqliteHistoryStore.open_read_only(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILE_NAME]  # not set aside
