"""The outbox's bounds on disk: which periodic samples go when a backlog grows too big.

Kept apart from the delivery rules (``outbox.py``) because it answers a different question: not
"what is sent next" but "what may be forgotten so that the disk never fills". Only periodic
samples (``RecordKind.SAMPLED``) are ever removed, never the head (it may be in flight): starts,
stops and clock-aligned values are billing data and stay whatever the size.

Past ``thin_after_records`` each session's samples are thinned to the first and last of each
``thin_window_s`` (a backlog of days still shows the curve); past ``max_bytes`` the oldest samples
go first.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from gateway.domain.outbox import OutboxStore, RecordInfo, RecordKind

log = logging.getLogger("gateway.services.outbox")  # the outbox's own lines, as before the split


@dataclass(frozen=True, slots=True)
class OutboxSettings:
    """Bounds of the backlog (see the module docstring)."""

    max_bytes: int = 256 * 1024 * 1024
    thin_after_records: int = 100_000
    thin_window_s: int = 900


class BacklogBounds:
    """Keeps one store within ``settings``; counts what it removed."""

    def __init__(self, store: OutboxStore, settings: OutboxSettings) -> None:
        self.store = store
        self.settings = settings
        self.thinned = 0  # samples removed by thinning
        self.dropped = 0  # samples removed for space
        self._appended_since_thinning = 0
        self._disk_full_reported = False

    def appended(self) -> None:
        """One more record on disk: thinning runs once per tenth of its threshold, not per record."""
        self._appended_since_thinning += 1

    def keep(self) -> None:
        """Thin and drop as the bounds say; an OSError of the store reaches the caller."""
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
            self.thinned += len(doomed)
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
            self.dropped += len(doomed)
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
