"""The outbox's files, line by line: how a record is kept, and how a file of lines reads back.

Every file of the outbox store is a sequence of lines, each one compact JSON object (ASCII, as
``json.dumps`` writes it) ended by ``\\n``. Appending a line and fsyncing it is the cheapest durable
write there is, so every change is one line (see ``outbox_journal``):

* a segment, ``seg-<start>.json``: ``{"records": {"<seq>": {...}, ...}}`` sets these documents
  (added, or replaced whole); ``{"removed": [<seq>, ...]}`` deletes these; a line may hold both
  (``removed`` is applied first). Replayed in order, the lines give the segment's TinyDB table.
* ``head.json``: ``{"floor": F, "reserved": R}``; the greatest of each is in force.

The first line of a file is written with the file, atomically (``atomic.write_atomically``): a
file is never torn there. A later line may be torn by a kill or a power cut while it was
appended: a last line without its ``\\n`` that does not read, and looks like the start of one
line this store writes, is a write that never returned, and is dropped (``split_lines``; the
store makes one exception, see ``outbox_salvage.read_segment``). A file of the previous version
(the whole TinyDB database, ``{"records": {...}}``, rewritten on every change) is one line without
its ``\\n``: it reads as it is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.domain.outbox import NewRecord, OutboxRecord, RecordInfo, RecordKind

TABLE = "records"
REMOVED = "removed"
SEQ = re.compile(r"[1-9]\d*", re.ASCII)
# How every line this store writes begins: what a torn last line must be a prefix of, or start with.
OPENERS = (b'{"' + TABLE.encode() + b'":{', b'{"' + REMOVED.encode() + b'":[', b'{"floor":')


class CorruptSegment(ValueError):
    """A file, or a record in it, that does not hold what this store writes."""


def encode(data: Any) -> bytes:
    """Compact JSON, ASCII only (so a character is a byte: sizes are counted in the text)."""
    return json.dumps(data, separators=(",", ":")).encode("ascii")


def fields_of(record: NewRecord) -> dict[str, Any]:
    """What a segment keeps of a record (its document in the TinyDB table)."""
    return {
        "kind": RecordKind(record.kind).value,
        "action": record.action,
        "payload": record.payload,
        "created_at": record.created_at,
        "local_ref": record.local_ref,
        "attempts": 0,
    }


def to_record(seq: int, fields: dict[str, Any], *, private: bool = True) -> OutboxRecord:
    """A record from its stored fields; ``CorruptSegment`` if they are not what we write.

    ``private`` copies the payload: the caller may change what it gets, the cache must not.
    """
    try:
        record = OutboxRecord(
            seq,
            RecordKind(fields["kind"]),
            fields["action"],
            copy_json(fields["payload"]) if private else fields["payload"],
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


def copy_json(value: Any) -> Any:
    """A deep copy of JSON data (dicts, lists and scalars): three times as fast as ``copy.deepcopy``."""
    if isinstance(value, dict):
        return {key: copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [copy_json(item) for item in value]
    return value


def to_info(seq: int, fields: dict[str, Any], size_bytes: int) -> RecordInfo:
    return RecordInfo(seq, RecordKind(fields["kind"]), fields["created_at"], fields["local_ref"], size_bytes)


@dataclass
class Line:
    """One line of a segment: the records it sets with the bytes each takes, the seqs it removes,
    and its bytes that hold no record (the removal list; the braces of a line without records).

    A line's bytes, braces and ``\\n`` included, are shared equally by the records it sets (one,
    for an append): reading them back costs one ``json.loads`` per line, no measuring of each
    record where it lies, and the sizes still add up to the file's.
    """

    records: list[tuple[str, Any, int]] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    dead: int = 0


def encode_line(records: Mapping[str, Any], removed: Sequence[int] = ()) -> tuple[bytes, dict[str, int], int]:
    """A segment line (with its ``\\n``) that sets ``records`` and removes ``removed``, the bytes
    each record takes in it and the bytes that hold none, as ``scan_line`` counts them.
    ``records`` may give a record's fields already encoded (bytes)."""
    parts = [
        b'"' + key.encode("ascii") + b'":' + (fields if isinstance(fields, bytes) else encode(fields))
        for key, fields in records.items()
    ]
    pieces = []
    if removed:
        pieces.append(b'"' + REMOVED.encode() + b'":' + encode(list(removed)))
    if parts or not removed:
        pieces.append(b'"' + TABLE.encode() + b'":{' + b",".join(parts) + b"}")
    line = b"{" + b",".join(pieces) + b"}\n"
    sizes, dead = _share(len(line), list(records), list(removed))
    return line, sizes, dead


def _share(length: int, keys: list[str], removed: list[int]) -> tuple[dict[str, int], int]:
    """Share a line's bytes among its records; the removal list (or a line without records) is dead."""
    if not keys:
        return {}, length
    dead = len(REMOVED) + 4 + len(encode(removed)) if removed else 0  # "removed":[...],
    share, rest = divmod(length - dead, len(keys))
    sizes = dict.fromkeys(keys, share)
    sizes[keys[0]] += rest
    return sizes, dead


_UNDECODABLE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8 (decoded with surrogateescape)


def scan_line(text: str, newline: bool = True) -> Line:
    """Parse one segment line (without its ``\\n``; ``newline`` says whether it had one).

    ``ValueError`` on anything but what ``encode_line`` writes (whitespace is allowed, as a hand
    edit of an older file may have it; a key given twice counts once, the last).
    """
    if not text.isascii() and _UNDECODABLE.search(text):
        raise ValueError("bytes that are not UTF-8")
    return _line(json.loads(text), len(text) + newline)


def scan_lines(split: Split) -> list[Line]:
    """Every line of a file; ``ValueError`` for the first that does not read.

    Lines are parsed with one ``json.loads`` for the whole file (a segment of 50 records is read
    in half the time it takes line by line: that is the delay of the first delivery from a
    segment); only if that fails are they read one by one, to find the line at fault.
    """
    texts = split.lines
    newline = [True] * len(texts)
    if texts:
        newline[-1] = split.last_newline
    joined = "[" + ",".join(texts) + "]"
    try:
        if not joined.isascii() and _UNDECODABLE.search(joined):
            raise ValueError("bytes that are not UTF-8")
        items = json.loads(joined)
        if len(items) != len(texts):  # (two damaged lines that read as one)
            raise ValueError("lines do not match")
        return [_line(item, len(text) + ended) for item, text, ended in zip(items, texts, newline, strict=True)]
    except ValueError:
        return [scan_line(text, ended) for text, ended in zip(texts, newline, strict=True)]


def _line(data: Any, length: int) -> Line:
    """The line ``data`` was read from, checked; ``length``: its bytes, ``\\n`` included."""
    if type(data) is dict and len(data) == 1 and type(records := data.get(TABLE)) is dict and len(records) == 1:
        [(key, fields)] = records.items()  # an append, or an attempt counted: the usual line
        if type(fields) is dict:
            return Line([(key, fields, length)])
    if not isinstance(data, dict) or not set(data) <= {TABLE, REMOVED}:
        raise ValueError(f'not a {{"{TABLE}": {{...}}}} or {{"{REMOVED}": [...]}} object')
    records, removed = data.get(TABLE, {}), data.get(REMOVED, [])
    if not isinstance(records, dict) or not all(isinstance(fields, dict) for fields in records.values()):
        raise ValueError(f"{TABLE} is not an object of records")
    if not isinstance(removed, list) or any(type(seq) is not int or seq < 1 for seq in removed):
        raise ValueError(f"{REMOVED} is not a list of sequence numbers")
    sizes, dead = _share(length, list(records), removed)
    return Line([(key, fields, sizes[key]) for key, fields in records.items()], removed, dead)


@dataclass
class Split:
    """A file cut into lines: the text of each, whether the last had its ``\\n``, and the bytes
    worth keeping (``end``: less than the file when a torn last line is dropped)."""

    lines: list[str]
    last_newline: bool
    end: int
    torn: bytes = b""


def split_lines(raw: bytes, parse: Callable[[str], object] = scan_line) -> Split:
    """Cut ``raw`` into lines and drop a torn last one (see the module's docstring).

    ``parse`` says whether a last line without its ``\\n`` is complete (it raises if not).
    Bytes that are not UTF-8 are kept as surrogates for the salvage scan to refuse.
    """
    cut = raw.rfind(b"\n") + 1
    tail = raw[cut:]
    end, torn = len(raw), b""
    if tail and cut and _looks_torn(tail):
        try:
            parse(tail.decode("ascii"))
        except ValueError:
            end, torn = cut, tail
    text = raw[:end].decode("utf-8", "surrogateescape")
    lines = text.split("\n")
    last_newline = lines[-1] == ""
    if last_newline:
        lines.pop()
    return Split(lines, last_newline, end, torn)


def _looks_torn(tail: bytes) -> bool:
    """Whether ``tail`` may be the start of one line this store writes (ASCII, printable)."""
    if not tail.isascii() or any(byte < 0x20 for byte in tail):
        return False
    if sum(tail.count(opener) for opener in OPENERS) > 1:  # more than one line's start: damage
        return False
    return any(tail.startswith(opener) or opener.startswith(tail) for opener in OPENERS)


def replay(
    lines: Iterable[Line], admit: Callable[[str, dict[str, Any]], str | None] | None = None
) -> tuple[dict[str, Any], dict[str, int], int, dict[str, str]]:
    """Apply segment lines in order: the table, the bytes each record takes, the bytes that hold
    nothing live, and the records refused by ``admit`` (its reason; ``None`` admits) that no
    later line set again or removed. A refused record leaves an earlier version in place."""
    table: dict[str, Any] = {}
    sizes: dict[str, int] = {}
    refused: dict[str, str] = {}
    dead = 0
    for line in lines:
        for seq in line.removed:
            key = str(seq)
            refused.pop(key, None)
            if key in table:
                del table[key]
                dead += sizes.pop(key)
        dead += line.dead
        for key, fields, size in line.records:
            reason = None if admit is None else admit(key, fields)
            if reason is not None:
                refused.setdefault(key, reason)
                dead += size
                continue
            refused.pop(key, None)
            if key in table:
                dead += sizes[key]
            table[key] = fields
            sizes[key] = size
    for key in [key for key in refused if key in table]:
        del refused[key]  # an older version of it was kept
    return table, sizes, dead, refused
