"""The health of the Site's links as last reported: each field device, and the CSMS."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class UpstreamState:
    """The CSMS link as the upstream adapter last reported it."""

    connected: bool = False
    registration: str = "none"
    changed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class DeviceHealth:
    """Whether a field device answers: ``online`` is None before its first poll; ``reason`` while down."""

    online: bool | None = None
    reason: str = ""
    since: datetime | None = None
