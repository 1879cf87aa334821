"""Opening the segmented outbox store: what its head file and each segment file hold, whatever a
kill, a power cut or a damaged disk left in them.

Apart from ``outbox_store.py`` (the running store) because it runs once, at opening, and decides
what a half-written or damaged file means: a last line a kill cut short is dropped (its call never
returned), a head file that does not read is set aside (delivered records may then be sent again:
at least once, never lost), a damaged segment is salvaged (``outbox_salvage``). Every decision
is told to ``report`` as a ``StoreProblem``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapters.storage import atomic, outbox_salvage
from adapters.storage.atomic import fsync_directory
from adapters.storage.outbox_journal import HeadJournal, parse_head_line
from adapters.storage.outbox_lines import encode_line, split_lines
from adapters.storage.outbox_salvage import aside_path, read_segment
from gateway.domain.outbox import StoreProblem

log = logging.getLogger("adapters.storage.outbox_store")  # the store's own lines, as before the split

Report = Callable[[StoreProblem], None]
Records = list[tuple[int, dict[str, Any], int]]  # (seq, fields, size in bytes), in order


def read_head(path: Path, head: HeadJournal, segments_exist: bool, report: Report) -> None:
    """Give ``head`` the floor and reserved number its file holds (the greatest that read)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if segments_exist:
            report(StoreProblem(f"{path.name} missing: delivered records may be sent again", str(path)))
        return
    split = split_lines(raw, parse_head_line)
    states: list[tuple[int, int]] = []
    damage: ValueError | None = None
    for text in split.lines:
        try:
            states.append(parse_head_line(text))
        except ValueError as exc:
            damage = damage or exc
    if not states:
        set_aside(
            path, raw, f"{path.name} unreadable ({damage or 'empty'}): delivered records may be sent again", report
        )
        return
    floor, reserved = max(state[0] for state in states), max(state[1] for state in states)
    size = cut_torn(path, split.end, split.torn) if split.torn else len(raw)
    head.adopt(floor, reserved, split.end, size, split.last_newline)
    if damage is not None:  # what read is kept; the rest is in the copy
        aside = aside_path(path, raw)
        what = f"{path.name} damaged ({damage}): the greatest floor ({floor}) and reserved ({reserved}) that read"
        try:
            if not aside.exists():
                atomic.write_atomically(aside, raw)
            head.replace(floor, reserved)
        except OSError as exc:
            report(StoreProblem(f"{what} are used, not rewritten now ({exc})", str(path)))
            return
        kept = f"original kept as {aside.name}"
        report(StoreProblem(f"{what} are used (delivered records may be sent again); {kept}", str(path)))


def read_segment_file(
    path: Path, start: int, end: int | None, floor: int, report: Report
) -> tuple[Records, int] | None:
    """The records of a segment file in order with their sizes, and the file's length; a damaged
    file is salvaged first (see ``outbox_salvage``); None if nothing in it could be read.
    ``outbox_salvage.SalvageLater`` is raised for a file left as it is for now."""
    raw = path.read_bytes()
    read = read_segment(raw, start, end, tail=end is None)
    if read.damage is not None:
        salvaged, problem = outbox_salvage.salvage(path, raw, read, floor)
        report(problem)
        if salvaged is None:
            return None
        raw = salvaged
        read = read_segment(raw, start, end, tail=end is None)
    elif read.torn:
        raw = raw[: cut_torn(path, read.end, read.torn)]
    elif read.reformat:  # one object on several lines: rewritten as one line, to grow by lines
        compact = encode_line({str(seq): fields for seq, fields, _ in read.records})[0]
        with contextlib.suppress(OSError):
            atomic.write_atomically(path, compact)
            raw = compact
    return read.records, len(raw)


def cut_torn(path: Path, end: int, torn: bytes) -> int:
    """Drop a last line a kill or a power cut left half-written (its call never returned);
    returns the file's length after."""
    log.info("%s: dropped an unfinished last line (%d bytes): a write cut short, never returned", path, len(torn))
    try:
        descriptor = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(descriptor, end)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    except OSError:
        return end + len(torn)  # cut before the next line is appended (``AppendFile``)
    return end


def set_aside(path: Path, raw: bytes, what: str, report: Report) -> None:
    """Keep an unreadable file as ``<name>.corrupt`` (for inspection) and say so."""
    aside = aside_path(path, raw)
    os.replace(path, aside)
    with contextlib.suppress(OSError):
        fsync_directory(path.parent)
    report(StoreProblem(f"{what}; kept as {aside.name}", str(path), None))
