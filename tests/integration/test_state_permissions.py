"""The state folder holds id tags: its files are 0600 and its folders 0700 whatever the umask,
and what an older version left readable is narrowed once at start."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.storage.atomic import temporary_path, write_atomically
from adapters.storage.outbox_store import SegmentedOutboxStore
from adapters.storage.parked import ParkedMessages
from adapters.storage.private import secure_state_dir
from adapters.storage.settings import JsonSettingsStore
from gateway.app import Gateway
from gateway.config import parse_config
from gateway.domain.outbox import NewRecord, RecordKind


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The umask of a login shell or a container (systemd's unit sets 0077, Docker does not)."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def modes(root: Path) -> dict[str, int]:
    """Every file and folder under ``root`` (itself included) with its permission bits."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def stop(seq: int) -> NewRecord:
    return NewRecord(
        RecordKind.STOP,
        "StopTransaction",
        {"idTag": "04A2B3C4D5E6F7", "meterStop": seq, "timestamp": "2026-01-01T00:00:00Z", "transactionId": seq},
        "2026-01-01T00:00:00Z",
        f"stop-{seq}",
    )


def test_every_state_file_is_0600_in_0700_folders_after_a_gateway_like_sequence(
    tmp_path: Path, umask_022: None
) -> None:
    """Each writer on its own (no ``secure_state_dir`` first): the outbox creates the state folder
    and its own, appends into several segments and delivers the head; settings and the session
    ledger are saved twice (so the previous copies exist too); a stop is parked."""
    state = tmp_path / "state"
    store = SegmentedOutboxStore(state / "outbox", segment_records=2)
    for seq in range(1, 6):
        store.append(stop(seq))
    store.remove([1, 2, 4])  # the head (head.json) and one further in (a segment rewritten)
    settings = JsonSettingsStore(state / "settings.json")
    ledger = JsonSettingsStore(state / "transactions.json")
    for round_ in range(2):
        settings.save("local_list", {"version": round_, "tags": ["04A2B3C4D5E6F7"]})
        ledger.save("transactions", {"1": round_})
    ParkedMessages(state / "outbox-parked.jsonl").add(store.head())  # type: ignore[arg-type]

    found = modes(state)
    expected_files = {
        "settings.json",
        "settings.json.prev",
        "transactions.json",
        "transactions.json.prev",
        "outbox-parked.jsonl",
        "outbox/head.json",
        "outbox/seg-000000000003.json",
        "outbox/seg-000000000005.json",
    }
    assert set(found) == {".", "outbox", *expected_files}  # nothing else, no stray temporary
    assert {name: mode for name, mode in found.items() if name in (".", "outbox")} == {".": 0o700, "outbox": 0o700}
    assert {name: found[name] for name in expected_files} == dict.fromkeys(expected_files, 0o600)


def test_files_are_never_wider_than_0600_even_with_an_empty_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        write_atomically(tmp_path / "x.json", b"{}")
        record = SegmentedOutboxStore(tmp_path / "outbox").append(stop(1))
        ParkedMessages(tmp_path / "new" / "outbox-parked.jsonl").add(record)
    finally:
        os.umask(previous)
    assert modes(tmp_path) == {
        ".": stat.S_IMODE(tmp_path.stat().st_mode),  # (pytest's, not ours)
        "x.json": 0o600,
        "outbox": 0o700,
        "outbox/head.json": 0o600,
        "outbox/seg-000000000001.json": 0o600,
        "new": 0o700,
        "new/outbox-parked.jsonl": 0o600,
    }


def test_a_stray_world_readable_temporary_does_not_make_the_new_file_readable(tmp_path: Path, umask_022: None) -> None:
    """A kill left ``settings.json.tmp`` (0644, from an older version): reusing it keeps its mode
    unless the writer narrows it, and the rename would carry 0644 over the settings."""
    target = tmp_path / "settings.json"
    temporary_path(target).write_bytes(b"half")
    temporary_path(target).chmod(0o644)
    write_atomically(target, b"{}")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def older_version_state(state: Path) -> None:
    """What a version before this one left: the umask's 0755 folders and 0644 files."""
    (state / "outbox").mkdir(parents=True)
    files = {
        "settings.json": "{}",
        "transactions.json": "{}",
        "outbox-parked.jsonl": "",
        "outbox/head.json": '{"floor": 1, "reserved": 51}',
    }
    for name, content in files.items():
        (state / name).write_text(content, encoding="utf-8")
        (state / name).chmod(0o644)
    for folder in (state, state / "outbox"):
        folder.chmod(0o755)


def test_the_gateway_narrows_an_older_versions_state_once_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    older_version_state(state)
    (tmp_path / "elsewhere").write_text("not ours", encoding="utf-8")
    (tmp_path / "elsewhere").chmod(0o644)
    (state / "link").symlink_to(tmp_path / "elsewhere")
    config = parse_config(
        {
            "site": {"id": "perm", "state_dir": str(state)},
            "upstream": {"url": "ws://127.0.0.1:9/ocpp", "charge_point_id": "GW-PERM"},
            "mqtt": {"host": "127.0.0.1"},
        }
    )
    with caplog.at_level(logging.INFO, logger="adapters.storage.private"):
        first = Gateway.build(config)  # (held: its history keeps -wal and -shm open until closed)
    found = modes(state)
    del found["link"]  # (a symbolic link's own mode means nothing)
    assert found == {
        ".": 0o700,
        "outbox": 0o700,
        "settings.json": 0o600,
        "transactions.json": 0o600,
        "outbox-parked.jsonl": 0o600,
        "outbox/head.json": 0o600,
        # the history (new in this version) is created private from the start
        "history": 0o700,
        "history/history.sqlite3": 0o600,
        "history/history.sqlite3-wal": 0o600,
        "history/history.sqlite3-shm": 0o600,
    }
    assert stat.S_IMODE((tmp_path / "elsewhere").stat().st_mode) == 0o644  # a link is not followed
    said = [record.getMessage() for record in caplog.records if record.name == "adapters.storage.private"]
    assert len(said) == 1 and "6 file(s) and folder(s)" in said[0] and str(state) in said[0], said

    assert first.history is not None
    first.history.store.close()  # as the gateway's stop does (not whenever the garbage collector runs)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="adapters.storage.private"):
        second = Gateway.build(config)  # the next start: nothing left to narrow, nothing said
    assert [record for record in caplog.records if record.name == "adapters.storage.private"] == []
    assert second.history is not None
    second.history.store.close()


def test_a_new_state_folder_is_made_0700_at_start(tmp_path: Path, umask_022: None) -> None:
    secure_state_dir(tmp_path / "var" / "state")
    assert stat.S_IMODE((tmp_path / "var" / "state").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "var").stat().st_mode) == 0o700  # made by the gateway: its own too


def test_a_file_gone_between_the_listing_and_its_turn_is_no_refusal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite removes the history's -wal and -shm when its last connection closes, which may fall
    between the folder's listing and the file's turn: that is nothing left readable, not a refusal."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "kept.json").write_text("{}", encoding="utf-8")
    (state / "kept.json").chmod(0o644)
    listing = os.walk

    def walk_with_a_ghost(top: Path) -> Iterator[tuple[str, list[str], list[str]]]:
        for root, directories, files in listing(top):
            yield root, directories, [*files, "history.sqlite3-wal"]  # listed, then gone

    monkeypatch.setattr(os, "walk", walk_with_a_ghost)
    with caplog.at_level(logging.INFO, logger="adapters.storage.private"):
        secure_state_dir(state)
    assert stat.S_IMODE((state / "kept.json").stat().st_mode) == 0o600
    assert [r.levelno for r in caplog.records if r.name == "adapters.storage.private"] == [logging.INFO]
