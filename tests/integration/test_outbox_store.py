"""The segmented outbox store on a real disk: order, durability across reopening, corrupt files."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
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


def attempts(store: SegmentedOutboxStore) -> list[tuple[int, int]]:
    """Each record's seq and attempts, read without removing anything."""
    return [(record.seq, record.attempts) for seq in seqs(store) if (record := store.record(seq)) is not None]


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


def on_disk(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file())


def test_size_is_what_the_files_take_and_follows_removals(tmp_path: Path) -> None:
    store = SegmentedOutboxStore(tmp_path, segment_records=5)
    assert store.size_bytes() == 0
    fill(store, 20)
    assert store.size_bytes() == on_disk(tmp_path)
    full = store.size_bytes()
    assert sum(i.size_bytes for i in store.index()) == pytest.approx(full, rel=0.05)
    middle = store.index()[7:12]
    store.remove(i.seq for i in middle)  # a "removed" line in two segments: the files grow a little
    assert store.size_bytes() == on_disk(tmp_path)
    assert full < store.size_bytes() < full + 100
    store.remove(seqs(store)[:6])  # the head: the segments it emptied are deleted
    assert store.size_bytes() == on_disk(tmp_path)
    assert SegmentedOutboxStore(tmp_path, segment_records=5).size_bytes() == on_disk(tmp_path)


def test_removals_free_their_bytes_once_the_segment_is_compacted(tmp_path: Path) -> None:
    """What thinning and dropping for space count on: the bytes of the records they remove."""
    store = SegmentedOutboxStore(tmp_path, segment_records=5, compact_bytes=1)  # compacted at every change
    fill(store, 20)
    full = store.size_bytes()
    middle = store.index()[7:12]
    store.remove(i.seq for i in middle)
    assert store.size_bytes() == on_disk(tmp_path)
    assert full - store.size_bytes() >= sum(i.size_bytes for i in middle)
    assert sum(i.size_bytes for i in store.index()) == pytest.approx(store.size_bytes(), rel=0.05)
    assert SegmentedOutboxStore(tmp_path, segment_records=5).index() == store.index()


def lines_of(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_change_is_one_line_appended_to_its_file(tmp_path: Path) -> None:
    store = SegmentedOutboxStore(tmp_path, segment_records=5)
    fill(store, 6)
    segment, head = tmp_path / "seg-000000000001.json", tmp_path / "head.json"
    assert [list(line["records"]) for line in lines_of(segment)] == [["1"], ["2"], ["3"], ["4"], ["5"]]
    before = segment.read_bytes(), head.read_bytes()
    store.remove([1])  # delivered: head.json only
    store.set_attempts(2, 4)
    store.remove([4])  # thinned
    assert segment.read_bytes().startswith(before[0]) and head.read_bytes().startswith(before[1])
    assert lines_of(head)[-1] == {"floor": 2, "reserved": lines_of(head)[0]["reserved"]}
    *_, attempts, removed = lines_of(segment)
    assert attempts == {"records": {"2": dict(lines_of(segment)[1]["records"]["2"], attempts=4)}}  # type: ignore[call-overload]
    assert removed == {"removed": [1, 4]}  # (delivered records go with them)
    assert [(r.seq, r.attempts) for r in drain(SegmentedOutboxStore(tmp_path, segment_records=5))] == [
        (2, 4),
        (3, 0),
        (5, 0),
        (6, 0),
    ]


def test_a_segment_is_compacted_to_one_line_once_enough_of_it_holds_nothing(tmp_path: Path) -> None:
    store = SegmentedOutboxStore(tmp_path, segment_records=5, compact_bytes=600)
    fill(store, 5)
    segment = tmp_path / "seg-000000000001.json"
    for attempts in range(1, 20):
        store.set_attempts(3, attempts)
        assert len(lines_of(segment)) <= 5 + 600 // 100 + 1  # (a record is over 100 bytes)
        assert store.size_bytes() == on_disk(tmp_path)
    store.remove([2, 4])
    assert store.size_bytes() == on_disk(tmp_path)
    reopened = SegmentedOutboxStore(tmp_path, segment_records=5)
    assert reopened.problems() == []
    assert [(r.seq, r.attempts) for r in drain(reopened)] == [(1, 0), (3, 19), (5, 0)]
    assert not list(tmp_path.glob("*.tmp"))


def test_head_json_is_compacted_and_keeps_the_greatest_floor(tmp_path: Path) -> None:
    store = SegmentedOutboxStore(tmp_path, segment_records=50, head_compact_bytes=200)
    fill(store, 40)
    for seq in range(1, 31):
        store.remove([seq])
        assert (tmp_path / "head.json").stat().st_size <= 200 + 40
        assert store.size_bytes() == on_disk(tmp_path)
    assert seqs(SegmentedOutboxStore(tmp_path, segment_records=50)) == list(range(31, 41))


def test_a_line_a_kill_left_unfinished_is_dropped_without_a_problem(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A write that never returned: the tail segment's last line, or head.json's, cut short."""
    store = SegmentedOutboxStore(tmp_path, segment_records=5)
    fill(store, 7)
    store.remove([1])
    tail, head = tmp_path / "seg-000000000006.json", tmp_path / "head.json"
    sound = tail.read_bytes(), head.read_bytes()
    line = store_line(8)
    tail.write_bytes(sound[0] + line[: len(line) // 2])  # killed appending record 8
    head.write_bytes(sound[1] + b'{"floor":3,"rese')  # killed delivering record 2
    with (tmp_path / "seg-000000000001.json").open("ab") as first:
        first.write(b'{"removed":[3')  # killed thinning record 3

    with caplog.at_level(logging.INFO):
        reopened = SegmentedOutboxStore(tmp_path, segment_records=5)

    assert reopened.problems() == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert seqs(reopened) == [2, 3, 4, 5, 6, 7]
    assert (tail.read_bytes(), head.read_bytes()) == sound  # cut off, so that lines go on after what counts
    eighth = reopened.append(new(8))
    reopened.remove([2])
    assert [r.seq for r in drain(SegmentedOutboxStore(tmp_path, segment_records=5))] == [3, 4, 5, 6, 7, eighth.seq]


def store_line(n: int) -> bytes:
    fields = {"kind": "sampled", "action": "MeterValues", "payload": new(n).payload, "created_at": "x"}
    return json.dumps({"records": {str(n): fields}}, separators=(",", ":")).encode()


V1 = Path(__file__).parents[1] / "fixtures" / "outbox_v1"


def test_a_backlog_written_by_the_previous_version_is_read_and_grows_by_lines(tmp_path: Path) -> None:
    """A gateway upgraded with a backlog on disk loses none of it.

    tests/fixtures/outbox_v1 was written by the store of commit 4aa0b31 (each file one JSON
    object without a newline, rewritten whole on every change): records 1-12 appended in
    segments of 5, 1 and 2 delivered, 9 thinned, 3 failed twice; record 7 is a StopTransaction.
    """
    shutil.copytree(V1, tmp_path, dirs_exist_ok=True)
    store = SegmentedOutboxStore(tmp_path, segment_records=5)
    assert store.problems() == []
    assert seqs(store) == [3, 4, 5, 6, 7, 8, 10, 11, 12]
    head = store.head()
    assert head is not None and head.attempts == 2
    assert [i.seq for i in store.index() if i.kind is RecordKind.STOP] == [7]
    assert store.size_bytes() == on_disk(tmp_path)

    appended = store.append(new(13))  # (in a new segment: reserved was 16)
    store.set_attempts(3, 3)
    store.remove([3])  # delivered: a line after head.json's old one
    store.remove([8])  # thinned: a line in an old segment
    store.set_attempts(11, 1)
    assert appended.seq >= 16
    for name in ("head.json", "seg-000000000006.json", "seg-000000000011.json"):  # the old object, then lines
        assert (tmp_path / name).read_bytes().startswith((V1 / name).read_bytes() + b"\n{")
    reopened = SegmentedOutboxStore(tmp_path, segment_records=5)
    assert reopened.problems() == []
    records = drain(reopened)
    assert [(r.seq, r.attempts) for r in records] == [
        (4, 0),
        (5, 0),
        (6, 0),
        (7, 0),
        (10, 0),
        (11, 1),
        (12, 0),
        (appended.seq, 0),
    ]
    assert records[3].action == "StopTransaction" and records[3].payload["meterStop"] == 1007


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


def test_a_head_file_with_a_damaged_line_keeps_what_reads_and_the_original(tmp_path: Path) -> None:
    store = SegmentedOutboxStore(tmp_path, segment_records=3)
    fill(store, 5)
    store.remove([1])
    store.remove([2])
    head = tmp_path / "head.json"
    lines = head.read_bytes().splitlines(keepends=True)
    damaged = b"".join([*lines[:-2], b'{"floor":#,"reserved":1001}\n', lines[-1]])  # the first delivery's line
    head.write_bytes(damaged)
    reopened = SegmentedOutboxStore(tmp_path, segment_records=3)
    [problem] = reopened.problems()
    assert problem.path == str(head) and "floor (3)" in problem.what and "head.json.corrupt" in problem.what
    assert seqs(reopened) == [3, 4, 5]  # the greatest floor of the lines that read
    assert (tmp_path / "head.json.corrupt").read_bytes() == damaged
    assert len(lines_of(head)) == 1
    assert SegmentedOutboxStore(tmp_path, segment_records=3).problems() == []


def test_a_missing_head_file_is_reported(tmp_path: Path) -> None:
    store = SegmentedOutboxStore(tmp_path, segment_records=3)
    fill(store, 2)
    (tmp_path / "head.json").unlink()
    reopened = SegmentedOutboxStore(tmp_path, segment_records=3)
    assert [("missing" in p.what, Path(p.path).name) for p in reopened.problems()] == [(True, "head.json")]
    assert seqs(reopened) == [1, 2]
    assert SegmentedOutboxStore(tmp_path / "fresh").problems() == []  # a new store has none yet: no problem


class FullDisk:
    """While ``full``, a line appended is written half, then refused with ENOSPC, as a full disk
    writes what fits; ``truncate_fails`` makes cutting it off fail too (EIO)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, truncate_fails: bool = False) -> None:
        real_pwrite, real_ftruncate = os.pwrite, os.ftruncate

        def pwrite(descriptor: int, data: bytes, offset: int) -> int:
            if not self.full:
                return real_pwrite(descriptor, data, offset)
            if self.wrote:  # what fitted is written: refuse the rest
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.wrote = True
            return real_pwrite(descriptor, bytes(data[: len(data) // 2]), offset)

        def ftruncate(descriptor: int, length: int) -> None:
            if self.full and truncate_fails:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            real_ftruncate(descriptor, length)

        self.full = True
        self.wrote = False
        monkeypatch.setattr(os, "pwrite", pwrite)
        monkeypatch.setattr(os, "ftruncate", ftruncate)


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.mark.parametrize("truncate_fails", [False, True], ids=["cut back at once", "cut back at the next write"])
def test_a_line_the_disk_refuses_half_way_raises_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, truncate_fails: bool
) -> None:
    store = SegmentedOutboxStore(tmp_path, segment_records=3)
    fill(store, 2)
    before = (store.index(), store.size_bytes())
    disk = FullDisk(monkeypatch, truncate_fails=truncate_fails)
    for call in (
        lambda: store.append(new(3)),
        lambda: store.remove([2]),  # thinning: a line in the segment
        lambda: store.set_attempts(1, 1),
        lambda: store.remove([1]),  # delivering the head: a line in head.json
    ):
        disk.wrote = False
        with pytest.raises(OSError, match=r"No space left|Input/output error"):
            call()
        assert store.index() == before[0]
        assert store.size_bytes() == before[1] or truncate_fails  # (then the half line is there till cut)
    head = store.head()
    assert head is not None and head.attempts == 0
    if not truncate_fails:
        assert store.size_bytes() == on_disk(tmp_path)  # nothing of the refused lines is left
    disk.full = False

    third = store.append(new(3))
    assert third.seq > 2  # a seq whose write failed is not handed out again
    store.set_attempts(2, 1)
    store.remove([1])
    assert seqs(store) == [2, third.seq]
    assert store.size_bytes() == on_disk(tmp_path)  # (half lines left by a refused cut are gone now)
    reopened = SegmentedOutboxStore(tmp_path, segment_records=3)
    assert reopened.problems() == []
    assert [(r.seq, r.attempts) for r in drain(reopened)] == [(2, 1), (third.seq, 0)]


def test_a_new_segment_the_disk_refuses_raises_and_changes_nothing(tmp_path: Path) -> None:
    store = SegmentedOutboxStore(tmp_path, segment_records=3)
    fill(store, 3)
    before = (store.index(), store.size_bytes(), files(tmp_path))
    blocker = tmp_path / "seg-000000000004.json.tmp"
    blocker.mkdir()  # the new segment cannot be written (even as root), as on a full disk
    with pytest.raises(OSError):
        store.append(new(4))
    assert (store.index(), store.size_bytes(), files(tmp_path)) == before
    blocker.rmdir()
    fifth = store.append(new(5))
    assert fifth.seq == 5 and (tmp_path / "seg-000000000005.json").exists()
    assert SegmentedOutboxStore(tmp_path, segment_records=3).index() == store.index()


def test_a_failure_after_the_rename_leaves_memory_as_the_disk_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SegmentedOutboxStore(tmp_path, segment_records=3)
    fill(store, 3)
    real_fsync = os.fsync

    def directory_fsync_fails(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", directory_fsync_fails)
    with pytest.raises(OSError):
        store.append(new(4))  # the new segment was renamed into place, then the directory fsync failed
    monkeypatch.undo()
    assert seqs(store) == [1, 2, 3, 4]
    assert SegmentedOutboxStore(tmp_path, segment_records=3).index() == store.index()


def test_a_compaction_the_disk_refuses_is_tried_again_and_loses_nothing(tmp_path: Path) -> None:
    """The change that calls for a compaction is on disk as a line: it stands (no OSError)."""
    store = SegmentedOutboxStore(tmp_path, segment_records=5, compact_bytes=1, head_compact_bytes=1)
    fill(store, 5)
    blockers = [tmp_path / "seg-000000000001.json.tmp", tmp_path / "head.json.tmp"]
    for blocker in blockers:
        blocker.mkdir()
    store.set_attempts(2, 1)
    store.remove([1])
    store.remove([4])
    assert store.size_bytes() == on_disk(tmp_path)
    assert len(lines_of(tmp_path / "seg-000000000001.json")) > 5  # not compacted
    assert attempts(SegmentedOutboxStore(tmp_path, 5)) == [(2, 1), (3, 0), (5, 0)]
    for blocker in blockers:
        blocker.rmdir()
    store.set_attempts(3, 1)  # compacts now
    store.remove([2])
    assert len(lines_of(tmp_path / "seg-000000000001.json")) == 1
    assert len(lines_of(tmp_path / "head.json")) == 1
    assert attempts(SegmentedOutboxStore(tmp_path, 5)) == [(3, 1), (5, 0)]


CHILD = """
import json, resource, signal, sys
from pathlib import Path
from adapters.storage.outbox_store import SegmentedOutboxStore
from gateway.domain.outbox import NewRecord, RecordKind

def new(n):
    return NewRecord(RecordKind.SAMPLED, "MeterValues", {"meterValue": [{"value": str(n)}] * 8}, str(n), "tx")

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # refused writes fail with EFBIG instead of killing
directory = Path(sys.argv[1])
store = SegmentedOutboxStore(directory, 50)
for n in range(1, 6):
    store.append(new(n))
tail = directory / "seg-000000000001.json"
before = tail.read_bytes()
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 100, hard))  # a record line does not fit
refused = []
for call in (lambda: store.append(new(6)), lambda: store.set_attempts(2, 1)):
    try:
        call()
    except OSError as exc:
        refused.append(exc.errno)
cut_back = tail.read_bytes() == before
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
seventh = store.append(new(7)).seq
seqs = [i.seq for i in store.index()]
print(json.dumps({"refused": refused, "cut_back": cut_back, "seqs": seqs, "seventh": seventh}))
"""


def test_a_real_refusal_of_the_kernel_half_way_through_a_line(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes the kernel write what fits below the limit and refuse the rest (EFBIG),
    as a full disk does: the half line is cut off and the store goes on once writes work again."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path)], cwd=root, capture_output=True, text=True, timeout=60, check=True
    )
    result = json.loads(done.stdout)
    assert result["refused"] == [errno.EFBIG, errno.EFBIG]
    assert result["cut_back"]
    assert result["seqs"] == [1, 2, 3, 4, 5, result["seventh"]] and result["seventh"] > 6
    reopened = SegmentedOutboxStore(tmp_path, 50)
    assert reopened.problems() == []
    assert [(r.seq, r.attempts) for r in drain(reopened)] == [(seq, 0) for seq in result["seqs"]]


def test_a_record_that_would_not_read_back_is_refused(tmp_path: Path) -> None:
    store = SegmentedOutboxStore(tmp_path)
    with pytest.raises(TypeError):
        store.append(NewRecord(RecordKind.START, "StartTransaction", {"at": object()}, "2026-11-29T12:00:00Z"))
    with pytest.raises(ValueError):
        store.append(NewRecord(RecordKind.START, "StartTransaction", {}, 12))  # type: ignore[arg-type]
    assert len(store) == 0
    assert store.append(new(1)).seq == 1
