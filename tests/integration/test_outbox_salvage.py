"""A damaged outbox segment loses only the records that no longer read, not its 49 neighbours.

Each test fills a real store (segments of 5 records: 1-5, 6-10, 11-15), damages the middle or
the tail segment on disk the way a broken disk or a hand edit would, reopens the store and checks
exactly which records come back, in which order, and what ``problems()`` says.
"""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from adapters.storage import outbox_store
from adapters.storage.outbox_store import SegmentedOutboxStore
from gateway.domain.outbox import NewRecord, OutboxRecord, RecordKind, StoreProblem
from tests.integration.test_outbox_store import drain

SEGMENT_RECORDS = 5
MIDDLE = "seg-000000000006.json"  # records 6-10
TAIL = "seg-000000000011.json"  # records 11-15


def new(n: int) -> NewRecord:
    kind = RecordKind.STOP if n == 7 else RecordKind.SAMPLED  # a StopTransaction in the middle segment
    payload = {"connectorId": 1, "transactionId": 40 + n, "meterStop": 1000 + n}
    return NewRecord(kind, "StopTransaction" if n == 7 else "MeterValues", payload, f"2026-11-29T12:00:{n:02d}Z", "tx")


def filled(directory: Path) -> list[OutboxRecord]:
    store = SegmentedOutboxStore(directory, SEGMENT_RECORDS)
    return [store.append(new(n)) for n in range(1, 16)]


def record_at(raw: bytes, seq: int) -> tuple[int, int]:
    """Where record ``seq`` lies in a segment file as written: from its key to its closing brace."""
    fields = json.loads(raw)["records"][str(seq)]
    text = f'"{seq}":'.encode() + json.dumps(fields, separators=(",", ":")).encode()
    start = raw.index(text)
    return start, start + len(text)


def reopen(directory: Path, caplog: pytest.LogCaptureFixture) -> tuple[SegmentedOutboxStore, StoreProblem]:
    """Open the damaged store: one problem, one WARNING line and no traceback for it."""
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        store = SegmentedOutboxStore(directory, SEGMENT_RECORDS)
    [problem] = store.problems()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.levelno, r.exc_info) for r in warnings] == [(logging.WARNING, None)]
    assert problem.what in warnings[0].getMessage()
    return store, problem


def cut_inside(seq: int) -> Callable[[bytes], bytes]:
    return lambda raw: raw[: (record_at(raw, seq)[0] + record_at(raw, seq)[1]) // 2]


def wrong_type(seq: int, field: str, value: object) -> Callable[[bytes], bytes]:
    def change(raw: bytes) -> bytes:
        data = json.loads(raw)
        data["records"][str(seq)][field] = value
        return json.dumps(data, separators=(",", ":")).encode()

    return change


def garbled(seq: int, garbage: bytes) -> Callable[[bytes], bytes]:
    """Overwrite the middle of record ``seq`` in place (same length), as a bad sector would."""

    def change(raw: bytes) -> bytes:
        start, end = record_at(raw, seq)
        at = (start + end) // 2
        return raw[:at] + garbage + raw[at + len(garbage) :]

    return change


# (damage to the middle segment, records of it that must survive, records_lost)
CASES = {
    "cut inside record 9": (cut_inside(9), [6, 7, 8], None),
    "cut right after record 8 and its comma": (lambda raw: raw[: record_at(raw, 9)[0]], [6, 7, 8], None),
    "one byte short": (lambda raw: raw[:-1], [6, 7, 8, 9, 10], 0),
    "garbage appended": (lambda raw: raw + b'\x00\xff{"records":{"99":{', [6, 7, 8, 9, 10], 0),
    "attempts of record 8 is a string": (wrong_type(8, "attempts", "3"), [6, 7, 9, 10], 1),
    "payload of record 6 is a list": (wrong_type(6, "payload", [1]), [7, 8, 9, 10], 1),
    "record 7 overwritten in the middle": (garbled(7, b"#\x00#" * 4), [6, 8, 9, 10], None),
    "a byte of record 8 is not UTF-8": (garbled(8, b"\xff"), [6, 7, 9, 10], None),
    "every record has negative attempts": (lambda raw: raw.replace(b'"attempts":0', b'"attempts":-1'), [], 5),
    "0 bytes": (lambda raw: b"", [], None),
}


@pytest.mark.parametrize("case", CASES)
def test_a_damaged_segment_keeps_every_record_that_still_reads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    damage, survivors, records_lost = CASES[case]
    appended = filled(tmp_path)
    segment = tmp_path / MIDDLE
    damaged = damage(segment.read_bytes())
    segment.write_bytes(damaged)

    store, problem = reopen(tmp_path, caplog)

    expected = [r for r in appended if r.seq not in range(6, 11) or r.seq in survivors]
    assert [i.seq for i in store.index()] == [r.seq for r in expected]
    assert problem.path == str(segment)
    assert problem.records_lost == records_lost
    assert f"{len(survivors)} records salvaged" in problem.what or (not survivors and "nothing" in problem.what)
    if records_lost is not None:
        assert f"{records_lost} lost" in problem.what
    else:
        assert "cannot be counted" in problem.what
    assert (tmp_path / f"{MIDDLE}.corrupt").read_bytes() == damaged  # the damaged file, for inspection
    assert segment.exists() == bool(survivors)
    assert not list(tmp_path.glob("*.tmp"))

    again = SegmentedOutboxStore(tmp_path, SEGMENT_RECORDS)  # the salvaged segment is a sound one
    assert again.problems() == []
    assert drain(again) == expected  # every field as appended, in order


def test_the_stop_transaction_survives_when_the_tail_segment_is_cut_and_seqs_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    filled(tmp_path)
    segment = tmp_path / MIDDLE
    segment.write_bytes(cut_inside(8)(segment.read_bytes()))
    tail = tmp_path / TAIL
    tail.write_bytes(tail.read_bytes()[: len(tail.read_bytes()) // 2])
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        store = SegmentedOutboxStore(tmp_path, SEGMENT_RECORDS)
    assert sorted(Path(p.path).name for p in store.problems()) == [MIDDLE, TAIL]
    survivors = [i.seq for i in store.index()]
    assert survivors[:7] == [1, 2, 3, 4, 5, 6, 7]
    assert 8 not in survivors and 15 not in survivors and 11 in survivors
    stop = [i for i in store.index() if i.kind is RecordKind.STOP]
    assert [i.seq for i in stop] == [7]

    after = store.append(new(16))  # appended after the salvaged records of the cut tail
    assert after.seq > 15  # a seq the lost records had is never handed out again
    assert [r.seq for r in drain(SegmentedOutboxStore(tmp_path, SEGMENT_RECORDS))] == [*survivors, after.seq]


def test_delivered_records_in_a_damaged_segment_are_not_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    appended = filled(tmp_path)
    store = SegmentedOutboxStore(tmp_path, SEGMENT_RECORDS)
    store.remove(range(1, 8))  # delivered: the floor is inside the middle segment
    segment = tmp_path / MIDDLE
    segment.write_bytes(wrong_type(9, "kind", "weird")(segment.read_bytes()))

    reopened, problem = reopen(tmp_path, caplog)

    assert [i.seq for i in reopened.index()] == [8, 10, 11, 12, 13, 14, 15]
    assert problem.records_lost == 1
    assert "2 records salvaged, 1 lost" in problem.what  # 8 and 10; 6 and 7 were delivered
    assert drain(reopened) == [r for r in appended if r.seq in (8, 10, 11, 12, 13, 14, 15)]


def test_a_salvage_a_kill_cut_short_is_done_again_into_the_same_copy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    filled(tmp_path)
    segment = tmp_path / MIDDLE
    damaged = cut_inside(9)(segment.read_bytes())
    segment.write_bytes(damaged)
    # Killed after the damaged file was copied aside, before the segment was replaced; and once
    # while the copy was being written.
    (tmp_path / f"{MIDDLE}.corrupt").write_bytes(damaged)
    (tmp_path / f"{MIDDLE}.corrupt.tmp").write_bytes(damaged[:10])

    store, problem = reopen(tmp_path, caplog)

    assert [i.seq for i in store.index()] == [1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 14, 15]
    assert sorted(p.name for p in tmp_path.iterdir() if ".corrupt" in p.name) == [f"{MIDDLE}.corrupt"]
    assert f"kept as {MIDDLE}.corrupt" in problem.what


def test_a_second_damage_to_a_segment_keeps_both_originals(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    filled(tmp_path)
    segment = tmp_path / MIDDLE
    first = segment.read_bytes()[:-1]
    segment.write_bytes(first)
    reopen(tmp_path, caplog)
    second = cut_inside(9)(segment.read_bytes())
    segment.write_bytes(second)

    store, problem = reopen(tmp_path, caplog)

    assert [i.seq for i in store.index()] == [1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 14, 15]
    assert (tmp_path / f"{MIDDLE}.corrupt").read_bytes() == first
    assert (tmp_path / f"{MIDDLE}.corrupt.1").read_bytes() == second
    assert f"kept as {MIDDLE}.corrupt.1" in problem.what


def test_a_damaged_segment_on_a_full_disk_does_not_stop_the_gateway_from_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in review: salvaging writes files; a full disk then leaves it for the next start."""
    store = SegmentedOutboxStore(tmp_path, 50)
    for n in range(1, 4):
        store.append(new(n))
    segment = tmp_path / "seg-000000000001.json"
    segment.write_bytes(segment.read_bytes()[:-7])  # cut short

    def full(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outbox_store, "write_atomically", full)
    opened = SegmentedOutboxStore(tmp_path, 50)  # opens: the segment waits, unread, for the next start
    assert len(opened) == 0 and "not salvaged now" in opened.problems()[0].what
    monkeypatch.undo()
    later = opened.append(new(4))
    assert later.seq > 50  # numbers go on after the damaged segment's range, never into it
    reopened = SegmentedOutboxStore(tmp_path, 50)  # room again: salvaged (3 was in the cut)
    assert [r.created_at for r in drain(reopened)] == [new(n).created_at for n in (1, 2, 4)]
