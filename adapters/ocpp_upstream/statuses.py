"""StatusNotifications of the virtual charge point: connector 0 and connectors 1..N.

After boot and after each reconnect, every connector is reported as it is now, except one whose
device has not been read yet: its status (Unavailable, the default before the first poll) would
be corrected a poll later, and a CSMS would see every connector flap Unavailable -> Available at
every restart. Such a connector is reported at its first status change (its first poll) or,
if none comes, after ``FIRST_STATUS_GRACE_S`` as it is then. Later, one StatusNotification per
change; a fault raised beside a more severe one still gets its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from ocpp.v16 import call

from gateway.domain.events import ConnectorStatusChanged
from gateway.domain.model import ConnectorStatus, Fault, iso_utc
from gateway.services.event_stream import EventStream
from gateway.services.ocpp_status import primary_fault, status_notification_fields
from gateway.services.site import Site
from gateway.services.tasks import cancel_and_wait

FIRST_STATUS_GRACE_S = 5.0  # how long a connector whose device was never read waits to be reported

Send = Callable[[Any, Any], Awaitable[Any]]  # (peer, CALL payload) -> the answer, or None


class StatusReports:
    """What was last reported per connector, and the sending of StatusNotifications."""

    def __init__(self, site: Site, send: Send) -> None:
        self.site = site
        self._send = send
        self._reported_faults: dict[int, tuple[Fault, ...]] = {}  # per connector, as last sent
        self._reported_zero = ConnectorStatus.AVAILABLE  # connector 0, as last sent

    async def send_all(self, peer: Any) -> set[int]:
        """Connector 0 and every connector whose device has been read; returns the others (for ``follow``)."""
        unread = {cid for cid, c in self.site.upstream_connectors.items() if c.device_online is None}
        await self._send_zero(peer, self.site.clock.now())
        for connector_id in sorted(set(self.site.upstream_connectors) - unread):
            await self.send(peer, only=connector_id)
        return unread

    async def send(self, peer: Any, only: int | None = None, at: datetime | None = None) -> None:
        """Connector 0 and every connector (or just ``only``), stamped ``at`` or with when each status began."""
        if only in (None, 0):
            await self._send_zero(peer, at or self.site.clock.now())
        for connector in self.site.upstream_connectors.values():
            if only not in (None, connector.connector_id):
                continue
            faults = connector.faults  # as sent: it may change while we await the answer
            self._reported_faults[connector.connector_id] = faults
            stamp = at or connector.status_since
            await self._send_status(peer, connector.connector_id, connector.status, faults, stamp)

    async def follow(self, peer: Any, events: EventStream, unread: set[int]) -> None:
        """Every status change from ``events``; ``unread`` connectors go out after the grace unless
        a change of theirs came first."""
        late = asyncio.create_task(self._report_unread(peer, unread))
        try:
            await self._each_change(peer, events, unread)
        finally:
            await cancel_and_wait(late)

    async def _report_unread(self, peer: Any, unread: set[int]) -> None:
        await asyncio.sleep(FIRST_STATUS_GRACE_S)
        for connector_id in sorted(unread):
            if connector_id in unread:  # not reported by a change while we sent the one before
                unread.discard(connector_id)
                await self.send(peer, only=connector_id)

    async def _each_change(self, peer: Any, events: EventStream, unread: set[int]) -> None:
        async for event in events:
            if not isinstance(event, ConnectorStatusChanged) or event.connector_id not in self.site.upstream_connectors:
                continue
            unread.discard(event.connector_id)
            reported = self._reported_faults.get(event.connector_id, ())
            primary = primary_fault(event.faults)
            for fault in event.faults:
                if fault not in reported and fault != primary:
                    await self._send_status(peer, event.connector_id, event.status, (fault,), event.changed_at)
            await self._send_status(peer, event.connector_id, event.status, event.faults, event.changed_at)
            self._reported_faults[event.connector_id] = event.faults
            if self._zero_status() is not self._reported_zero:
                await self._send_zero(peer, event.changed_at)

    def _zero_status(self) -> ConnectorStatus:
        """Connector 0 (the gateway as a whole) is Unavailable while every connector is taken out
        of service (ChangeAvailability of connector 0), Available otherwise."""
        in_service = any(c.available for c in self.site.upstream_connectors.values())
        return ConnectorStatus.AVAILABLE if in_service else ConnectorStatus.UNAVAILABLE

    async def _send_zero(self, peer: Any, at: datetime) -> None:
        self._reported_zero = self._zero_status()
        await self._send_status(peer, 0, self._reported_zero, (), at)

    async def _send_status(
        self, peer: Any, connector_id: int, status: ConnectorStatus, faults: tuple[Fault, ...], at: datetime
    ) -> None:
        fields = status_notification_fields(connector_id, status, faults)
        await self._send(peer, call.StatusNotification(connector_id=connector_id, timestamp=iso_utc(at), **fields))
