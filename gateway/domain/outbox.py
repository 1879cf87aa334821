"""What waits for the CSMS: outbox records, their kinds and the store port they live in.

The domain does not know what a record's payload says (that is the upstream adapter's
business); it knows only what the delivery rules need: the order (``seq``), what kind of message
it is (which decides whether it may be retried forever, thinned or dropped), when the reading it
carries was made, and the local reference of the session it belongs to.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol


class RecordKind(StrEnum):
    """What a queued message is, as far as the delivery rules care."""

    START = "start"  # StartTransaction: never thinned or dropped for space
    STOP = "stop"  # StopTransaction: never thinned, never dropped (not even after failed attempts)
    SAMPLED = "sampled"  # MeterValues of a transaction, Sample.Periodic / Trigger: may be thinned
    ALIGNED = "aligned"  # clock-aligned MeterValues (a transaction's or the site meter's): kept


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """One message waiting for the CSMS.

    ``payload`` is JSON-able data only the sender understands; ``created_at`` is the ISO 8601 UTC
    time of the reading or event it carries (not of queueing, not of sending); ``local_ref`` ties
    the message to a session before the CSMS has numbered it; ``attempts`` counts sends that the
    CSMS answered with an error or not at all.
    """

    seq: int
    kind: RecordKind
    action: str
    payload: dict[str, Any]
    created_at: str
    local_ref: str | None = None
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class RecordInfo:
    """A record without its payload: what the rules need to choose what to thin or drop."""

    seq: int
    kind: RecordKind
    created_at: str
    local_ref: str | None
    size_bytes: int


@dataclass(frozen=True, slots=True)
class StoreProblem:
    """Something the store found wrong and worked around (a corrupt segment moved aside)."""

    what: str
    path: str
    records_lost: int | None = None  # how many records it held, when that could be told


@dataclass(frozen=True, slots=True)
class BacklogStats:
    """What the outbox holds now, and what it had to give up since the gateway started."""

    records: int
    size_bytes: int
    oldest_created_at: str | None
    dropped: int  # records given up after failed attempts, or for disk space
    thinned: int  # periodic samples removed by thinning
    problems: tuple[StoreProblem, ...] = ()
    parked: int = 0  # StopTransactions the CSMS kept refusing, set aside for the operator
    # While the disk refuses writes: what failed and how many messages live in memory only (a
    # crash would lose them). None while the disk takes writes.
    disk_problem: str | None = None
    held_in_memory: int = 0  # records accepted while the disk refused them, not written yet


@dataclass
class NewRecord:
    """A record before the store numbers it."""

    kind: RecordKind
    action: str
    payload: dict[str, Any]
    created_at: str
    local_ref: str | None = None


class OutboxStore(Protocol):
    """A durable FIFO of records. Every method that changes it returns only once the change is on
    disk, so a kill at any moment loses nothing whose call had returned."""

    def append(self, record: NewRecord) -> OutboxRecord:
        """Queue ``record`` at the tail with the next sequence number."""
        ...

    def head(self) -> OutboxRecord | None:
        """The oldest record, or None when the store is empty."""
        ...

    def record(self, seq: int) -> OutboxRecord | None:
        """The queued record numbered ``seq``, or None if it is not queued."""
        ...

    def remove(self, seqs: Iterable[int]) -> None:
        """Forget these records (the delivered head, or records thinned or dropped)."""
        ...

    def set_attempts(self, seq: int, attempts: int) -> None:
        """Record how many times this record was sent without success."""
        ...

    def index(self) -> list[RecordInfo]:
        """Every record's metadata in order, from memory (no disk read)."""
        ...

    def first(self, count: int) -> list[RecordInfo]:
        """The metadata of the ``count`` oldest records, in order, from memory (O(count))."""
        ...

    def __len__(self) -> int: ...

    def size_bytes(self) -> int:
        """What the store takes on disk now."""
        ...

    def problems(self) -> list[StoreProblem]:
        """What was found wrong when the store was opened (and worked around)."""
        ...
