"""The JSON settings store: atomic, a disk that refuses a write does not stop the gateway, and a
damaged or missing file falls back to the previous copy (real files in tmp_path)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from adapters.storage.settings import JsonSettingsStore


def test_a_failed_write_keeps_the_old_file_and_the_old_sections(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "settings.json"
    store = JsonSettingsStore(path)
    store.save("a", 1)
    (tmp_path / "settings.json.tmp").mkdir()  # the temporary file cannot be written (even as root)
    with caplog.at_level(logging.ERROR):
        store.save("b", 2)
    assert "not saved" in caplog.text
    assert store.load("b") is None
    assert JsonSettingsStore(path).load("a") == 1


def test_data_that_cannot_be_stored_changes_nothing(tmp_path: Path) -> None:
    store = JsonSettingsStore(tmp_path / "settings.json")
    store.save("a", 1)
    with pytest.raises(TypeError):
        store.save("b", object())
    assert store.load("b") is None
    store.save("c", 3)
    assert JsonSettingsStore(tmp_path / "settings.json").load("c") == 3


# -- the previous copy: what a damaged or missing file falls back to --------------------------------

TRANSACTIONS = {"transaction_ids": {"local-1": 41, "local-2": 42}, "open_transactions": ["local-2"]}


def saved(path: Path, *states: dict[str, object]) -> JsonSettingsStore:
    """A store that saved each state in turn (one section per key)."""
    store = JsonSettingsStore(path)
    for state in states:
        for section, data in state.items():
            store.save(section, data)
    return store


def sections(store: JsonSettingsStore, *names: str) -> dict[str, object]:
    return {name: store.load(name) for name in names}


def opened(path: Path, caplog: pytest.LogCaptureFixture) -> tuple[JsonSettingsStore, list[str]]:
    """Open ``path``; the WARNING lines it logged (never a traceback, nothing worse)."""
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        store = JsonSettingsStore(path)
    noted = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in noted)
    return store, [r.getMessage() for r in noted]


def test_each_save_keeps_the_file_it_replaces_as_the_previous_copy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "settings.json"
    (tmp_path / "settings.json.tmp").write_text('{"a": ')  # a first save ever, killed before its rename
    store, warnings = opened(path, caplog)
    assert store.load("a") is None and warnings == []  # nothing had been saved: defaults, no alarm
    saved(path, {"a": 1}, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert json.loads((tmp_path / "settings.json.prev").read_text()) == {"a": 1}
    saved(path, {"b": 3})
    assert json.loads(path.read_text()) == {"a": 2, "b": 3}
    assert json.loads((tmp_path / "settings.json.prev").read_text()) == {"a": 2}
    assert not (tmp_path / "settings.json.tmp").exists()


@pytest.mark.parametrize(
    "garbage",
    [b'{"transaction_ids": {"local-1": 4', b"\xff\xfe\x00 not text", b"[1, 2]", b""],
    ids=["cut short", "not UTF-8", "not an object", "0 bytes"],
)
def test_a_damaged_file_is_read_from_its_previous_copy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, garbage: bytes
) -> None:
    path = tmp_path / "settings.json"
    saved(path, TRANSACTIONS, {"transaction_ids": {"local-1": 41, "local-2": 42, "local-3": 43}})
    path.write_bytes(garbage)

    store, warnings = opened(path, caplog)

    assert sections(store, "transaction_ids", "open_transactions") == TRANSACTIONS  # one save lost, not all
    assert (tmp_path / "settings.json.unreadable").read_bytes() == garbage
    [warning] = warnings
    assert str(path) in warning and f"{path}.prev" in warning and "at most the last save" in warning
    store.save("open_transactions", [])  # the next save keeps the good copy as the previous one
    assert (
        json.loads((tmp_path / "settings.json.prev").read_text())["transaction_ids"] == TRANSACTIONS["transaction_ids"]
    )
    assert opened(path, caplog)[0].load("open_transactions") == []


def test_both_files_damaged_start_from_defaults_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "settings.json"
    saved(path, TRANSACTIONS, {"a": 1})
    path.write_text("{ half")
    (tmp_path / "settings.json.prev").write_text("garbage")

    store, warnings = opened(path, caplog)

    assert sections(store, "transaction_ids", "a") == {"transaction_ids": None, "a": None}
    [warning] = warnings
    assert str(path) in warning and f"{path}.prev" in warning and "defaults" in warning
    assert (tmp_path / "settings.json.unreadable").read_text() == "{ half"
    assert (tmp_path / "settings.json.prev.unreadable").read_text() == "garbage"
    store.save("a", 2)
    assert opened(path, caplog)[0].load("a") == 2


def test_a_damaged_file_without_a_previous_copy_starts_from_defaults_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "settings.json"
    saved(path, {"a": 1})  # the first save: nothing to keep yet
    path.write_bytes(b"\x00")
    store, warnings = opened(path, caplog)
    assert store.load("a") is None
    [warning] = warnings
    assert "no previous copy" in warning and "defaults" in warning


def kill_while_writing_the_temporary(tmp_path: Path) -> None:
    (tmp_path / "settings.json.tmp").write_text('{"a": ')


def kill_between_the_renames(tmp_path: Path) -> None:
    (tmp_path / "settings.json.tmp").write_text('{"a": 3}')
    os.replace(tmp_path / "settings.json", tmp_path / "settings.json.prev")


def kill_after_the_last_rename(tmp_path: Path) -> None:
    os.replace(tmp_path / "settings.json", tmp_path / "settings.json.prev")
    (tmp_path / "settings.json").write_text('{"a": 3}')


@pytest.mark.parametrize(
    ("kill", "expected", "warned"),
    [
        (kill_while_writing_the_temporary, 2, False),
        (kill_between_the_renames, 2, True),  # settings.json missing: its previous copy is read
        (kill_after_the_last_rename, 3, False),
    ],
)
def test_a_save_killed_at_any_step_leaves_the_new_content_or_the_last_good_one(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    kill: Callable[[Path], None],
    expected: int,
    warned: bool,
) -> None:
    """The states save({"a": 3}) passes through after {"a": 1} and {"a": 2} were saved."""
    path = tmp_path / "settings.json"
    saved(path, {"a": 1}, {"a": 2})
    kill(tmp_path)

    store, warnings = opened(path, caplog)

    assert store.load("a") == expected
    assert bool(warnings) == warned
    store.save("b", 4)  # and the gateway goes on from there
    assert sections(opened(path, caplog)[0], "a", "b") == {"a": expected, "b": 4}
    assert json.loads((tmp_path / "settings.json.prev").read_text())["a"] == expected


def test_a_refused_write_leaves_both_files_as_they_were(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    store = saved(path, {"a": 1}, {"a": 2})
    (tmp_path / "settings.json.tmp").mkdir()  # the temporary file cannot be written
    store.save("a", 3)
    assert json.loads(path.read_text()) == {"a": 2}  # not renamed to .prev before the write was safe
    assert json.loads((tmp_path / "settings.json.prev").read_text()) == {"a": 1}
