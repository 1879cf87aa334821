"""Ports: the small capabilities the services need from the outside, as Protocols.

Device adapters feed the Site through ``SnapshotSink``; services take time from a ``Clock``
so tests can run a simulated day in a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from gateway.domain.history import (
    EVERYTHING,
    EventRecord,
    HistoryQuery,
    HistoryWrite,
    Retention,
    SeriesRecord,
    SessionRecord,
)
from gateway.domain.model import Snapshot
from gateway.domain.outbox import StoreProblem


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SnapshotSink(Protocol):
    def apply(self, snapshot: Snapshot) -> None:
        """Take what a device poll found (or that it failed)."""
        ...


class SettingsStore(Protocol):
    """Named sections of settings (JSON-able data) that must survive a restart."""

    def load(self, section: str) -> Any | None:
        """What was last saved under ``section``, or None."""
        ...

    def save(self, section: str, data: Any) -> bool:
        """Replace ``section``; returns only once it is on disk: True, or False if the disk
        refused (the section keeps its last saved value; the caller decides what that costs)."""
        ...


class NoSettingsStore:
    """Keeps nothing (tests and tools that need no persistence)."""

    def load(self, section: str) -> Any | None:
        return None

    def save(self, section: str, data: Any) -> bool:
        return True


class HistoryStore(Protocol):
    """The operator's history on disk: sessions, the event log and the one-minute series.

    Not a billing path: the outbox keeps the bills, this only remembers them. A damaged store is
    set aside and started afresh (``problems()`` says so) rather than stopping the gateway. The
    calls block (they may fsync): the history service writes from a worker thread of its own, and
    reads (for the page, the API) come from other threads, so a store serialises its calls."""

    def write(self, items: Sequence[HistoryWrite]) -> None:
        """Apply ``items`` in order, all or none (one transaction), on disk when it returns.
        Raises ``OSError`` when the disk refuses (nothing of ``items`` is kept)."""
        ...

    def prune(self, now: datetime, retention: Retention, limit: int) -> int:
        """Delete up to ``limit`` rows older than ``retention`` allows; returns how many went
        (fewer than ``limit``: nothing more is due now)."""
        ...

    def sessions(self, query: HistoryQuery = EVERYTHING) -> list[SessionRecord]:
        """The sessions ``query`` picks, the newest first. Safe from any thread."""
        ...

    def events(self, query: HistoryQuery = EVERYTHING) -> list[EventRecord]:
        """The events ``query`` picks, the newest first. Safe from any thread."""
        ...

    def series(self, query: HistoryQuery = EVERYTHING) -> list[SeriesRecord]:
        """The samples ``query`` picks, the oldest first (``limit`` from the newest end). Safe from
        any thread."""
        ...

    def problems(self) -> list[StoreProblem]:
        """What was found wrong with the file (and worked around) since it was opened."""
        ...

    def close(self) -> None: ...
