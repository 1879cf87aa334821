"""Ports: the small capabilities the services need from the outside, as Protocols.

Device adapters feed the Site through ``SnapshotSink``; services take time from a ``Clock``
so tests can run a simulated day in a second.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from gateway.domain.model import Snapshot


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
