"""The segmented outbox store on a real disk: order, durability across reopening, corrupt files."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from adapters.storage.outbox_store import SegmentedOutboxStore
from gateway.domain.outbox import NewRecord, OutboxRecord, RecordKind


def new(n: int, kind: RecordKind = RecordKind.SAMPLED) -> NewRecord:
    payload = {"connectorId": 1, "meterValue": [{"sampledValue": [{"value": str(1000 + n)}]}]}
    return NewRecord(kind, "MeterValues", payload, f"2026-11-29T12:{n // 60:02d}:{n % 60:02d}Z", f"tx{n % 3}")


def fill(store: SegmentedOutboxStore, count: int) -> list[OutboxRecord]:
    return [store.append(new(n)) for n in range(count)]


def seqs(store: SegmentedOutboxStore) -> list[int]:
    return [info.seq for info in store.index()]


def drain(store: SegmentedOutboxStore) -> list[OutboxRecord]:
    """Every record, in the order the store hands them out (and the store left empty)."""
    out = []
    while (head := store.head()) is not None:
        out.append(head)
        store.remove([head.seq])
    return out


def segment_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("seg-") and p.name.endswith(".json"))


def test_records_come_out_in_order_and_survive_reopening(tmp_path: Path) -> None:
    store = SegmentedOutboxStore(tmp_path, segment_records=4)
    appended = fill(store, 10)
    assert [r.seq for r in appended] == list(range(1, 11))
    assert store.head() == appended[0]
    assert len(store) == 10
    assert [(i.seq, i.kind, i.created_at, i.local_ref) for i in store.index()] == [
        (r.seq, r.kind, r.created_at, r.local_ref) for r in appended
    ]

    reopened = SegmentedOutboxStore(tmp_path, segment_records=4)
    assert reopened.problems() == []
    assert reopened.index() == store.index()
    assert drain(reopened) == appended


def test_a_returned_record_is_a_copy(tmp_path: Path) -> None:
    store = SegmentedOutboxStore(tmp_path)
    record = new(1)
    stored = store.append(record)
    record.payload["connectorId"] = 99
    stored.payload["connectorId"] = 98
    head = store.head()
    assert head is not None and head.payload["connectorId"] == 1
    head.payload["connectorId"] = 97
    assert SegmentedOutboxStore(tmp_path).head() == store.head()


def test_seqs_increase_across_reopening_also_after_the_tail_was_removed_or_the_store_emptied(tmp_path: Path) -> None:
    store = SegmentedOutboxStore(tmp_path, segment_records=4)
    fill(store, 6)
    store.remove([5, 6])  # the tail, thinned
    store = SegmentedOutboxStore(tmp_path, segment_records=4)
    seventh = store.append(new(7)).seq
    assert seventh > 6
    store.remove(seqs(store))  # emptied
    assert len(store) == 0 and store.head() is None
    store = SegmentedOutboxStore(tmp_path, segment_records=4)
    assert len(store) == 0
    after = store.append(new(8)).seq
    assert after > seventh
    store = SegmentedOutboxStore(tmp_path, segment_records=10)  # another segment size
    assert store.append(new(9)).seq > after
    assert seqs(store) == sorted(seqs(store))


def test_remove_head_and_middle(tmp_path: Path) -> None:
    store = SegmentedOutboxStore(tmp_path, segment_records=4)
    fill(store, 12)
    store.remove([1])
    store.remove([5, 6, 11, 99])  # 99 was never queued: ignored
    store.remove([5])  # twice: harmless
    expected = [2, 3, 4, 7, 8, 9, 10, 12]
    assert seqs(store) == expected
    head = store.head()
    assert head is not None and head.seq == 2
    store.remove([2, 3, 8])  # the head and some of the middle at once
    assert seqs(store) == [4, 7, 9, 10, 12]
    reopened = SegmentedOutboxStore(tmp_path, segment_records=4)
    assert seqs(reopened) == [4, 7, 9, 10, 12]
    assert [r.seq for r in drain(reopened)] == [4, 7, 9, 10, 12]


def test_attempts_persist_across_reopening(tmp_path: Path) -> None:
    store = SegmentedOutboxStore(tmp_path, segment_records=4)
    fill(store, 6)
    store.set_attempts(1, 3)
    store.set_attempts(5, 1)
    head = store.head()
    assert head is not None and head.attempts == 3
    reopened = SegmentedOutboxStore(tmp_path, segment_records=4)
    assert {r.seq: r.attempts for r in drain(reopened)} == {1: 3, 2: 0, 3: 0, 4: 0, 5: 1, 6: 0}
    with pytest.raises(KeyError):
        reopened.set_attempts(1, 1)
    reopened.append(new(1))
    with pytest.raises(ValueError):
        reopened.set_attempts(seqs(reopened)[0], -1)


def test_size_is_what_the_files_take_and_follows_removals(tmp_path: Path) -> None:
    store = SegmentedOutboxStore(tmp_path, segment_records=5)
    assert store.size_bytes() == 0
    fill(store, 20)

    def on_disk() -> int:
        return sum(p.stat().st_size for p in tmp_path.iterdir())

    assert store.size_bytes() == on_disk()
    full = store.size_bytes()
    assert sum(i.size_bytes for i in store.index()) == pytest.approx(full, rel=0.05)
    middle = store.index()[7:12]
    store.remove(i.seq for i in middle)
    assert store.size_bytes() == on_disk()
    assert full - store.size_bytes() == pytest.approx(sum(i.size_bytes for i in middle), abs=5)
    store.remove(seqs(store)[:6])  # the head: the segments it emptied are deleted
    assert store.size_bytes() == on_disk()
    assert SegmentedOutboxStore(tmp_path, segment_records=5).size_bytes() == on_disk()


def test_a_segment_file_goes_once_its_records_are_gone(tmp_path: Path) -> None:
    store = SegmentedOutboxStore(tmp_path, segment_records=3)
    fill(store, 9)
    assert segment_files(tmp_path) == ["seg-000000000001.json", "seg-000000000004.json", "seg-000000000007.json"]
    store.remove([1, 2])
    assert len(segment_files(tmp_path)) == 3  # the head moved inside the first segment: head.json only
    store.remove([3])
    assert segment_files(tmp_path) == ["seg-000000000004.json", "seg-000000000007.json"]
    store.remove([7, 8, 9])  # thinned: the whole tail segment
    assert segment_files(tmp_path) == ["seg-000000000004.json"]
    assert store.append(new(10)).seq == 10
    assert segment_files(tmp_path) == ["seg-000000000004.json", "seg-000000000010.json"]
    store.remove(seqs(store))
    assert segment_files(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head.json"]


def test_damaged_segments_are_kept_aside_what_still_reads_is_kept_and_replayed_in_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SegmentedOutboxStore(tmp_path, segment_records=3)
    fill(store, 15)  # segments 1, 4, 7, 10, 13
    truncated = tmp_path / "seg-000000000004.json"
    truncated.write_bytes(truncated.read_bytes()[:100])  # cut inside its first record
    (tmp_path / "seg-000000000007.json").write_bytes(b"\x00\x17 garbage \xff")
    bad_record = tmp_path / "seg-000000000010.json"  # valid JSON, a record of an unknown kind
    original_10 = bad_record.read_text().replace('"sampled"', '"weird"', 1)
    bad_record.write_text(original_10)
    (tmp_path / "seg-000000000016.json.tmp").write_text('{"records": {"16"')  # a kill mid-append
    (tmp_path / "head.json.tmp").write_text("{")

    with caplog.at_level(logging.WARNING):
        reopened = SegmentedOutboxStore(tmp_path, segment_records=3)

    assert seqs(reopened) == [1, 2, 3, 11, 12, 13, 14, 15]  # only record 10 of segment 10 is lost
    problems = {Path(p.path).name: p for p in reopened.problems()}
    assert set(problems) == {"seg-000000000004.json", "seg-000000000007.json", "seg-000000000010.json"}
    assert problems["seg-000000000010.json"].records_lost == 1
    assert "2 records salvaged, 1 lost" in problems["seg-000000000010.json"].what
    assert problems["seg-000000000004.json"].records_lost is None  # cannot be told from part of a file
    assert all("seg-" in p.what and ".corrupt" in p.what for p in problems.values())
    for name in problems:
        assert (tmp_path / f"{name}.corrupt").exists()
    assert not (tmp_path / "seg-000000000004.json").exists()  # nothing could be read: moved aside
    assert not (tmp_path / "seg-000000000007.json").exists()
    assert (tmp_path / "seg-000000000010.json.corrupt").read_text() == original_10  # the damaged file, as found
    assert not list(tmp_path.glob("*.tmp"))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert not any(r.exc_info for r in warnings)

    assert reopened.append(new(16)).seq > 15
    again = SegmentedOutboxStore(tmp_path, segment_records=3)
    assert again.problems() == []  # salvaged once, not reported again
    assert [r.seq for r in drain(again)] == [1, 2, 3, 11, 12, 13, 14, 15, seqs(reopened)[-1]]


def test_an_unreadable_head_file_is_set_aside_and_nothing_queued_is_lost(tmp_path: Path) -> None:
    store = SegmentedOutboxStore(tmp_path, segment_records=3)
    fill(store, 5)
    store.remove([1])
    (tmp_path / "head.json").write_text("[]")
    reopened = SegmentedOutboxStore(tmp_path, segment_records=3)
    assert [Path(p.path).name for p in reopened.problems()] == ["head.json"]
    assert seqs(reopened)[-4:] == [2, 3, 4, 5]  # the delivered one may come back; no queued one is lost
    assert reopened.append(new(6)).seq > 5


def test_a_missing_head_file_is_reported(tmp_path: Path) -> None:
    store = SegmentedOutboxStore(tmp_path, segment_records=3)
    fill(store, 2)
    (tmp_path / "head.json").unlink()
    reopened = SegmentedOutboxStore(tmp_path, segment_records=3)
    assert [("missing" in p.what, Path(p.path).name) for p in reopened.problems()] == [(True, "head.json")]
    assert seqs(reopened) == [1, 2]
    assert SegmentedOutboxStore(tmp_path / "fresh").problems() == []  # a new store has none yet: no problem


def test_a_write_the_disk_refuses_raises_and_changes_nothing(tmp_path: Path) -> None:
    store = SegmentedOutboxStore(tmp_path, segment_records=3)
    fill(store, 2)
    before = (store.index(), store.size_bytes())
    blocker = tmp_path / "seg-000000000001.json.tmp"
    blocker.mkdir()  # the temporary file cannot be written (even as root), as on a full disk
    with pytest.raises(OSError):
        store.append(new(3))
    with pytest.raises(OSError):
        store.remove([2])  # thinning rewrites the same segment
    with pytest.raises(OSError):
        store.set_attempts(1, 1)
    assert (store.index(), store.size_bytes()) == before
    head = store.head()
    assert head is not None and head.attempts == 0
    blocker.rmdir()

    (tmp_path / "head.json.tmp").mkdir()
    with pytest.raises(OSError):
        store.remove([1])  # delivering the head writes head.json
    assert seqs(store) == [1, 2]
    (tmp_path / "head.json.tmp").rmdir()

    third = store.append(new(3))
    assert third.seq > 2  # a seq whose write failed is not handed out again
    assert seqs(store) == [1, 2, third.seq]
    assert SegmentedOutboxStore(tmp_path, segment_records=3).index() == store.index()


def test_a_failure_after_the_rename_leaves_memory_as_the_disk_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SegmentedOutboxStore(tmp_path, segment_records=3)
    fill(store, 2)
    real_fsync = os.fsync

    def directory_fsync_fails(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", directory_fsync_fails)
    with pytest.raises(OSError):
        store.append(new(3))  # the new segment replaced the old one, then the directory fsync failed
    monkeypatch.undo()
    assert seqs(store) == [1, 2, 3]
    assert SegmentedOutboxStore(tmp_path, segment_records=3).index() == store.index()


def test_a_record_that_would_not_read_back_is_refused(tmp_path: Path) -> None:
    store = SegmentedOutboxStore(tmp_path)
    with pytest.raises(TypeError):
        store.append(NewRecord(RecordKind.START, "StartTransaction", {"at": object()}, "2026-11-29T12:00:00Z"))
    with pytest.raises(ValueError):
        store.append(NewRecord(RecordKind.START, "StartTransaction", {}, 12))  # type: ignore[arg-type]
    assert len(store) == 0
    assert store.append(new(1)).seq == 1
