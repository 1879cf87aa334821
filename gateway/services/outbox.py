"""The outbox: the delivery rules for messages that must reach the CSMS, over a durable store.

Transaction messages (and clock-aligned readings) are billing data: they wait here, in order,
while the CSMS is away, and leave only once it has answered. One record is in flight at a time
and strictly in order, so a CSMS always sees a session's start before its meter values and its
stop. A record the CSMS answers with an error (or not at all) is retried
``TransactionMessageAttempts`` times, ``TransactionMessageRetryInterval`` x attempt apart, then
dropped with a log line; a StopTransaction is never dropped (it ends a bill).

The store is bounded: past ``thin_after_records`` the periodic samples of a session are thinned
to the first and last of each ``thin_window_s``; past ``max_bytes`` the oldest periodic samples
go first. Starts, stops and clock-aligned values are never thinned or dropped for space.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from gateway.domain.outbox import (
    BacklogStats,
    NewRecord,
    OutboxRecord,
    OutboxStore,
    RecordInfo,
    RecordKind,
)

log = logging.getLogger(__name__)

DISK_RETRY_S = 5.0  # how soon a disk that refused a write is tried again
STOP_PATIENCE = 3  # a stop gets this many times TransactionMessageAttempts before it is set aside


@dataclass(frozen=True, slots=True)
class OutboxSettings:
    """Bounds of the backlog (see the module docstring)."""

    max_bytes: int = 256 * 1024 * 1024
    thin_after_records: int = 20_000
    thin_window_s: int = 900


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
    ) -> None:
        """``park``: where a StopTransaction refused STOP_PATIENCE x TransactionMessageAttempts
        times is set aside (durably, before it leaves the queue); without it such a stop is
        retried for ever, blocking the queue."""
        self.store = store
        self.settings = settings or OutboxSettings()
        self._on_change = on_change
        self._waiting = asyncio.Event()
        self._emptied = asyncio.Event()
        self._dropped = 0
        self._thinned = 0
        self._appended_since_thinning = 0
        self._disk_full_reported = False
        self._unwritten: deque[NewRecord] = deque()  # accepted while the disk refused writes, in order
        self._disk_failing = False
        self._gone: set[int] = set()  # delivered or dropped, but the disk refused to write it off
        self._attempts: dict[int, int] = {}  # failed attempts, also when the disk refused to keep them
        self._park = park
        self._parked = 0
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
        the disk takes writes again (None is returned meanwhile). Memory is the last resort, so
        the log says so loudly, once per outage."""
        self._unwritten.append(record)
        stored = self._write_held()
        if stored is not None:
            self._keep_bounds()
            self._waiting.set()
        self._changed()
        return stored

    def _write_held(self) -> OutboxRecord | None:
        """Write what is held in memory, oldest first; the last record written, or None."""
        stored = None
        while self._unwritten:
            try:
                stored = self.store.append(self._unwritten[0])
            except OSError as exc:
                self._disk_trouble("cannot write to disk", exc)
                return None
            self._unwritten.popleft()
            self._appended_since_thinning += 1
        self._disk_recovered()
        return stored

    def _disk_trouble(self, what: str, exc: OSError) -> None:
        if not self._disk_failing:
            held = len(self._unwritten)
            log.error("outbox: %s (%s); %d message(s) held in memory, retrying", what, exc, held)
            self._disk_failing = True

    def _disk_recovered(self) -> None:
        if self._disk_failing:
            log.warning("outbox: disk writes work again")
            self._disk_failing = False

    def _keep_bounds(self) -> None:
        try:
            self._thin_or_drop()
        except OSError as exc:  # thinning is an economy: it can wait for a disk that works
            self._disk_trouble("cannot thin the backlog on disk", exc)

    def _thin_or_drop(self) -> None:
        limit = self.settings.thin_after_records
        if len(self.store) > limit and self._appended_since_thinning >= max(1, limit // 10):
            self._appended_since_thinning = 0
            self._thin()
        if self.store.size_bytes() > self.settings.max_bytes:
            self._make_room()

    def _thin(self) -> None:
        """Keep the first and last periodic sample of each session per window; drop the rest."""
        window_s = self.settings.thin_window_s
        groups: dict[tuple[str | None, int], list[RecordInfo]] = {}
        for info in self._removable():
            if info.kind is RecordKind.SAMPLED:
                window = int(datetime.fromisoformat(info.created_at).timestamp() // window_s)
                groups.setdefault((info.local_ref, window), []).append(info)
        doomed = [info.seq for group in groups.values() for info in group[1:-1]]
        if doomed:
            self.store.remove(doomed)
            self._thinned += len(doomed)
            log.warning(
                "outbox: %d messages waiting; thinned %d periodic samples to the first and last of each %d s",
                len(self.store),
                len(doomed),
                window_s,
            )

    def _make_room(self) -> None:
        """Drop the oldest periodic samples until the store fits its disk bound again."""
        excess = self.store.size_bytes() - self.settings.max_bytes
        doomed: list[int] = []
        for info in self._removable():
            if excess <= 0:
                break
            if info.kind is RecordKind.SAMPLED:
                doomed.append(info.seq)
                excess -= info.size_bytes
        if doomed:
            self.store.remove(doomed)
            self._dropped += len(doomed)
            log.warning(
                "outbox: disk bound of %d bytes reached; dropped the %d oldest periodic samples",
                self.settings.max_bytes,
                len(doomed),
            )
        if excess > 0 and not self._disk_full_reported:
            log.error("outbox: over its disk bound with nothing left to drop; keeping transaction messages anyway")
            self._disk_full_reported = True
        elif excess <= 0:
            self._disk_full_reported = False

    def _removable(self) -> Iterable[RecordInfo]:
        """Records that may be thinned or dropped: all but the head, which may be in flight."""
        return self.store.index()[1:]

    # -- delivering -----------------------------------------------------------------------------------
    async def next(self) -> OutboxRecord:
        """The head of the queue, waiting until there is one.

        A record whose delivery could not be written off (the disk refused) is removed first and
        never returned again, so a failing disk delays the queue but never sends a message twice.
        """
        while True:
            if self._unwritten:
                self._write_held()
            head = self.store.head()
            if head is not None and head.seq in self._gone:
                try:
                    self.store.remove([head.seq])
                except OSError as exc:
                    self._disk_trouble("cannot write off a delivered message", exc)
                    await asyncio.sleep(DISK_RETRY_S)
                    continue
                self._gone.discard(head.seq)
                self._disk_recovered()
                self._changed()
                continue
            if head is not None:
                return replace(head, attempts=max(head.attempts, self._attempts.get(head.seq, 0)))
            self._waiting.clear()
            if self._unwritten:  # nothing on disk yet, but messages wait in memory for it
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._waiting.wait(), DISK_RETRY_S)
            else:
                await self._waiting.wait()

    async def wait_empty(self) -> None:
        """Until every queued record has been delivered or given up."""
        while len(self.store) or self._unwritten:
            self._emptied.clear()
            await self._emptied.wait()

    def delivered(self, record: OutboxRecord) -> None:
        """The CSMS answered ``record``: it leaves the queue (before its answer is acted on)."""
        self._write_off(record)
        self._changed()

    def _write_off(self, record: OutboxRecord) -> None:
        """Remove ``record`` for good; if the disk refuses, remember it so it is never sent again."""
        try:
            self.store.remove([record.seq])
        except OSError as exc:
            self._gone.add(record.seq)
            self._disk_trouble("cannot write off a delivered message", exc)

    def failed(self, record: OutboxRecord, max_attempts: int, retry_interval_s: float) -> Retry | Dropped:
        """The CSMS answered ``record`` with an error or not at all: retry it later, or give it up."""
        attempts = record.attempts + 1
        if attempts >= max_attempts * STOP_PATIENCE and record.kind is RecordKind.STOP and self._park is not None:
            return self._park_stop(record, attempts)
        if attempts >= max_attempts and record.kind is not RecordKind.STOP:
            self._dropped += 1
            return self._gives_up(record, attempts, logging.WARNING, "dropped after %d failed attempts")
        self._attempts[record.seq] = attempts
        try:
            self.store.set_attempts(record.seq, attempts)
        except OSError as exc:  # the count is kept in memory meanwhile
            self._disk_trouble("cannot record a failed attempt", exc)
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
        why = "refused %d times; set aside in the parked file for the operator, the queue goes on"
        return self._gives_up(record, attempts, logging.ERROR, why)

    def _gives_up(self, record: OutboxRecord, attempts: int, level: int, why: str) -> Dropped:
        """``record`` leaves the queue undelivered; the log says why (``why`` takes the attempts)."""
        self._write_off(record)
        log.log(level, f"outbox: %s #%d (from %s) {why}", record.action, record.seq, record.created_at, attempts)
        self._changed()
        return Dropped(replace(record, attempts=attempts))

    # -- reporting ------------------------------------------------------------------------------------
    def stats(self) -> BacklogStats:
        index = [info for info in self.store.index() if info.seq not in self._gone]
        created = [info.created_at for info in index] + [record.created_at for record in self._unwritten]
        return BacklogStats(
            records=len(created),
            size_bytes=self.store.size_bytes(),
            oldest_created_at=min(created, default=None),
            dropped=self._dropped,
            thinned=self._thinned,
            problems=tuple(self.store.problems()),
            parked=self._parked,
        )

    def _changed(self) -> None:
        if not len(self.store) and not self._unwritten:
            self._emptied.set()
        if self._on_change is not None:
            self._on_change()
