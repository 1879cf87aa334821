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
    """FIFO delivery over an ``OutboxStore``; ``on_change`` hears the backlog after every change."""

    def __init__(
        self,
        store: OutboxStore,
        settings: OutboxSettings | None = None,
        on_change: Callable[[BacklogStats], None] | None = None,
    ) -> None:
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
        stored = None
        while self._unwritten:
            try:
                stored = self.store.append(self._unwritten[0])
            except OSError as exc:
                if not self._disk_failing:
                    held = len(self._unwritten)
                    log.error("outbox: cannot write to disk (%s); holding %d message(s) in memory", exc, held)
                    self._disk_failing = True
                return None
            self._unwritten.popleft()
            self._appended_since_thinning += 1
        if self._disk_failing:
            log.warning("outbox: disk writes work again; messages held in memory are on disk")
            self._disk_failing = False
        self._keep_bounds()
        self._waiting.set()
        self._changed()
        return stored

    def _keep_bounds(self) -> None:
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
        """The head of the queue, waiting until there is one."""
        while True:
            head = self.store.head()
            if head is not None:
                return head
            self._waiting.clear()
            await self._waiting.wait()

    async def wait_empty(self) -> None:
        """Until every queued record has been delivered or given up."""
        while len(self.store):
            self._emptied.clear()
            await self._emptied.wait()

    def delivered(self, record: OutboxRecord) -> None:
        """The CSMS answered ``record``: it leaves the queue (before its answer is acted on)."""
        self.store.remove([record.seq])
        self._changed()

    def failed(self, record: OutboxRecord, max_attempts: int, retry_interval_s: float) -> Retry | Dropped:
        """The CSMS answered ``record`` with an error or not at all: retry it later, or give it up."""
        attempts = record.attempts + 1
        if attempts >= max_attempts and record.kind is not RecordKind.STOP:
            self.store.remove([record.seq])
            self._dropped += 1
            log.warning(
                "outbox: %s #%d (from %s) dropped after %d failed attempts",
                record.action,
                record.seq,
                record.created_at,
                attempts,
            )
            self._changed()
            return Dropped(replace(record, attempts=attempts))
        self.store.set_attempts(record.seq, attempts)
        if attempts >= max_attempts:
            log.error(
                "outbox: %s #%d failed %d times; kept (a stop is never dropped), retrying",
                record.action,
                record.seq,
                attempts,
            )
        return Retry(retry_interval_s * min(attempts, max(max_attempts, 1)))

    # -- reporting ------------------------------------------------------------------------------------
    def stats(self) -> BacklogStats:
        index = self.store.index()
        return BacklogStats(
            records=len(index),
            size_bytes=self.store.size_bytes(),
            oldest_created_at=min((info.created_at for info in index), default=None),
            dropped=self._dropped,
            thinned=self._thinned,
            problems=tuple(self.store.problems()),
        )

    def _changed(self) -> None:
        if not len(self.store):
            self._emptied.set()
        if self._on_change is not None:
            self._on_change(self.stats())
