"""The health of the Site's links as last reported: each field device, and the CSMS."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class UpstreamState:
    """The CSMS link as the upstream adapter last reported it.

    ``reason``: why the link is down, as last reported (empty while connected). The adapter logs
    an outage once and then only at DEBUG, so this is where a site owner finds it later."""

    connected: bool = False
    registration: str = "none"
    changed_at: datetime | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class DeviceHealth:
    """Whether a field device answers: ``online`` is None before its first poll; ``reason`` while down."""

    online: bool | None = None
    reason: str = ""
    since: datetime | None = None
