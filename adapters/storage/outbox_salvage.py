"""Reading a segment file at opening, and saving what still reads in a damaged one.

A StopTransaction must not be lost with the 49 records beside it: where a line does not read (bytes
overwritten, a file cut short, garbage appended), the records around it are kept. A damaged file is
copied as found to ``<name>.corrupt`` for inspection, then replaced by the records that still read
(``salvage``); ``problems()`` of the store says so. Without a checksum, a change that leaves a
well-formed record (a digit flipped in a payload) cannot be seen.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.storage import atomic
from adapters.storage.outbox_lines import (
    REMOVED,
    SEQ,
    TABLE,
    CorruptSegment,
    Line,
    encode_line,
    replay,
    scan_line,
    scan_lines,
    split_lines,
    to_record,
)
from gateway.domain.outbox import StoreProblem

_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"\s*", re.ASCII)
_TABLE_START = re.compile(rf'"{TABLE}"\s*:\s*\{{', re.ASCII)
_REMOVED = rf'(?:"{REMOVED}"\s*:\s*\[[\d,\s]*\]\s*,\s*)?'
_LINE_START = re.compile(rf"\s*\{{\s*{_REMOVED}", re.ASCII)  # what may come before a line's table
_BETWEEN = re.compile(rf"\}}\s*\}}\s*\{{\s*{_REMOVED}", re.ASCII)  # from the end of a table to the next line's
_RECORD_START = re.compile(r'"[1-9][0-9]*"\s*:\s*\{', re.ASCII)
_ADDS = re.compile(rf'\{{"{TABLE}":\{{"([1-9][0-9]*)":', re.ASCII)  # a torn line that added a record
_UNDECODABLE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8 (decoded with surrogateescape)


@dataclass
class SegmentRead:
    """What a segment file holds: its records in seq order with the bytes each takes, why the
    file is damaged (None if it is not), whether all of it could be read (so that the records
    lost can be counted), the bytes worth keeping (``end``: a torn last line left out) and whether
    it is one object written over several lines (an older file edited by hand: rewritten)."""

    records: list[tuple[int, dict[str, Any], int]]
    refused: dict[str, str]
    damage: str | None
    whole: bool
    end: int
    torn: bytes
    reformat: bool = False


def read_segment(raw: bytes, start: int, end: int | None, tail: bool) -> SegmentRead:
    """Read every line of a segment holding seqs ``start`` up to ``end`` (excluded; None: no end).

    Lines that do not read are scanned for the records in them (``salvage_scan``); records that
    are malformed or outside the range are refused (an earlier version of one is kept). A torn
    last line is a write a kill cut short, except one that added a record to a segment that is
    not the ``tail``: records are only ever added at the tail, so that file was cut short.
    """
    split = split_lines(raw)
    lines: list[Line] = []
    texts = split.lines
    damage: str | None = None if raw else "empty file, 0 bytes"
    whole = bool(raw)
    reformat = False
    unreadable: list[str] = []

    def salvage_unreadable() -> None:
        nonlocal whole
        if unreadable:
            found, complete = salvage_scan("\n".join(unreadable))
            lines.append(Line(records=found))
            whole = whole and complete
            unreadable.clear()

    with contextlib.suppress(ValueError):
        lines, texts = scan_lines(split), []  # (all of them read: nothing to look into)
    for n, text in enumerate(texts, 1):
        try:
            line = scan_line(text, n < len(split.lines) or split.last_newline)
        except ValueError as exc:
            if n == 1 and len(split.lines) > 1 and (one := _one_object(split.lines)) is not None:
                lines, reformat = [one], True
                break
            if isinstance(exc, json.JSONDecodeError):
                exc = ValueError(f"{exc.msg.removesuffix(' at')} at column {exc.colno}")
            damage = damage or f"line {n} does not read: {exc}"
            unreadable.append(text)
            continue
        salvage_unreadable()
        lines.append(line)
    if split.torn and not tail and (adds := _ADDS.match(split.torn.decode("ascii"))):
        seq = adds[1]
        if not any(seq == key for line in lines for key, _, _ in line.records):
            damage = damage or f"cut short inside a line that added record {seq}"
            unreadable.append(split.torn.decode("ascii"))
            split.end, split.torn = len(raw), b""
    salvage_unreadable()

    def admit(key: str, fields: dict[str, Any]) -> str | None:
        seq = int(key) if SEQ.fullmatch(key) else -1  # (below every segment)
        if seq < start or (end is not None and seq >= end):
            return f"record {key!r} does not belong in this segment"
        try:
            to_record(seq, fields, private=False)
        except CorruptSegment as exc:
            return str(exc)
        return None

    table, sizes, _, refused = replay(lines, admit)
    if damage is None and refused:
        damage = next(iter(refused.values())) + (f" and {len(refused) - 1} more" if len(refused) > 1 else "")
    records = sorted(((int(key), fields, sizes[key]) for key, fields in table.items()), key=lambda record: record[0])
    return SegmentRead(records, refused, damage, whole, split.end, split.torn, reformat)


def _one_object(lines: list[str]) -> Line | None:
    """The file read as one JSON object over several lines (the older format, indented by hand)."""
    with contextlib.suppress(ValueError):
        return scan_line(" ".join(lines), newline=False)
    return None


def salvage_scan(text: str) -> tuple[list[tuple[str, Any, int]], bool]:
    """Every record that still reads in lines that do not, and whether all of them was read.

    Walks each ``"records"`` table record by record; where a record does not read (the file was
    cut, bytes were overwritten), it looks for the next ``"<seq>":{`` further on and goes on from
    there, so records after a garbled one are kept too. After the end of a table it looks for
    another (two lines that became one). What is found is only a candidate: the caller keeps it
    only if it is a well-formed record of this segment. The flag is False when some part could not
    be read, so the records in it cannot be counted. Bytes that are not UTF-8 make the record they
    are in unreadable, never part of a payload. Removals in such lines are lost: the records they
    removed come back (sent again, never lost).
    """

    def skip(at: int) -> int:
        return _SPACE.match(text, at).end()  # type: ignore[union-attr]  # matches the empty string

    records: list[tuple[str, Any, int]] = []
    table = _TABLE_START.search(text)
    if table is None:
        return records, False
    whole = _LINE_START.fullmatch(text, 0, table.start()) is not None  # nothing unread before it
    at = skip(table.end())  # where a record should start
    while True:
        if text[at : at + 1] == "}":  # the end of a table: what follows is another line, or nothing
            table = _TABLE_START.search(text, at)
            if table is not None:
                whole = whole and _BETWEEN.fullmatch(text, at, table.start()) is not None
                at = skip(table.end())
                continue
            if _RECORD_START.search(text, at) is None:
                return records, whole  # nothing after it that could have been a record
        else:
            try:
                key, end = _DECODER.raw_decode(text, at)
                colon = skip(end)
                if text[colon : colon + 1] != ":":
                    raise ValueError("no ':' after the key")
                fields, end = _DECODER.raw_decode(text, skip(colon + 1))
                if not isinstance(key, str) or not isinstance(fields, dict) or _UNDECODABLE.search(text, at, end):
                    raise ValueError("not a record")
                records.append((key, fields, end - at + 1))
                at = skip(end)
                if text[at : at + 1] == ",":
                    at = skip(at + 1)
                continue
            except ValueError:  # (JSONDecodeError is one)
                pass
        whole = False
        found = _RECORD_START.search(text, at + 1)
        if found is None:
            return records, False
        at = found.start()


def salvage(
    path: Path,
    raw: bytes,
    read: SegmentRead,
    floor: int,
) -> tuple[bytes | None, StoreProblem]:
    """Keep a damaged segment as ``.corrupt`` and put back the records that still read.

    Returns the segment as rewritten, or None if nothing could be read (the file is then only
    moved aside), and the problem to report. The copy is on disk before the segment is replaced: a
    kill in between leaves the damaged segment, salvaged again at the next opening (into the same
    copy). Records lost are counted only when the whole file could be read (``read.whole``).
    ``SalvageLater`` if the disk refuses the writes.
    """
    assert read.damage is not None
    records = read.records
    salvaged = sum(1 for seq, _, _ in records if seq >= floor)
    lost: int | None = None
    if read.whole:
        lost = sum(1 for key in read.refused if not SEQ.fullmatch(key) or int(key) >= floor)
        outcome = f"{salvaged} records salvaged, {lost} lost"
    elif raw:
        outcome = f"{salvaged} records salvaged, those in the unreadable part are lost and cannot be counted"
    else:
        outcome = "nothing to salvage, the records it held cannot be counted"
    aside = aside_path(path, raw)
    rewritten: bytes | None = None
    if not records:
        os.replace(path, aside)
        with contextlib.suppress(OSError):
            atomic.fsync_directory(path.parent)
        kept = f"kept as {aside.name}"
    else:
        rewritten = encode_line({str(seq): fields for seq, fields, _ in records})[0]
        try:
            if not aside.exists():
                atomic.write_atomically(aside, raw)
            atomic.write_atomically(path, rewritten)
        except OSError as exc:  # a full disk must not stop the gateway: salvage at the next opening
            waiting = f"{salvaged} readable records wait in it for the next start (they are sent late)"
            what = f"outbox segment damaged ({read.damage}) and not salvaged now ({exc}); {waiting}"
            raise SalvageLater(max(seq for seq, _, _ in records), StoreProblem(what, str(path), None)) from exc
        kept = f"original kept as {aside.name}"
    return rewritten, StoreProblem(f"outbox segment damaged ({read.damage}): {outcome}; {kept}", str(path), lost)


class SalvageLater(Exception):
    """A damaged segment the disk would not let us salvage now: left in place, unread this run."""

    def __init__(self, highest_seq: int, problem: StoreProblem) -> None:
        super().__init__(highest_seq)
        self.highest_seq = highest_seq
        self.problem = problem


def aside_path(path: Path, raw: bytes) -> Path:
    """Where to keep a damaged file: ``<name>.corrupt``, or ``.corrupt.<n>`` if that is taken by
    other content (one that already holds these bytes is an earlier salvage a kill cut short)."""
    for n in range(1000):
        aside = path.with_name(f"{path.name}.corrupt" + (f".{n}" if n else ""))
        try:
            if aside.read_bytes() == raw:
                return aside
        except FileNotFoundError:
            return aside
    return aside
