"""The outbox's durable writes: one appended line per change, a rewrite only now and then.

Replacing a whole segment file to add one record (temporary file, rename, two fsyncs, ~30 kB for a
450-byte record) cost 5.6 times what one durable small write costs on the same disk. Here a change
is one line (see ``outbox_lines``) written at the end of its file and fsynced: an append or an
acknowledgement costs one small write and one fsync, whatever the backlog. A file is rewritten
(atomically, ``atomic.write_atomically``) only to compact it, once the lines that hold nothing any
more (records replaced or removed) pass a bound: the cost of that rewrite is spread over the many
changes that made it necessary.

* ``JournalStorage``: the TinyDB storage of one segment. TinyDB hands a storage the whole database
  on every write; this one writes only what changed since the last write, as one line.
* ``HeadJournal``: ``head.json``, the floor (every record below it is delivered) and the next
  sequence number no record has reached, one line per change.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tinydb.storages import Storage

from adapters.storage import atomic
from adapters.storage.outbox_lines import TABLE, CorruptSegment, encode, encode_line, replay, scan_lines, split_lines

log = logging.getLogger(__name__)

COMPACT_BYTES = 8 * 1024  # a segment is rewritten once this much of it holds nothing live
HEAD_COMPACT_BYTES = 16 * 1024  # head.json is rewritten to one line past this size (~450 acks)


class AppendFile:
    """A file that grows by whole lines, each on disk (fsynced) before ``append`` returns.

    A line is written with ``pwrite`` at ``end``, the end of the last good line, not with
    ``O_APPEND``: a write the disk refused half-way (a full disk writes what fits) is cut off
    again at once, and if even that fails the next append cuts it first, so a line never follows
    half a line. A file of the previous format ends without ``\\n``: the first line appended to it
    starts with one. The file must exist (it is created atomically with its first line).
    """

    def __init__(self, path: Path, end: int, size: int, newline: bool) -> None:
        self.path = path
        self.end = end  # bytes of the lines that count
        self._size = size  # bytes in the file: more than ``end`` while a torn or refused write is left
        self._needs_newline = end > 0 and not newline
        self._descriptor: int | None = None

    def append(self, line: bytes) -> None:
        """Write ``line`` (ended by ``\\n``) and fsync it; ``OSError`` if the disk refuses, and
        then the file is as it was (or is cut back at the next append)."""
        data = b"\n" + line if self._needs_newline else line
        if self._descriptor is None:
            self._descriptor = os.open(self.path, os.O_WRONLY)
        descriptor = self._descriptor
        if self._size != self.end:
            os.ftruncate(descriptor, self.end)
            self._size = self.end
        at = self.end
        try:
            view = memoryview(data)
            while view:
                written = os.pwrite(descriptor, view, at)
                if written <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
                at += written
                view = view[written:]
            os.fsync(descriptor)
        except BaseException:
            self._size = -1  # not known: cut back now, or at the next append
            with contextlib.suppress(OSError):
                os.ftruncate(descriptor, self.end)
                self._size = self.end
            raise
        self.end = self._size = at
        self._needs_newline = False

    def close(self) -> None:
        if self._descriptor is not None:
            descriptor, self._descriptor = self._descriptor, None
            os.close(descriptor)


class _Record(dict):  # type: ignore[type-arg]
    """A record as ``JournalStorage`` keeps it: it tells its storage when TinyDB changes it in
    place (``Table.update`` does), so that a write finds what changed without comparing every
    record of the segment. (A change inside a nested value is not seen: the store makes none.)"""

    __slots__ = ("_changed", "_key")

    def __init__(self, fields: dict[str, Any], key: str, changed: set[str]) -> None:
        super().__init__(fields)
        self._key = key
        self._changed = changed

    def __setitem__(self, key: str, value: Any) -> None:
        self._changed.add(self._key)
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self._changed.add(self._key)
        super().__delitem__(key)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._changed.add(self._key)
        super().update(*args, **kwargs)

    def pop(self, *args: Any) -> Any:
        self._changed.add(self._key)
        return super().pop(*args)

    def popitem(self) -> tuple[str, Any]:
        self._changed.add(self._key)
        return super().popitem()

    def setdefault(self, key: str, default: Any = None) -> Any:
        self._changed.add(self._key)
        return super().setdefault(key, default)

    def clear(self) -> None:
        self._changed.add(self._key)
        super().clear()

    def __ior__(self, other: Any) -> _Record:
        self._changed.add(self._key)
        return super().__ior__(other)  # type: ignore[no-any-return]


class JournalStorage(Storage):
    """TinyDB storage of one segment: each write appends what changed as one line.

    TinyDB reads the whole database before every operation and writes it all back after; the
    table stays in memory, so the read is free, and ``write`` puts in its line only the records
    added, changed in place (``_Record`` notes them) and gone. After a write that fails the table
    is read from the disk again (TinyDB may have changed a record in place). Once
    ``compact_bytes`` of the file hold nothing live, the file is rewritten as one line.
    """

    def __init__(self, path: Path, compact_bytes: int = COMPACT_BYTES) -> None:
        self.path = path
        self.compact_bytes = compact_bytes
        self.file_bytes = 0
        self.sizes: dict[str, int] = {}  # bytes each record's latest line takes in the file
        self.compactions = 0
        self.prepared: dict[str, bytes] = {}  # records the caller has encoded already, for the next write
        self._table: dict[str, dict[str, Any]] | None = None  # None: no file yet
        self._changed: set[str] = set()  # records TinyDB changed in place since the last write
        self._dead = 0
        self._compact_at = compact_bytes  # (further after a compaction the disk refused)
        self._file: AppendFile | None = None
        self._loaded = False

    def read(self) -> dict[str, dict[str, Any]] | None:
        if not self._loaded:
            self._load()
        # A new outer dict (TinyDB puts the new table in it); the table itself TinyDB only reads.
        return None if self._table is None else {TABLE: self._table}

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        if set(data) - {TABLE}:
            raise ValueError(f"a segment holds only the {TABLE!r} table")
        if not self._loaded:
            self._load()
        table = data.get(TABLE, {})
        prepared, self.prepared = self.prepared, {}
        changed = set(self._changed)
        self._changed.clear()  # (the same set: every record of the table reports to it)
        try:
            if self._table is None or self._file is None:
                self._create(table)
                return
            changed = (table.keys() - self._table.keys()) | (changed & table.keys())
            removed = sorted(int(key) for key in self._table.keys() - table.keys())
            if not removed and not changed:
                return
            records = {key: prepared.get(key) or table[key] for key in sorted(changed, key=int)}
            line, sizes, dead = encode_line(records, removed)
            self._file.append(line)
        except BaseException:
            self._loaded = False  # records TinyDB changed in place, or a rename done before a failure
            raise
        for seq in removed:
            self._dead += self.sizes.pop(str(seq))
        self._dead += dead + sum(self.sizes.get(key, 0) for key in changed)
        self.sizes.update(sizes)
        self._table = self._records(table, changed)
        self.file_bytes = self._file.end
        if self._dead >= self._compact_at:
            self._compact()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def release(self) -> dict[str, dict[str, Any]]:
        """Close, and hand over the table for the caller to free (see the store's ``_tidy``)."""
        self.close()
        table, self._table, self._loaded = self._table or {}, None, False
        return table

    def _records(self, table: dict[str, dict[str, Any]], keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """``table`` with the records at ``keys`` made ``_Record``s of this storage."""
        for key in keys:
            table[key] = _Record(table[key], key, self._changed)
        return table

    def _create(self, table: dict[str, dict[str, Any]]) -> None:
        """A new segment: written atomically with its first line (never a half-made file)."""
        line, sizes, dead = encode_line(table)
        atomic.write_atomically(self.path, line)
        self._adopt(table, sizes, dead, AppendFile(self.path, len(line), len(line), True))

    def _compact(self) -> None:
        """Rewrite the file as one line. The change that led here is on disk already: a refusal
        is logged, not raised, and the file read again (it holds the same records either way)."""
        assert self._table is not None
        line, sizes, dead = encode_line(self._table)
        try:
            atomic.write_atomically(self.path, line)
        except OSError as exc:
            log.warning("%s: could not compact the outbox segment (%s); tried again later", self.path, exc)
            self._loaded = False
            with contextlib.suppress(OSError, CorruptSegment):
                self._load()
            self._compact_at = self._dead + self.compact_bytes  # after as many changes again
            return
        self._adopt(self._table, sizes, dead, AppendFile(self.path, len(line), len(line), True))
        self._compact_at = self.compact_bytes
        self.compactions += 1

    def _load(self) -> None:
        """Read the file (once; again only after a write whose outcome is not known)."""
        self.close()
        self._changed.clear()
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            self._table, self._file, self.sizes, self._dead, self.file_bytes = None, None, {}, 0, 0
            self._loaded = True
            return
        split = split_lines(raw)
        try:
            lines = scan_lines(split)
        except ValueError as exc:  # the store read it whole at opening: it changed since
            raise CorruptSegment(f"{self.path.name} no longer reads ({exc})") from exc
        table, sizes, dead, _ = replay(lines)
        self._adopt(table, sizes, dead, AppendFile(self.path, split.end, len(raw), split.last_newline))
        self.file_bytes = len(raw)

    def _adopt(self, table: dict[str, Any], sizes: dict[str, int], dead: int, file: AppendFile) -> None:
        self.close()
        self._table = self._records(table, [key for key, fields in table.items() if type(fields) is not _Record])
        self.sizes, self._dead, self._file = sizes, dead, file
        self.file_bytes = file.end
        self._loaded = True


def parse_head_line(text: str) -> tuple[int, int]:
    """``(floor, reserved)`` from a line of ``head.json``; ``ValueError`` if it is not one."""
    try:
        head = json.loads(text)
        floor, reserved = head["floor"], head["reserved"]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a head line ({exc!r})") from exc
    if type(floor) is not int or type(reserved) is not int:
        raise ValueError("floor and reserved must be integers")
    return floor, reserved


class HeadJournal:
    """``head.json``: one ``{"floor": F, "reserved": R}`` line per change; the greatest of each
    is in force (both only grow). Past ``compact_bytes`` it is rewritten as one line."""

    def __init__(self, path: Path, compact_bytes: int = HEAD_COMPACT_BYTES) -> None:
        self.path = path
        self.compact_bytes = compact_bytes
        self.floor = 0
        self.reserved = 0
        self.size_bytes = 0
        self._file: AppendFile | None = None  # None: the next write replaces the file
        self._compact_at = compact_bytes  # (further after a compaction the disk refused)

    def adopt(self, floor: int, reserved: int, end: int, size: int, newline: bool) -> None:
        """Take the state read from the file at opening; lines go on after ``end``."""
        self.floor, self.reserved, self.size_bytes = floor, reserved, size
        self._file = AppendFile(self.path, end, size, newline)

    def write(self, floor: int, reserved: int) -> None:
        """Make ``floor`` and ``reserved`` durable; ``OSError`` leaves memory as it was."""
        line = encode({"floor": floor, "reserved": reserved}) + b"\n"
        if self._file is None:
            self.replace(floor, reserved)
            return
        self._file.append(line)
        self.floor, self.reserved, self.size_bytes = floor, reserved, self._file.end
        if self.size_bytes > self._compact_at:
            try:
                self.replace(floor, reserved)
            except OSError as exc:  # the line is on disk: the acknowledgement stands
                self._compact_at = self.size_bytes + self.compact_bytes  # tried again after as many lines
                log.warning("%s: could not compact (%s); tried again later", self.path, exc)
                with contextlib.suppress(OSError):
                    raw = self.path.read_bytes()
                    split = split_lines(raw, parse_head_line)
                    self.adopt(self.floor, self.reserved, split.end, len(raw), split.last_newline)

    def replace(self, floor: int, reserved: int) -> None:
        """Rewrite the file as one line (creating it, compacting it, or after a refused compaction)."""
        line = encode({"floor": floor, "reserved": reserved}) + b"\n"
        self.close()  # whatever happens, the file open now may not be the one at this path after
        atomic.write_atomically(self.path, line)
        self._file = AppendFile(self.path, len(line), len(line), True)
        self.floor, self.reserved, self.size_bytes = floor, reserved, len(line)
        self._compact_at = self.compact_bytes

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
