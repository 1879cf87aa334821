"""A damaged outbox segment loses only the records that no longer read, not its 49 neighbours.

Each test fills a real store (segments of 5 records: 1-5, 6-10, 11-15; a line per record), damages
the middle or the tail segment on disk the way a broken disk or a hand edit would, reopens the
store and checks exactly which records come back, in which order, and what ``problems()`` says.
Segments of the previous version (one JSON object, tests/fixtures/outbox_v1) are salvaged too.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.storage import atomic
from adapters.storage.outbox_store import SegmentedOutboxStore
from gateway.domain.outbox import NewRecord, OutboxRecord, RecordKind, StoreProblem
from tests.integration.test_outbox_store import V1, drain

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


def compact(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def lines(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in raw.splitlines()]


def record_at(raw: bytes, seq: int) -> tuple[int, int]:
    """Where record ``seq`` lies in a segment file as written: from its key to its closing brace
    (its latest version: the last line that sets it)."""
    fields = [line["records"][str(seq)] for line in lines(raw) if str(seq) in line.get("records", {})][-1]
    text = f'"{seq}":'.encode() + compact(fields)
    start = raw.rindex(text)
    return start, start + len(text)


def line_of(raw: bytes, seq: int) -> tuple[int, int]:
    """Where the line that sets record ``seq`` lies, its newline included."""
    start, _ = record_at(raw, seq)
    start = raw.rindex(b"\n", 0, start) + 1 if b"\n" in raw[:start] else 0
    return start, raw.index(b"\n", start) + 1


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
    """Give a field of record ``seq`` a value of the wrong type, in the line that sets it."""

    def change(raw: bytes) -> bytes:
        start, end = line_of(raw, seq)
        line = json.loads(raw[start:end])
        line["records"][str(seq)][field] = value
        return raw[:start] + compact(line) + b"\n" + raw[end:]

    return change


def garbled(seq: int, garbage: bytes) -> Callable[[bytes], bytes]:
    """Overwrite the middle of record ``seq`` in place (same length), as a bad sector would."""

    def change(raw: bytes) -> bytes:
        start, end = record_at(raw, seq)
        at = (start + end) // 2
        return raw[:at] + garbage + raw[at + len(garbage) :]

    return change


def newline_overwritten(seq: int) -> Callable[[bytes], bytes]:
    """The newline after record ``seq``'s line overwritten: two lines read as one."""

    def change(raw: bytes) -> bytes:
        end = line_of(raw, seq)[1]
        return raw[: end - 1] + b"#" + raw[end:]

    return change


def inserted(before: int, garbage: bytes) -> Callable[[bytes], bytes]:
    def change(raw: bytes) -> bytes:
        start = line_of(raw, before)[0]
        return raw[:start] + garbage + raw[start:]

    return change


def run_together_and_cut(seq: int) -> Callable[[bytes], bytes]:
    """The newline before record ``seq``'s line overwritten, and the file cut inside that record:
    not what a kill leaves (one unfinished line), so the record before is salvaged, not dropped."""

    def change(raw: bytes) -> bytes:
        cut = cut_inside(seq)(raw)
        at = cut.rindex(b"\n")
        return cut[:at] + b"#" + cut[at + 1 :]

    return change


# (damage to the middle segment, records of it that must survive, records_lost)
CASES = {
    "cut inside record 9": (cut_inside(9), [6, 7, 8], None),
    "garbage appended": (lambda raw: raw + b'\x00\xff{"records":{"99":{', [6, 7, 8, 9, 10], None),
    "a line of garbage in the middle": (inserted(8, b"#\x00 garbage\n"), [6, 7, 8, 9, 10], None),
    "an empty line in the middle": (inserted(8, b"\n"), [6, 7, 8, 9, 10], None),
    "the newline after record 8 overwritten": (newline_overwritten(8), [6, 7, 8, 9, 10], None),
    "the last two lines run together and cut": (run_together_and_cut(10), [6, 7, 8, 9], None),
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
    """The middle segment cut inside record 8 is damage (records are only added at the tail);
    the tail cut inside a line is what a kill while appending leaves: its last line is dropped
    quietly (a cut at a line's end cannot be told from a file that ended there)."""
    filled(tmp_path)
    segment = tmp_path / MIDDLE
    segment.write_bytes(cut_inside(8)(segment.read_bytes()))
    tail = tmp_path / TAIL
    tail.write_bytes(cut_inside(13)(tail.read_bytes()))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        store = SegmentedOutboxStore(tmp_path, SEGMENT_RECORDS)
    assert [Path(p.path).name for p in store.problems()] == [MIDDLE]
    survivors = [i.seq for i in store.index()]
    assert survivors == [1, 2, 3, 4, 5, 6, 7, 11, 12]
    stop = [i for i in store.index() if i.kind is RecordKind.STOP]
    assert [i.seq for i in stop] == [7]

    after = store.append(new(16))  # appended after the records of the cut tail
    assert after.seq > 15  # a seq the lost records had is never handed out again
    assert [r.seq for r in drain(SegmentedOutboxStore(tmp_path, SEGMENT_RECORDS))] == [*survivors, after.seq]


def test_the_last_segment_cut_after_two_lines_ran_together_is_damage_not_a_kill(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    appended = filled(tmp_path)
    tail = tmp_path / TAIL
    tail.write_bytes(run_together_and_cut(15)(tail.read_bytes()))

    store, problem = reopen(tmp_path, caplog)

    assert [i.seq for i in store.index()] == list(range(1, 15))  # 14 is kept, 15 is lost
    assert problem.path == str(tail) and problem.records_lost is None
    assert drain(store) == appended[:14]


def test_a_last_line_without_its_newline_reads_and_the_next_goes_after_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    appended = filled(tmp_path)
    for name in (MIDDLE, TAIL):
        (tmp_path / name).write_bytes((tmp_path / name).read_bytes()[:-1])
    with caplog.at_level(logging.INFO):
        store = SegmentedOutboxStore(tmp_path, SEGMENT_RECORDS)
    assert store.problems() == [] and not caplog.records
    store.set_attempts(10, 1)
    sixteenth = store.append(new(16))
    assert lines((tmp_path / MIDDLE).read_bytes())[-1]["records"]["10"]["attempts"] == 1
    assert [r.seq for r in drain(SegmentedOutboxStore(tmp_path, SEGMENT_RECORDS))] == [
        *[r.seq for r in appended],
        sixteenth.seq,
    ]


def test_a_damaged_removal_line_brings_its_records_back_and_loses_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A record thinned is sent again rather than a record queued being lost."""
    filled(tmp_path)
    store = SegmentedOutboxStore(tmp_path, SEGMENT_RECORDS)
    store.remove([8, 9])
    segment = tmp_path / MIDDLE
    raw = segment.read_bytes()
    assert raw.endswith(b'{"removed":[8,9]}\n')
    segment.write_bytes(raw[:-8] + b"\x00" + raw[-7:])

    reopened, problem = reopen(tmp_path, caplog)

    assert [i.seq for i in reopened.index()] == list(range(1, 16))
    assert "5 records salvaged" in problem.what and problem.records_lost is None


def test_an_unfinished_line_of_a_thinning_or_a_failed_attempt_is_no_damage(tmp_path: Path) -> None:
    """Any segment may be cut by a kill inside such a line: it only removes or updates records."""
    filled(tmp_path)
    store = SegmentedOutboxStore(tmp_path, SEGMENT_RECORDS)
    store.set_attempts(8, 1)
    raw = (tmp_path / MIDDLE).read_bytes()
    (tmp_path / MIDDLE).write_bytes(raw[:-30])  # the attempts line, cut short
    (tmp_path / "seg-000000000001.json").write_bytes((tmp_path / "seg-000000000001.json").read_bytes() + b'{"rem')
    reopened = SegmentedOutboxStore(tmp_path, SEGMENT_RECORDS)
    assert reopened.problems() == []
    assert [(r.seq, r.attempts) for r in drain(reopened)] == [(seq, 0) for seq in range(1, 16)]


def test_a_damaged_segment_of_the_previous_version_is_salvaged_the_same_way(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One JSON object for the whole segment (tests/fixtures/outbox_v1: 6, 7, 8 and 10 in it)."""
    shutil.copytree(V1, tmp_path, dirs_exist_ok=True)
    segment = tmp_path / MIDDLE
    damaged = cut_inside(8)(segment.read_bytes())
    segment.write_bytes(damaged)

    store, problem = reopen(tmp_path, caplog)

    assert [i.seq for i in store.index()] == [3, 4, 5, 6, 7, 11, 12]
    assert problem.records_lost is None and "2 records salvaged" in problem.what
    assert (tmp_path / f"{MIDDLE}.corrupt").read_bytes() == damaged
    assert SegmentedOutboxStore(tmp_path, SEGMENT_RECORDS).problems() == []
    one_more = SegmentedOutboxStore(tmp_path, SEGMENT_RECORDS)
    one_more.append(new(20))
    assert [r.action for r in drain(one_more)][3:5] == ["MeterValues", "StopTransaction"]


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
    first = garbled(10, b"#")(segment.read_bytes())
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
    segment.write_bytes(garbled(2, b"#")(segment.read_bytes()))

    def full(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "write_atomically", full)
    opened = SegmentedOutboxStore(tmp_path, 50)  # opens: the segment waits, unread, for the next start
    assert len(opened) == 0 and "not salvaged now" in opened.problems()[0].what
    monkeypatch.undo()
    later = opened.append(new(4))
    assert later.seq > 50  # numbers go on after the damaged segment's range, never into it
    reopened = SegmentedOutboxStore(tmp_path, 50)  # room again: salvaged (2 was garbled)
    assert [r.created_at for r in drain(reopened)] == [new(n).created_at for n in (1, 3, 4)]
