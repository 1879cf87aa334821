"""The outbox: the delivery rules for messages that must reach the CSMS, over a durable store.

Transaction messages (and clock-aligned readings) are billing data: they wait here, in order,
while the CSMS is away, and leave only once it has answered. One record is in flight at a time
and strictly in order, so a CSMS always sees a session's start before its meter values and its
stop. A record the CSMS answers with an error (or not at all) is retried
``TransactionMessageAttempts`` times, ``TransactionMessageRetryInterval`` x attempt apart, then
dropped with a log line; a StopTransaction is never dropped (it ends a bill).

The store is bounded (``outbox_bounds.py``): past ``thin_after_records`` periodic samples are
thinned, past ``max_bytes`` the oldest go first. Starts, stops and clock-aligned values are never
thinned or dropped for space.

A disk that refuses writes (full, read-only, failing) must neither stop charging nor hold billing
back from a CSMS that is there: what it refuses is held in memory, in order, delivered after
everything already on disk, and written before anything newer once the disk takes writes again.
Until then ``stats().disk_problem`` says so, because a crash would lose what is held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from gateway.domain.history import DeliveryState
from gateway.domain.outbox import (
    BacklogStats,
    NewRecord,
    OutboxRecord,
    OutboxStore,
    RecordInfo,
    RecordKind,
)
from gateway.services.outbox_bounds import BacklogBounds, OutboxSettings

__all__ = ["BacklogStats", "Dropped", "Outbox", "OutboxSettings", "Retry"]

log = logging.getLogger(__name__)

DISK_RETRY_S = 5.0  # how soon a disk that refused a write is tried again
STOP_PATIENCE = 3  # a stop gets this many times TransactionMessageAttempts before it is set aside


@dataclass(frozen=True, slots=True)
class Retry:
    """Send the head again after ``delay_s``."""

    delay_s: float


@dataclass(frozen=True, slots=True)
class Dropped:
    """The head was given up; the next record is the new head."""

    record: OutboxRecord


class Outbox:
    """FIFO delivery over an ``OutboxStore``; ``on_change`` is told after every change (and reads
    ``stats()`` when it needs the figures: they cost O(backlog), too much for every message)."""

    def __init__(
        self,
        store: OutboxStore,
        settings: OutboxSettings | None = None,
        on_change: Callable[[], None] | None = None,
        park: Callable[[OutboxRecord], None] | None = None,
        on_settled: Callable[[OutboxRecord, DeliveryState], None] | None = None,
        on_disk_refused: Callable[[str], None] | None = None,
    ) -> None:
        """``park``: where a StopTransaction refused STOP_PATIENCE x TransactionMessageAttempts
        times is set aside (durably, before it leaves the queue); without it such a stop is
        retried for ever, blocking the queue. ``on_settled``: told when a session's start or
        stop was delivered or parked (the operator's history follows its bills with it).
        ``on_disk_refused``: told what failed when the disk begins to refuse writes (a security
        event: what must be kept now lives in memory only)."""
        self.store = store
        self.settings = settings or OutboxSettings()
        self._on_change = on_change
        self._waiting = asyncio.Event()
        self._emptied = asyncio.Event()
        self._bounds = BacklogBounds(store, self.settings)
        self._dropped = 0  # given up after refusals, or unsendable (the bounds count their own)
        # Accepted while the disk refused writes, oldest first, numbered -1, -2, ... (never a
        # store's number) so that delivered/failed/set_aside can name them like stored ones.
        self._held: deque[OutboxRecord] = deque()
        self._last_held_seq = 0
        self._handed_out: int | None = None  # the held record ``next`` returned last
        self._written_as: dict[int, int] = {}  # that record's store number, if written since
        self._disk_failing = False
        self._disk_error = ""  # what the disk refused last, while it fails
        self._told_unparkable: set[int] = set()  # unsendable stops already logged as kept
        self._gone: set[int] = set()  # delivered or dropped, but the disk refused to write it off
        self._gone_retry_at = 0.0  # (monotonic) when to try writing them off again
        self._attempts: dict[int, int] = {}  # failed attempts, also when the disk refused to keep them
        self._park = park
        self._parked = 0
        self._on_settled = on_settled
        self._on_disk_refused = on_disk_refused
        for problem in store.problems():
            log.warning("outbox: %s (%s)", problem.what, problem.path)
        if len(store):
            log.info("outbox: %d messages from before the restart wait for the CSMS", len(store))
            self._waiting.set()

    # -- queueing -------------------------------------------------------------------------------------
    def enqueue(self, record: NewRecord) -> OutboxRecord | None:
        """Queue ``record``; returns it numbered once it is on disk.

        A disk that refuses the write (full, read-only, failing) must not stop charging or lose
        the message: it is held in memory, in order, and written before anything newer as soon as
        the disk takes writes again (None is returned meanwhile; ``next`` delivers it from memory).
        Memory is the last resort, so the log says so loudly, once per outage."""
        self._last_held_seq -= 1
        held = OutboxRecord(
            self._last_held_seq, record.kind, record.action, record.payload, record.created_at, record.local_ref
        )
        self._held.append(held)
        stored = self._write_held()
        if stored is not None:
            self._keep_bounds()
        self._waiting.set()  # on disk or held in memory: either way it can be delivered now
        self._changed()
        return stored

    def _write_held(self) -> OutboxRecord | None:
        """Write what is held in memory, oldest first; the last record written, or None."""
        stored = None
        while self._held:
            held = self._held[0]
            new = NewRecord(held.kind, held.action, held.payload, held.created_at, held.local_ref)
            try:
                stored = self.store.append(new)
            except OSError as exc:
                self._disk_trouble("cannot write to disk", exc)
                return None
            self._held.popleft()
            if held.seq == self._handed_out:  # it may be in flight: its answer must find it on disk
                self._written_as[held.seq] = stored.seq
            if attempts := self._attempts.pop(held.seq, 0):
                self._count_attempts(stored.seq, attempts)
            self._bounds.appended()
        self._disk_recovered()
        return stored

    def _disk_trouble(self, what: str, exc: OSError) -> None:
        self._disk_error = f"{what}: {exc}"
        if not self._disk_failing:
            held = len(self._held)
            log.error("outbox: %s (%s); %d message(s) held in memory, retrying", what, exc, held)
            self._disk_failing = True
            self._changed()
            if self._on_disk_refused is not None:
                self._on_disk_refused(self._disk_error)

    def _disk_recovered(self) -> None:
        """A write went through; the trouble is over once nothing waits in memory for the disk."""
        if self._disk_failing and not self._held:
            log.warning("outbox: disk writes work again")
            self._disk_failing = False
            self._disk_error = ""
            self._changed()

    def _disk_problem(self) -> str | None:
        """One line for people: what the disk refused and what a crash now would lose."""
        if not self._disk_failing:
            return None
        held = len(self._held)
        at_risk = (
            f"{held} billing message(s) held in memory only, lost if the gateway stops now"
            if held
            else "no message held in memory now"
        )
        return f"the disk refuses to store billing messages ({self._disk_error}); {at_risk}"

    def _keep_bounds(self) -> None:
        try:
            self._bounds.keep()
        except OSError as exc:  # thinning is an economy: it can wait for a disk that works
            self._disk_trouble("cannot thin the backlog on disk", exc)

    # -- delivering -----------------------------------------------------------------------------------
    async def next(self) -> OutboxRecord:
        """The head of the queue, waiting until there is one.

        A record whose delivery could not be written off (the disk refused) is removed first and
        never returned again, so a failing disk delays the queue but never sends a message twice.
        Records held in memory (the disk refused them) come after everything on disk, which is
        older, oldest first: a CSMS that is there gets them without waiting for the disk.

        One consumer: calling ``next`` again means the record it returned before was answered
        (``delivered``/``failed``/``set_aside``) or abandoned with the link.
        """
        self._handed_out = None
        self._written_as.clear()
        while True:
            if self._held:
                self._write_held()
            if self._gone:
                self._write_off_gone()
            head = self._first_pending()
            if head is not None:
                return replace(head, attempts=max(head.attempts, self._attempts.get(head.seq, 0)))
            if self._held:
                held = self._held[0]
                self._handed_out = held.seq
                return replace(held, attempts=self._attempts.get(held.seq, 0))
            self._waiting.clear()
            if self._gone:  # only written-off records left, and the disk refuses to forget them
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._waiting.wait(), DISK_RETRY_S)
                self._gone_retry_at = 0.0
                continue
            await self._waiting.wait()

    def _first_pending(self) -> OutboxRecord | None:
        """The oldest record on disk that was not delivered or given up: the head, or (while the
        disk refuses to write off delivered ones) the first after them."""
        head = self.store.head()
        if head is None or head.seq not in self._gone:
            return head
        seq = next((info.seq for info in self.store.index() if info.seq not in self._gone), None)
        return None if seq is None else self.store.record(seq)

    def _write_off_gone(self) -> None:
        """Forget on disk what was delivered while the disk refused to (at most every DISK_RETRY_S)."""
        now = time.monotonic()
        if now < self._gone_retry_at:
            return
        try:
            self.store.remove(sorted(self._gone))
        except OSError as exc:
            self._gone_retry_at = now + DISK_RETRY_S
            self._disk_trouble("cannot write off a delivered message", exc)
            return
        self._gone.clear()
        self._disk_recovered()
        self._changed()

    def stored(self) -> bool:
        """Whether nothing waits in memory for the disk (a crash would lose it); tries the disk
        again for what does."""
        if self._held and self._write_held() is not None:
            self._keep_bounds()
            self._waiting.set()
            self._changed()
        return not self._held

    async def wait_empty(self) -> None:
        """Until every queued record has been delivered or given up."""
        while len(self.store) or self._held:
            self._emptied.clear()
            await self._emptied.wait()

    def delivered(self, record: OutboxRecord) -> None:
        """The CSMS answered ``record``: it leaves the queue (before its answer is acted on)."""
        self._write_off(self._current(record))
        self._settled([record], DeliveryState.DELIVERED)
        self._changed()

    def upcoming(self, count: int) -> list[RecordInfo]:
        """The metadata of up to ``count`` records on disk behind the head (delivered ones the disk
        has not forgotten yet left out), oldest first: what a batch with the head may be made of."""
        return [info for info in self.store.first(count + 1 + len(self._gone)) if info.seq not in self._gone][1:]

    def record(self, seq: int) -> OutboxRecord | None:
        """A queued record on disk, with its payload (None if it is no longer queued)."""
        return None if seq in self._gone else self.store.record(seq)

    def delivered_together(self, records: list[OutboxRecord]) -> None:
        """The CSMS answered one request made of ``records`` (the head first): they all leave the
        queue at once, in one write where the store allows (a kill before it re-sends them all)."""
        if len(records) == 1 or records[0].seq < 0:
            self.delivered(records[0])
            return
        seqs = [record.seq for record in records]
        for seq in seqs:
            self._attempts.pop(seq, None)
        try:
            self.store.remove(seqs)
        except OSError as exc:
            self._gone.update(seqs)
            self._disk_trouble("cannot write off delivered messages", exc)
        self._settled(records, DeliveryState.DELIVERED)
        self._changed()

    def _settled(self, records: list[OutboxRecord], state: DeliveryState) -> None:
        """Tell ``on_settled`` about the session messages among ``records``."""
        if self._on_settled is None:
            return
        for record in records:
            if record.kind in (RecordKind.START, RecordKind.STOP):
                self._on_settled(record, state)

    def _current(self, record: OutboxRecord) -> OutboxRecord:
        """``record`` under the number it has now: a held record handed out by ``next`` may have
        been written to disk since (the disk came back while the CSMS was answering)."""
        seq = self._written_as.get(record.seq) if record.seq < 0 else None
        return record if seq is None else replace(record, seq=seq)

    def _write_off(self, record: OutboxRecord) -> None:
        """Remove ``record`` for good; if the disk refuses, remember it so it is never sent again."""
        self._attempts.pop(record.seq, None)
        if record.seq < 0:  # held in memory only: nothing on disk to remove
            self._forget_held(record.seq)
            return
        try:
            self.store.remove([record.seq])
        except OSError as exc:
            self._gone.add(record.seq)
            self._disk_trouble("cannot write off a delivered message", exc)

    def _forget_held(self, seq: int) -> None:
        if self._held and self._held[0].seq == seq:  # nearly always: one record in flight, the oldest
            self._held.popleft()
        else:
            self._held = deque(held for held in self._held if held.seq != seq)

    def _count_attempts(self, seq: int, attempts: int) -> None:
        """Keep the count in memory, and on disk for a stored record (if the disk takes it)."""
        self._attempts[seq] = attempts
        if seq < 0:  # held in memory: the count goes to disk with the record
            return
        try:
            self.store.set_attempts(seq, attempts)
        except KeyError:  # thinned or dropped for space while it was in flight: nothing left to count
            self._attempts.pop(seq, None)
        except OSError as exc:  # the count is kept in memory meanwhile
            self._disk_trouble("cannot record a failed attempt", exc)

    def failed(self, record: OutboxRecord, max_attempts: int, retry_interval_s: float) -> Retry | Dropped:
        """The CSMS answered ``record`` with an error or not at all: retry it later, or give it up."""
        record = self._current(record)
        attempts = record.attempts + 1
        if attempts >= max_attempts * STOP_PATIENCE and record.kind is RecordKind.STOP and self._park is not None:
            return self._park_stop(record, attempts)
        if attempts >= max_attempts and record.kind is not RecordKind.STOP:
            self._dropped += 1
            return self._gives_up(record, attempts, logging.WARNING, "dropped after %d failed attempts")
        self._count_attempts(record.seq, attempts)
        if attempts >= max_attempts:
            log.error(
                "outbox: %s #%d failed %d times; kept (a stop is never dropped), retrying",
                record.action,
                record.seq,
                attempts,
            )
        self._changed()
        return Retry(retry_interval_s * min(attempts, max(max_attempts, 1)))

    def _park_stop(self, record: OutboxRecord, attempts: int) -> Retry | Dropped:
        """A StopTransaction the CSMS keeps refusing is set aside (kept on disk, never dropped), so
        it does not block every later session's messages for ever."""
        assert self._park is not None
        try:
            self._park(replace(record, attempts=attempts))
        except OSError as exc:
            self._disk_trouble("cannot set a refused StopTransaction aside", exc)
            return Retry(DISK_RETRY_S)
        self._parked += 1
        self._settled([record], DeliveryState.PARKED)
        why = "refused %d times; set aside in the parked file for the operator, the queue goes on"
        return self._gives_up(record, attempts, logging.ERROR, why)

    def _gives_up(self, record: OutboxRecord, attempts: int, level: int, why: str) -> Dropped:
        """``record`` leaves the queue undelivered; the log says why (``why`` takes the attempts)."""
        self._write_off(record)
        log.log(level, f"outbox: %s #%d (from %s) {why}", record.action, record.seq, record.created_at, attempts)
        self._changed()
        return Dropped(replace(record, attempts=attempts))

    def set_aside(self, record: OutboxRecord, reason: str) -> Retry | Dropped:
        """``record`` can never be sent: the gateway itself cannot build its CALL, or its payload
        fails the OCPP schema here, so the CSMS never saw it and retrying would only block every
        later message. It leaves the queue at once, without the attempts a CSMS's refusal gets.

        A StartTransaction or StopTransaction is one end of a bill, so it is parked for the operator
        (durably, before it leaves; a start's session then goes on with transactionId -1); if parking
        fails it stays at the head and ``Retry`` says when to try again (without a ``park`` it
        stays for good, as a refused stop does). Any other record is dropped and counted."""
        record = self._current(record)
        if record.kind in (RecordKind.STOP, RecordKind.START):  # a bill's ends: kept for the operator
            if self._park is None:
                if record.seq not in self._told_unparkable:
                    self._told_unparkable.add(record.seq)
                    why = "%s #%d never left the gateway: %s; kept (nowhere to park it)"
                    log.error("outbox: " + why, record.action, record.seq, reason)
                return Retry(DISK_RETRY_S)
            try:
                self._park(record)
            except OSError as exc:
                self._disk_trouble(f"cannot set an unsendable {record.action} aside", exc)
                return Retry(DISK_RETRY_S)
            self._parked += 1
            self._settled([record], DeliveryState.PARKED)
            outcome = "parked"
        else:
            self._dropped += 1
            outcome = "dropped"
        self._write_off(record)
        log.error("outbox: %s #%d never left the gateway: %s; %s", record.action, record.seq, reason, outcome)
        self._changed()
        return Dropped(record)

    # -- reporting ------------------------------------------------------------------------------------
    def stats(self) -> BacklogStats:
        index = [info for info in self.store.index() if info.seq not in self._gone]
        created = [info.created_at for info in index] + [record.created_at for record in self._held]
        return BacklogStats(
            records=len(created),
            size_bytes=self.store.size_bytes(),
            oldest_created_at=min(created, default=None),
            dropped=self._dropped + self._bounds.dropped,
            thinned=self._bounds.thinned,
            problems=tuple(self.store.problems()),
            parked=self._parked,
            disk_problem=self._disk_problem(),
            held_in_memory=len(self._held),
        )

    def _changed(self) -> None:
        if not len(self.store) and not self._held:
            self._emptied.set()
        if self._on_change is not None:
            self._on_change()
