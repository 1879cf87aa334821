"""SegmentedOutboxStore: the outbox's durable FIFO on TinyDB, in bounded segment files.

A single TinyDB file rewrites everything it holds on every insert, so the cost of queueing one
message grows with the backlog (hundreds of milliseconds at 10,000 records, see docs/outbox.md),
and a kill during that rewrite leaves a file TinyDB cannot open. Here the backlog is cut into segments, each a small
TinyDB database of at most ``segment_records`` records, written atomically (see ``atomic``):

    head.json                 {"floor": F, "reserved": R}
    seg-000000000001.json     {"records": {"1": {...}, "2": {...}, ...}}   seqs 1 .. 50
    seg-000000000051.json     {"records": {"51": {...}, ...}}              seqs 51 .. 100

* A segment is named after the first sequence number it was opened for and holds seqs below the
  next segment's name. Appending rewrites only the tail segment.
* Delivering the head rewrites only ``head.json``: every record below ``floor`` is gone, wherever
  it still lies. A segment whose records are all below the floor is deleted.
* Thinning (removing records in the middle) rewrites only the segments that held them.
* ``reserved`` is a sequence number no record has reached yet; it is raised one segment ahead,
  so seqs are never reused after a restart, even when the tail was thinned or the store emptied.

Opening reads every segment to rebuild the in-memory index, so ``index()``, ``len()`` and
``size_bytes()`` never touch the disk. A damaged segment (cut short, garbage in it, a malformed
record) is kept as ``<name>.corrupt`` for inspection and replaced by the records that still read
(see ``_salvage_scan``), reported by ``problems()`` and logged once; everything is replayed in
order. A StopTransaction must not be lost with the 49 records beside it.
"""

from __future__ import annotations

import bisect
import contextlib
import copy
import itertools
import json
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.storages import Storage
from tinydb.table import Document, Table

from adapters.storage.atomic import TEMPORARY_SUFFIX, fsync_directory, write_atomically
from adapters.storage.private import make_private_directory
from gateway.domain.outbox import NewRecord, OutboxRecord, RecordInfo, RecordKind, StoreProblem

log = logging.getLogger(__name__)

DEFAULT_SEGMENT_RECORDS = 50  # ~30 kB segments: appends ~1.5 ms here, see docs/outbox.md
HEAD_NAME = "head.json"
TABLE = "records"
SEGMENT_NAME = re.compile(r"seg-(\d{12,})\.json", re.ASCII)
ASIDE_NAME = re.compile(r"(?:head\.json|seg-\d{12,}\.json)\.corrupt(?:\.\d+)?", re.ASCII)
SEQ = re.compile(r"[1-9]\d*", re.ASCII)
OPEN_SEGMENTS = 4  # TinyDB handles kept (head and tail, plus room while thinning)


class CorruptSegment(ValueError):
    """A segment file, or a record in it, that does not hold what this store writes."""


def _encode(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode("utf-8")


class AtomicSegmentStorage(Storage):
    """TinyDB storage of one segment: replaced atomically on each write, cached in memory.

    TinyDB reads the whole database before every operation; the cache makes that free. After a
    failed write the cache is dropped, since the rename may or may not have happened: the next
    read believes the disk. ``sync_directory`` is turned off while the store rewrites several
    segments, which then fsyncs their directory once.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size_bytes = 0
        self.sync_directory = True
        self._data: dict[str, dict[str, Any]] | None = None
        self._loaded = False

    def read(self) -> dict[str, dict[str, Any]] | None:
        if not self._loaded:
            self._data = self._load()
            self._loaded = True
        # A shallow copy: TinyDB replaces the table in the dict it is given, and a failed write
        # must not leave that half-done change in the cache.
        return None if self._data is None else dict(self._data)

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        try:
            raw = _encode(data)
            write_atomically(self.path, raw, sync_directory=self.sync_directory)
        except BaseException:
            self._loaded = False
            self._data = None
            raise
        self._data = data
        self.size_bytes = len(raw)

    def _load(self) -> dict[str, dict[str, Any]] | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            self.size_bytes = 0
            return None
        self.size_bytes = len(raw)
        try:
            data = json.loads(raw)
        except ValueError as exc:  # truncated, garbage, not UTF-8
            raise CorruptSegment(f"not JSON ({exc})") from exc
        if not isinstance(data, dict) or set(data) - {TABLE} or not isinstance(data.get(TABLE, {}), dict):
            raise CorruptSegment(f'not a {{"{TABLE}": {{...}}}} object')
        return data


def _fields(record: NewRecord) -> dict[str, Any]:
    return {
        "kind": RecordKind(record.kind).value,
        "action": record.action,
        "payload": record.payload,
        "created_at": record.created_at,
        "local_ref": record.local_ref,
        "attempts": 0,
    }


def _record(seq: int, fields: dict[str, Any], *, private: bool = True) -> OutboxRecord:
    """A record from its stored fields; ``CorruptSegment`` if they are not what we write.

    ``private`` copies the payload: the caller may change what it gets, the cache must not.
    """
    try:
        record = OutboxRecord(
            seq,
            RecordKind(fields["kind"]),
            fields["action"],
            copy.deepcopy(fields["payload"]) if private else fields["payload"],
            fields["created_at"],
            fields["local_ref"],
            fields["attempts"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptSegment(f"record {seq} is malformed ({exc!r})") from exc
    if not (
        isinstance(record.action, str)
        and isinstance(record.payload, dict)
        and isinstance(record.created_at, str)
        and (record.local_ref is None or isinstance(record.local_ref, str))
        and type(record.attempts) is int
        and record.attempts >= 0
    ):
        raise CorruptSegment(f"record {seq} has a field of the wrong type")
    return record


def _size(seq: int, encoded_bytes: int) -> int:
    """What a record adds to its segment file: ``"seq":{...},``."""
    return encoded_bytes + len(str(seq)) + 4


def _info(seq: int, fields: dict[str, Any], size_bytes: int | None = None) -> RecordInfo:
    if size_bytes is None:
        size_bytes = _size(seq, len(_encode(fields)))
    return RecordInfo(seq, RecordKind(fields["kind"]), fields["created_at"], fields["local_ref"], size_bytes)


_DECODER = json.JSONDecoder()
_SPACE_CHARS = " \t\n\r"
_SPACE = re.compile(f"[{_SPACE_CHARS}]*")
_TABLE_START = re.compile(f'[{_SPACE_CHARS}]*\\{{[{_SPACE_CHARS}]*"{TABLE}"[{_SPACE_CHARS}]*:[{_SPACE_CHARS}]*\\{{')
_RECORD_START = re.compile(f'"[1-9][0-9]*"[{_SPACE_CHARS}]*:[{_SPACE_CHARS}]*\\{{')
_UNDECODABLE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8 (decoded with surrogateescape)


def _scan_segment(raw: bytes) -> list[tuple[str, Any, int]]:
    """Parse ``{"records": {"<seq>": {...}, ...}}`` into (key, fields, size in the file).

    Opening reads every record of the backlog; measuring each record where it lies costs far less
    than encoding it again (half of the opening time at 50,000 records). ``ValueError`` on
    anything else, including a file cut short.
    """
    text = raw.decode("utf-8")

    def skip(at: int) -> int:  # compact files (ours) have no whitespace: skip the regex then
        if text[at : at + 1] not in _SPACE_CHARS:
            return at
        return _SPACE.match(text, at).end()  # type: ignore[union-attr]  # matches the empty string

    def expect(at: int, char: str) -> int:
        at = skip(at)
        if text[at : at + 1] != char:
            raise ValueError(f"expected {char!r} at character {at}")
        return at + 1

    records: list[tuple[str, Any, int]] = []
    at = expect(0, "{")
    if text[skip(at) : skip(at) + 1] != "}":  # an empty database is {}
        key, at = _DECODER.raw_decode(text, skip(at))
        if key != TABLE:
            raise ValueError(f"unexpected table {key!r}")
        at = expect(expect(at, ":"), "{")
        more = text[skip(at) : skip(at) + 1] != "}"
        while more:
            key, at = _DECODER.raw_decode(text, skip(at))
            start = skip(expect(at, ":"))
            fields, at = _DECODER.raw_decode(text, start)
            if not isinstance(key, str) or not isinstance(fields, dict):
                raise ValueError(f"record {key!r} is not an object")
            records.append((key, fields, at - start + len(key) + 4))  # as _size: "key":{...},
            at = skip(at)
            more = text[at : at + 1] == ","
            at += more
        at = expect(at, "}")
    if skip(expect(at, "}")) != len(text):
        raise ValueError("data after the end")
    if len({key for key, _, _ in records}) != len(records):
        raise ValueError("a record appears twice")
    return records


def _salvage_scan(raw: bytes) -> tuple[list[tuple[str, Any, int]], bool]:
    """Every record that still reads in a damaged segment, and whether the whole table was read.

    Walks the table record by record as ``_scan_segment`` does; where a record does not read (the
    file was cut, bytes were overwritten), it looks for the next ``"<seq>":{`` further on and goes
    on from there, so records after a garbled one are kept too. What is found there is only a
    candidate: the caller keeps it only if it is a well-formed record of this segment. The flag is
    False when some part of the file could not be read, so records in it cannot be counted.
    Bytes that are not UTF-8 make the record they are in unreadable, never part of a payload.
    """
    text = raw.decode("utf-8", "surrogateescape")

    def skip(at: int) -> int:
        return _SPACE.match(text, at).end()  # type: ignore[union-attr]  # matches the empty string

    records: list[tuple[str, Any, int]] = []
    table = _TABLE_START.match(text)
    whole = table is not None  # no part of the table left unread so far
    at: int | None = None if table is None else skip(table.end())  # where a record should start
    if at is not None and text[at : at + 1] == "}":  # an empty table: nothing to salvage
        return records, True
    while True:
        if at is not None:
            try:
                key, end = _DECODER.raw_decode(text, at)
                start = skip(end)
                if text[start : start + 1] != ":":
                    raise ValueError("no ':' after the key")
                start = skip(start + 1)
                fields, end = _DECODER.raw_decode(text, start)
                if not isinstance(key, str) or not isinstance(fields, dict) or _UNDECODABLE.search(text, at, end):
                    raise ValueError("not a record")
                records.append((key, fields, end - start + len(key) + 4))
                at = skip(end)
                if text[at : at + 1] == ",":
                    at = skip(at + 1)
                    continue
                if text[at : at + 1] == "}" and whole:
                    return records, True  # the end of the table: what follows holds no records
            except ValueError:  # (JSONDecodeError is one)
                pass
        whole = False
        found = _RECORD_START.search(text, 0 if at is None else at + 1)
        if found is None:
            return records, False
        at = found.start()


def _check_records(
    table: list[tuple[str, Any, int]], start: int, end: int | None
) -> tuple[list[tuple[int, dict[str, Any], int]], dict[str, str]]:
    """The records of a segment that are well formed and belong in it, in seq order, and why
    each other key was refused (a second copy of a kept seq is refused, not lost)."""
    kept: dict[int, tuple[int, dict[str, Any], int]] = {}
    refused: dict[str, str] = {}
    for key, fields, size in table:
        seq = int(key) if SEQ.fullmatch(key) else -1  # (below every segment)
        try:
            if seq < start or (end is not None and seq >= end):
                raise CorruptSegment(f"record {key!r} does not belong in this segment")
            if seq in kept:
                raise CorruptSegment(f"record {key} appears twice")
            _record(seq, fields, private=False)
        except CorruptSegment as exc:
            refused.setdefault(key, str(exc))
            continue
        kept[seq] = (seq, fields, size)
    for key in [key for key in refused if SEQ.fullmatch(key) and int(key) in kept]:
        del refused[key]  # a second copy of a record that was kept
    return sorted(kept.values(), key=lambda record: record[0]), refused


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
    thread-safe, and two stores must not share a directory.
    """

    def __init__(self, directory: Path, segment_records: int = DEFAULT_SEGMENT_RECORDS) -> None:
        if segment_records < 1:
            raise ValueError("segment_records must be at least 1")
        self.directory = directory
        self.segment_records = segment_records
        self._index: OrderedDict[int, RecordInfo] = OrderedDict()
        self._segments: dict[int, _Segment] = {}
        self._starts: list[int] = []  # sorted names of the segments on disk
        self._open: OrderedDict[int, TinyDB] = OrderedDict()
        self._problems: list[StoreProblem] = []
        self._floor = 0
        self._reserved = 0
        self._head_bytes = 0
        self._next_seq = 1
        make_private_directory(directory)  # 0700, its segments 0600 (write_atomically): they hold id tags
        self._recover()

    # -- the port -------------------------------------------------------------------------------------
    def append(self, record: NewRecord) -> OutboxRecord:
        """Queue ``record`` at the tail; returns once its segment is on disk."""
        encoded = _encode(_fields(record))
        fields = json.loads(encoded)  # a private copy, as it will read back
        seq = self._next_seq
        try:
            _record(seq, fields, private=False)  # what would not read back must not be written
        except CorruptSegment as exc:
            raise ValueError(f"not a storable record: {exc}") from None
        if seq >= self._reserved:
            self._write_head(self._floor, seq + self.segment_records)
        tail = self._segments[self._starts[-1]] if self._starts else None
        if tail is None or seq - tail.start >= self.segment_records:
            tail = _Segment(seq, self.directory / f"seg-{seq:012d}.json")
            self._segments[seq] = tail
            self._starts.append(seq)
        self._next_seq = seq + 1  # spent even if the write fails: it may have reached the disk
        self._write(tail, lambda table: table.insert(Document(fields, doc_id=seq)))
        tail.seqs.add(seq)
        self._index[seq] = _info(seq, fields, _size(seq, len(encoded)))
        return _record(seq, fields)

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
        return _record(seq, fields)

    def remove(self, seqs: Iterable[int]) -> None:
        """Forget these records; unknown seqs are ignored (removing twice is harmless).

        Removing the head costs one small write of ``head.json``; removing records further in
        rewrites the segments that hold them, with one directory fsync for all of them.
        """
        doomed = {seq for seq in seqs if seq in self._index}
        if not doomed:
            return
        if next(iter(self._index)) in doomed:
            floor = next((seq for seq in self._index if seq not in doomed), self._next_seq)
            self._write_head(floor, self._reserved)
            while self._index and next(iter(self._index)) < floor:
                doomed.discard(self._index.popitem(last=False)[0])
        by_segment: dict[int, set[int]] = {}
        for seq in doomed:
            by_segment.setdefault(self._segment_of(seq).start, set()).add(seq)
        for start, gone in sorted(by_segment.items()):
            self._thin(self._segments[start], gone)
        if by_segment:
            fsync_directory(self.directory)
        # Not fsynced: a dead segment that comes back after a power cut is below the floor and
        # is deleted again at the next opening.
        self._drop_dead_segments()

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
        self._index[seq] = _info(seq, fields)

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

        Delivered records still in the head segment count until that segment is deleted.
        """
        return self._head_bytes + sum(segment.size_bytes for segment in self._segments.values())

    def problems(self) -> list[StoreProblem]:
        """Segments (or a head file) found unreadable at opening and moved aside."""
        return list(self._problems)

    # -- writing --------------------------------------------------------------------------------------
    def _write_head(self, floor: int, reserved: int) -> None:
        raw = _encode({"floor": floor, "reserved": reserved})
        write_atomically(self.directory / HEAD_NAME, raw)
        self._floor, self._reserved, self._head_bytes = floor, reserved, len(raw)

    def _write(self, segment: _Segment, change: Callable[[Table], object], *, sync_directory: bool = True) -> None:
        """Apply ``change`` to the segment's TinyDB table; after a failure, believe the disk."""
        db = self._db(segment)
        storage: AtomicSegmentStorage = db.storage  # type: ignore[assignment]
        storage.sync_directory = sync_directory
        try:
            change(db.table(TABLE, cache_size=0))
        except BaseException:
            self._resync(segment)
            raise
        finally:
            storage.sync_directory = True
        segment.size_bytes = storage.size_bytes

    def _thin(self, segment: _Segment, gone: set[int]) -> None:
        """Remove ``gone`` from a segment (and delivered leftovers with them), or delete it."""
        gone = gone | {seq for seq in segment.seqs if seq < self._floor}
        if gone >= segment.seqs:
            self._delete(segment)
        else:
            self._write(segment, lambda table: table.remove(doc_ids=sorted(gone)), sync_directory=False)
            segment.seqs -= gone
        for seq in gone:
            self._index.pop(seq, None)

    def _drop_dead_segments(self) -> None:
        """Delete leading segments that hold nothing at or above the floor."""
        while self._starts:
            segment = self._segments[self._starts[0]]
            if segment.seqs and max(segment.seqs) >= self._floor:
                return
            self._delete(segment)

    def _delete(self, segment: _Segment) -> None:
        """Unlink a segment (its directory is fsynced by the caller) and forget it."""
        segment.path.unlink(missing_ok=True)
        self._forget(segment)

    def _forget(self, segment: _Segment) -> None:
        self._open.pop(segment.start, None)
        del self._segments[segment.start]
        self._starts.remove(segment.start)

    def _resync(self, segment: _Segment) -> None:
        """After a failed write, make memory what the segment file holds (the rename may have
        happened before the directory fsync failed)."""
        storage: AtomicSegmentStorage = self._db(segment).storage  # type: ignore[assignment]
        try:
            stored = (storage.read() or {}).get(TABLE, {})
        except (OSError, CorruptSegment):
            return  # the disk is away: keep the view of the last good write
        on_disk = {int(seq) for seq in stored}
        for seq in segment.seqs - on_disk:
            self._index.pop(seq, None)
        for seq in sorted(on_disk - segment.seqs):  # only an append can add, at the tail
            if seq >= self._floor:
                self._index[seq] = _info(seq, stored[str(seq)])
        segment.seqs = on_disk
        segment.size_bytes = storage.size_bytes
        if not on_disk and not segment.path.exists():
            self._forget(segment)

    # -- segments -------------------------------------------------------------------------------------
    def _segment_of(self, seq: int) -> _Segment:
        return self._segments[self._starts[bisect.bisect_right(self._starts, seq) - 1]]

    def _db(self, segment: _Segment) -> TinyDB:
        db = self._open.pop(segment.start, None)
        if db is None:  # (not `or`: an empty TinyDB is falsy)
            db = TinyDB(segment.path, storage=AtomicSegmentStorage)
        self._open[segment.start] = db
        while len(self._open) > OPEN_SEGMENTS:
            self._open.popitem(last=False)
        return db

    def _table(self, segment: _Segment) -> Table:
        return self._db(segment).table(TABLE, cache_size=0)

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
        self._read_head()
        starts = sorted(int(match[1]) for name in names if (match := SEGMENT_NAME.fullmatch(name)))
        highest = max(self._floor - 1, 0)
        for i, start in enumerate(starts):
            highest = max(highest, start)
            end = starts[i + 1] if i + 1 < len(starts) else None
            segment = _Segment(start, self.directory / f"seg-{start:012d}.json")
            try:
                records = self._read_segment(segment, end)
            except _SalvageLater as later:  # left as it is for now: numbers go on after it
                highest = max(highest, later.highest_seq, start + self.segment_records - 1)
                continue
            if records is None:  # damaged, and nothing in it could be read: set aside
                continue
            self._segments[start] = segment
            self._starts.append(start)
            for seq, fields, size in records:
                highest = max(highest, seq)
                if seq >= self._floor:
                    self._index[seq] = _info(seq, fields, size)
        self._next_seq = max(self._reserved, highest + 1, self._floor, 1)
        dead = len(self._starts)
        self._drop_dead_segments()
        if len(self._starts) != dead:
            fsync_directory(self.directory)

    def _read_head(self) -> None:
        path = self.directory / HEAD_NAME
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            if any(SEGMENT_NAME.fullmatch(p.name) for p in self.directory.iterdir()):
                self._report(StoreProblem(f"{HEAD_NAME} missing: delivered records may be sent again", str(path)))
            return
        try:
            head = json.loads(raw)
            floor, reserved = head["floor"], head["reserved"]
            if type(floor) is not int or type(reserved) is not int:
                raise ValueError("floor and reserved must be integers")
        except (ValueError, KeyError, TypeError) as exc:
            self._set_aside(path, f"{HEAD_NAME} unreadable ({exc!r}): delivered records may be sent again", None)
            return
        self._floor, self._reserved, self._head_bytes = floor, reserved, len(raw)

    def _read_segment(self, segment: _Segment, end: int | None) -> list[tuple[int, dict[str, Any], int]] | None:
        """The records of a segment file in order with their sizes; a damaged file is salvaged
        first (see ``_salvage``); None if nothing in it could be read."""
        raw = segment.path.read_bytes()
        damage: str | None = None
        try:
            table, whole = _scan_segment(raw), True
        except ValueError as exc:  # (UnicodeDecodeError and JSONDecodeError are ValueErrors)
            table, whole = _salvage_scan(raw)
            damage = f"not a segment ({exc})" if raw else "empty file, 0 bytes"
        records, refused = _check_records(table, segment.start, end)
        if damage is None and refused:
            damage = next(iter(refused.values())) + (f" and {len(refused) - 1} more" if len(refused) > 1 else "")
        if damage is not None:
            salvaged = self._salvage(segment.path, raw, records, refused, whole, damage)
            if salvaged is None:
                return None
            raw = salvaged
            records, _ = _check_records(_scan_segment(raw), segment.start, end)
        segment.seqs = {seq for seq, _, _ in records}
        segment.size_bytes = len(raw)
        return records

    def _salvage(
        self,
        path: Path,
        raw: bytes,
        records: list[tuple[int, dict[str, Any], int]],
        refused: dict[str, str],
        whole: bool,
        damage: str,
    ) -> bytes | None:
        """Keep a damaged segment as ``.corrupt`` and put back the records that still read.

        Returns the segment as rewritten, or None if nothing could be read (the file is then only
        moved aside). The copy is on disk before the segment is replaced: a kill in between
        leaves the damaged segment, salvaged again at the next opening (into the same copy).
        Records lost are counted only when the whole table could be read (``whole``).
        """
        salvaged = sum(1 for seq, _, _ in records if seq >= self._floor)
        if whole:
            lost = sum(1 for key in refused if not SEQ.fullmatch(key) or int(key) >= self._floor)
            outcome = f"{salvaged} records salvaged, {lost} lost"
        elif raw:
            lost = None
            outcome = f"{salvaged} records salvaged, those in the unreadable part are lost and cannot be counted"
        else:
            lost = None
            outcome = "nothing to salvage, the records it held cannot be counted"
        aside = _aside_path(path, raw)
        rewritten: bytes | None = None
        if not records:
            os.replace(path, aside)
            with contextlib.suppress(OSError):
                fsync_directory(self.directory)
            kept = f"kept as {aside.name}"
        else:
            rewritten = _encode({TABLE: {str(seq): fields for seq, fields, _ in records}})
            try:
                if not aside.exists():
                    write_atomically(aside, raw)
                write_atomically(path, rewritten)
            except OSError as exc:  # a full disk must not stop the gateway: salvage at the next opening
                waiting = f"{salvaged} readable records wait in it for the next start (they are sent late)"
                self._report(
                    StoreProblem(
                        f"outbox segment damaged ({damage}) and not salvaged now ({exc}); {waiting}", str(path), None
                    )
                )
                raise _SalvageLater(max(seq for seq, _, _ in records)) from exc
            kept = f"original kept as {aside.name}"
        self._report(StoreProblem(f"outbox segment damaged ({damage}): {outcome}; {kept}", str(path), lost))
        return rewritten

    def _set_aside(self, path: Path, what: str, records_lost: int | None) -> None:
        aside = _aside_path(path, path.read_bytes())
        os.replace(path, aside)
        with contextlib.suppress(OSError):
            fsync_directory(self.directory)
        self._report(StoreProblem(f"{what}; kept as {aside.name}", str(path), records_lost))

    def _report(self, problem: StoreProblem) -> None:
        log.warning("%s: %s", problem.path, problem.what)  # (the counts are in ``what``)
        self._problems.append(problem)


class _SalvageLater(Exception):
    """A damaged segment the disk would not let us salvage now: left in place, unread this run."""

    def __init__(self, highest_seq: int) -> None:
        super().__init__(highest_seq)
        self.highest_seq = highest_seq


def _aside_path(path: Path, raw: bytes) -> Path:
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
