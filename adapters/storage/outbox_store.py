"""SegmentedOutboxStore: the outbox's durable FIFO on TinyDB, in bounded segment files of lines.

A single TinyDB file rewrites everything it holds on every insert, so the cost of queueing one
message grows with the backlog (seconds at 50,000 records, see docs/outbox.md). Here the backlog
is cut into segments, each a small TinyDB database of at most ``segment_records`` records, and
every change is one line appended to the file it concerns and fsynced (``outbox_journal``, format
in ``outbox_lines``):

    head.json                 {"floor":F,"reserved":R}            one line per change
    seg-000000000001.json     {"records":{"1":{...}}}              seqs 1 .. 50, one line per change
                              {"records":{"2":{...}}}
                              {"removed":[2]}
    seg-000000000051.json     {"records":{"51":{...}}}             seqs 51 .. 100

* A segment is named after the first sequence number it was opened for and holds seqs below the
  next segment's name. Appending adds a line to the tail segment (a new segment is created
  atomically with its first record).
* Delivering the head adds a line to ``head.json``: every record below ``floor`` is gone,
  wherever it still lies. A segment whose records are all below the floor is deleted.
* Thinning (removing records in the middle) adds a ``removed`` line to the segments that held
  them; counting a failed attempt adds the record's new version.
* ``reserved`` is a sequence number no record has reached yet; it is raised ``RESERVE_AHEAD``
  numbers ahead, so seqs are never reused after a restart, even when the tail was thinned or the
  store emptied.
* A file is rewritten as one line (compacted, atomically) once enough of it holds nothing.

Opening reads every segment to rebuild the in-memory index, so ``index()``, ``len()`` and
``size_bytes()`` never touch the disk. A damaged segment is kept as ``<name>.corrupt`` and replaced
by the records that still read (``outbox_salvage``), reported by ``problems()`` and logged once;
everything is replayed in order. Files of the previous version (one JSON object, rewritten whole)
are read as they are, and grow by lines from then on.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import json
import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.table import Document, Table

from adapters.storage.atomic import TEMPORARY_SUFFIX, fsync_directory
from adapters.storage.outbox_journal import (
    COMPACT_BYTES,
    HEAD_COMPACT_BYTES,
    HeadJournal,
    JournalStorage,
)
from adapters.storage.outbox_lines import (
    TABLE,
    CorruptSegment,
    encode,
    fields_of,
    to_info,
    to_record,
)
from adapters.storage.outbox_opening import read_head, read_segment_file
from adapters.storage.outbox_salvage import SalvageLater
from adapters.storage.private import make_private_directory
from gateway.domain.outbox import NewRecord, OutboxRecord, RecordInfo, StoreProblem

log = logging.getLogger(__name__)

DEFAULT_SEGMENT_RECORDS = 50  # ~25 kB of MeterValues: TinyDB's work per call grows with it, see docs/outbox.md
HEAD_NAME = "head.json"
SEGMENT_NAME = re.compile(r"seg-(\d{12,})\.json", re.ASCII)
ASIDE_NAME = re.compile(r"(?:head\.json|seg-\d{12,}\.json)\.corrupt(?:\.\d+)?", re.ASCII)
OPEN_SEGMENTS = 4  # TinyDB handles kept (head and tail, plus room while thinning)
# Records of segments no longer cached freed per call, and how many such segments may wait (see ``_tidy``).
FREED_PER_CALL = 4
RETIRED_WAITING = 4
# How far ``reserved`` is raised ahead of the tail: a line in head.json once per this many appends,
# and at most this many numbers skipped after a restart.
RESERVE_AHEAD = 1000


@dataclass
class _Segment:
    start: int
    path: Path
    seqs: set[int] = field(default_factory=set)  # every record in the file, also those below the floor
    size_bytes: int = 0


class SegmentedOutboxStore:
    """Implements the ``OutboxStore`` port (gateway.domain.outbox) in ``directory``.

    Every change is on disk before the method returns; a disk error (``OSError``) is raised to
    the caller and leaves memory as the disk is. The store belongs to one owner: it is not
    thread-safe, and two stores must not share a directory. ``compact_bytes`` and
    ``head_compact_bytes`` (how much of a file may hold nothing before it is rewritten) are there
    for the tests, which compact often.
    """

    def __init__(
        self,
        directory: Path,
        segment_records: int = DEFAULT_SEGMENT_RECORDS,
        *,
        compact_bytes: int = COMPACT_BYTES,
        head_compact_bytes: int = HEAD_COMPACT_BYTES,
    ) -> None:
        if segment_records < 1:
            raise ValueError("segment_records must be at least 1")
        self.directory = directory
        self.segment_records = segment_records
        self.compact_bytes = compact_bytes
        self._head = HeadJournal(directory / HEAD_NAME, head_compact_bytes)
        self._index: OrderedDict[int, RecordInfo] = OrderedDict()
        self._segments: dict[int, _Segment] = {}
        self._starts: list[int] = []  # sorted names of the segments on disk
        self._open: OrderedDict[int, TinyDB] = OrderedDict()
        self._retired: list[dict[str, Any]] = []  # tables of segments no longer cached, to free
        self._problems: list[StoreProblem] = []
        self._next_seq = 1
        make_private_directory(directory)  # 0700, its files 0600 (atomic, private): they hold id tags
        self._recover()

    @property
    def _floor(self) -> int:
        return self._head.floor

    # -- the port -------------------------------------------------------------------------------------
    def append(self, record: NewRecord) -> OutboxRecord:
        """Queue ``record`` at the tail; returns once its line is on disk."""
        encoded = encode(fields_of(record))
        fields = json.loads(encoded)  # a private copy, as it will read back
        seq = self._next_seq
        try:
            to_record(seq, fields, private=False)  # what would not read back must not be written
        except CorruptSegment as exc:
            raise ValueError(f"not a storable record: {exc}") from None
        if seq >= self._head.reserved:
            self._head.write(self._floor, seq + max(RESERVE_AHEAD, self.segment_records))
        tail = self._segments[self._starts[-1]] if self._starts else None
        if tail is None or seq - tail.start >= self.segment_records:
            tail = _Segment(seq, self.directory / f"seg-{seq:012d}.json")
            self._segments[seq] = tail
            self._starts.append(seq)
        self._next_seq = seq + 1  # spent even if the write fails: it may have reached the disk
        self._storage(tail).prepared[str(seq)] = encoded  # (spares encoding it again)
        self._write(tail, lambda table: table.insert(Document(fields, doc_id=seq)))
        tail.seqs.add(seq)
        self._index[seq] = to_info(seq, fields, self._storage(tail).sizes[str(seq)])
        self._tidy()
        return to_record(seq, fields)

    def head(self) -> OutboxRecord | None:
        """The oldest record, read from its segment (which stays cached)."""
        seq = next(iter(self._index), None)
        return None if seq is None else self.record(seq)

    def record(self, seq: int) -> OutboxRecord | None:
        """The queued record numbered ``seq`` (None if it is not queued), read from its segment."""
        if seq not in self._index:
            return None
        fields = self._table(self._segment_of(seq)).get(doc_id=seq)
        assert isinstance(fields, dict), f"record {seq} is indexed but not in its segment"
        return to_record(seq, fields)

    def remove(self, seqs: Iterable[int]) -> None:
        """Forget these records; unknown seqs are ignored (removing twice is harmless).

        Removing the head costs one line in ``head.json``; removing records further in costs one
        line in each segment that holds them (a segment left empty is deleted instead).
        """
        doomed = {seq for seq in seqs if seq in self._index}
        if not doomed:
            return
        if next(iter(self._index)) in doomed:
            floor = next((seq for seq in self._index if seq not in doomed), self._next_seq)
            self._head.write(floor, self._head.reserved)
            while self._index and next(iter(self._index)) < floor:
                doomed.discard(self._index.popitem(last=False)[0])
        by_segment: dict[int, set[int]] = {}
        for seq in doomed:
            by_segment.setdefault(self._segment_of(seq).start, set()).add(seq)
        deleted = False
        for start, gone in sorted(by_segment.items()):
            deleted |= self._thin(self._segments[start], gone)
        if deleted:
            fsync_directory(self.directory)
        # Not fsynced: a dead segment that comes back after a power cut is below the floor and
        # is deleted again at the next opening.
        self._drop_dead_segments()
        self._tidy()

    def set_attempts(self, seq: int, attempts: int) -> None:
        """Store the failed-send count of a queued record (``KeyError`` if it is not queued)."""
        if seq not in self._index:
            raise KeyError(seq)
        if type(attempts) is not int or attempts < 0:
            raise ValueError(f"attempts must be a non-negative int, not {attempts!r}")
        segment = self._segment_of(seq)
        self._write(segment, lambda table: table.update({"attempts": attempts}, doc_ids=[seq]))
        fields = self._table(segment).get(doc_id=seq)
        assert isinstance(fields, dict)
        self._index[seq] = to_info(seq, fields, self._storage(segment).sizes[str(seq)])

    def index(self) -> list[RecordInfo]:
        """Every record's metadata in order, from memory."""
        return list(self._index.values())

    def first(self, count: int) -> list[RecordInfo]:
        """The ``count`` oldest records' metadata, from memory, without copying the whole index."""
        return list(itertools.islice(self._index.values(), max(0, count)))

    def __len__(self) -> int:
        return len(self._index)

    def size_bytes(self) -> int:
        """Bytes of the segment files and ``head.json``, as last written (no disk read).

        Delivered records still in the head segment count until that segment is deleted, and
        lines that hold nothing any more until their file is compacted.
        """
        return self._head.size_bytes + sum(segment.size_bytes for segment in self._segments.values())

    def problems(self) -> list[StoreProblem]:
        """Segments (or a head file) found damaged at opening, salvaged or moved aside."""
        return list(self._problems)

    # -- writing --------------------------------------------------------------------------------------
    def _write(self, segment: _Segment, change: Callable[[Table], object]) -> None:
        """Apply ``change`` to the segment's TinyDB table; after a failure, believe the disk."""
        storage = self._storage(segment)
        compactions = storage.compactions
        try:
            change(self._table(segment))
        except BaseException:
            self._resync(segment)
            raise
        finally:
            segment.size_bytes = storage.file_bytes
        if storage.compactions != compactions:  # rewritten as one line: records take fewer bytes
            for seq in segment.seqs:
                info, size = self._index.get(seq), storage.sizes.get(str(seq))
                if info is not None and size is not None:
                    self._index[seq] = dataclasses.replace(info, size_bytes=size)

    def _thin(self, segment: _Segment, gone: set[int]) -> bool:
        """Remove ``gone`` from a segment (and delivered leftovers with them), or delete it if
        nothing would be left (then True: the caller fsyncs the directory)."""
        gone = gone | {seq for seq in segment.seqs if seq < self._floor}
        deleted = gone >= segment.seqs
        if deleted:
            self._delete(segment)
        else:
            self._write(segment, lambda table: table.remove(doc_ids=sorted(gone)))
            segment.seqs -= gone
        for seq in gone:
            self._index.pop(seq, None)
        return deleted

    def _drop_dead_segments(self) -> None:
        """Delete leading segments that hold nothing at or above the floor."""
        while self._starts:
            segment = self._segments[self._starts[0]]
            if segment.seqs and max(segment.seqs) >= self._floor:
                return
            self._delete(segment)

    def _delete(self, segment: _Segment) -> None:
        """Unlink a segment (its directory is fsynced by the caller) and forget it."""
        self._forget(segment)
        segment.path.unlink(missing_ok=True)

    def _forget(self, segment: _Segment) -> None:
        db = self._open.pop(segment.start, None)
        if db is not None:
            self._retire(db)
        del self._segments[segment.start]
        self._starts.remove(segment.start)

    def _resync(self, segment: _Segment) -> None:
        """After a failed write, make memory what the segment file holds (a new segment's rename
        may have happened before the directory fsync failed)."""
        storage = self._storage(segment)
        try:
            stored = (storage.read() or {}).get(TABLE, {})
        except (OSError, CorruptSegment):
            return  # the disk is away: keep the view of the last good write
        on_disk = {int(seq) for seq in stored}
        for seq in segment.seqs - on_disk:
            self._index.pop(seq, None)
        for seq in sorted(on_disk - segment.seqs):  # only an append can add, at the tail
            if seq >= self._floor:
                self._index[seq] = to_info(seq, stored[str(seq)], storage.sizes[str(seq)])
        segment.seqs = on_disk
        segment.size_bytes = storage.file_bytes
        if not on_disk and not segment.path.exists():
            self._forget(segment)

    # -- segments -------------------------------------------------------------------------------------
    def _segment_of(self, seq: int) -> _Segment:
        return self._segments[self._starts[bisect.bisect_right(self._starts, seq) - 1]]

    def _db(self, segment: _Segment) -> TinyDB:
        db = self._open.pop(segment.start, None)
        if db is None:  # (not `or`: an empty TinyDB is falsy)
            db = TinyDB(segment.path, storage=JournalStorage, compact_bytes=self.compact_bytes)
        self._open[segment.start] = db
        while len(self._open) > OPEN_SEGMENTS:
            self._retire(self._open.popitem(last=False)[1])
        return db

    def _retire(self, db: TinyDB) -> None:
        """Close a segment's TinyDB; its records are freed a few per call (``_tidy``)."""
        storage = db.storage
        assert isinstance(storage, JournalStorage)
        self._retired.append(storage.release())
        db.close()
        if len(self._retired) > RETIRED_WAITING:  # (thinning through many segments: free them now)
            del self._retired[0]

    def _tidy(self) -> None:
        """Free a few records of the segments no longer cached. Freeing a segment's 50 records
        at once, long after they were made (memory the CPU cache has forgotten), takes ~0.1 ms:
        as much as the rest of the call that starts a segment or reads one."""
        for _ in range(FREED_PER_CALL):
            if not self._retired:
                return
            if self._retired[-1]:
                self._retired[-1].popitem()
            else:
                self._retired.pop()

    def _table(self, segment: _Segment) -> Table:
        return self._db(segment).table(TABLE, cache_size=0)

    def _storage(self, segment: _Segment) -> JournalStorage:
        storage = self._db(segment).storage
        assert isinstance(storage, JournalStorage)
        return storage

    # -- opening --------------------------------------------------------------------------------------
    def _recover(self) -> None:
        """Rebuild the index from the files; set aside what cannot be read; remove kill leftovers."""
        names = sorted(path.name for path in self.directory.iterdir())
        for name in names:
            stem = name.removesuffix(TEMPORARY_SUFFIX)
            leftover = self.directory / name
            ours = stem == HEAD_NAME or SEGMENT_NAME.fullmatch(stem) or ASIDE_NAME.fullmatch(stem)
            if stem != name and ours and leftover.is_file():
                leftover.unlink()  # a write a kill cut short: it never returned
        segments_exist = any(SEGMENT_NAME.fullmatch(name) for name in names)
        read_head(self.directory / HEAD_NAME, self._head, segments_exist, self._report)
        starts = sorted(int(match[1]) for name in names if (match := SEGMENT_NAME.fullmatch(name)))
        highest = max(self._floor - 1, 0)
        for i, start in enumerate(starts):
            highest = max(highest, start)
            end = starts[i + 1] if i + 1 < len(starts) else None
            segment = _Segment(start, self.directory / f"seg-{start:012d}.json")
            try:
                records = self._read_segment(segment, end)
            except SalvageLater as later:  # left as it is for now: numbers go on after it
                self._report(later.problem)
                highest = max(highest, later.highest_seq, start + self.segment_records - 1)
                continue
            if records is None:  # damaged, and nothing in it could be read: set aside
                continue
            self._segments[start] = segment
            self._starts.append(start)
            for seq, fields, size in records:
                highest = max(highest, seq)
                if seq >= self._floor:
                    self._index[seq] = to_info(seq, fields, size)
        self._next_seq = max(self._head.reserved, highest + 1, self._floor, 1)
        dead = len(self._starts)
        self._drop_dead_segments()
        if len(self._starts) != dead:
            fsync_directory(self.directory)

    def _read_segment(self, segment: _Segment, end: int | None) -> list[tuple[int, dict[str, Any], int]] | None:
        """The records of a segment file (see ``outbox_opening.read_segment_file``); None if
        nothing in it could be read."""
        read = read_segment_file(segment.path, segment.start, end, self._floor, self._report)
        if read is None:
            return None
        records, segment.size_bytes = read
        segment.seqs = {seq for seq, _, _ in records}
        return records

    def _report(self, problem: StoreProblem) -> None:
        log.warning("%s: %s", problem.path, problem.what)  # (the counts are in ``what``)
        self._problems.append(problem)
