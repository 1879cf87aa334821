"""StatusNotifications of the 2.0.1 station: one per EVSE (connectorId 1), after boot and on every change.

2.0.1 reports a connector's availability (Available, Occupied, Reserved, Unavailable, Faulted);
what the car does is the transaction's chargingState, and a fault's detail belongs in NotifyEvent
(not in this slice). So a change the CSMS would see as the same status (Charging -> SuspendedEV:
Occupied both) is not sent again. Each status is stamped with when it began. As in 1.6, a
connector whose device has never been read is reported at its first change or after a grace.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from ocpp.v201 import call

from adapters.ocpp201_upstream.mapping import connector_status
from gateway.domain.events import ConnectorStatusChanged
from gateway.domain.model import ConnectorStatus, iso_utc
from gateway.services.event_stream import EventStream
from gateway.services.site import Site
from gateway.services.tasks import cancel_and_wait

FIRST_STATUS_GRACE_S = 5.0
CONNECTOR_ID = 1  # every EVSE of the site has one connector

Send = Callable[[Any, Any], Awaitable[Any]]  # (peer, CALL payload) -> the answer, or None


def status_notification(evse_id: int, status: ConnectorStatus, at: datetime) -> call.StatusNotification:
    return call.StatusNotification(
        timestamp=iso_utc(at), connector_status=connector_status(status), evse_id=evse_id, connector_id=CONNECTOR_ID
    )


class StatusReports201:
    """What was last reported per EVSE, and the sending of StatusNotifications."""

    def __init__(self, site: Site, send: Send) -> None:
        self.site = site
        self._send = send
        self._reported: dict[int, str] = {}  # per EVSE, the connectorStatus last sent

    async def send_all(self, peer: Any) -> set[int]:
        """Every EVSE whose device has been read; returns the others (for ``follow``)."""
        unread = {cid for cid, c in self.site.upstream_connectors.items() if c.device_online is None}
        for evse_id in sorted(set(self.site.upstream_connectors) - unread):
            await self.send(peer, evse_id)
        return unread

    async def send(self, peer: Any, evse_id: int, at: datetime | None = None) -> None:
        """The EVSE's status now, stamped ``at`` or with when it began."""
        connector = self.site.upstream_connectors[evse_id]
        self._reported[evse_id] = connector_status(connector.status)
        await self._send(peer, status_notification(evse_id, connector.status, at or connector.status_since))

    async def follow(self, peer: Any, events: EventStream, unread: set[int]) -> None:
        late = asyncio.create_task(self._report_unread(peer, unread))
        try:
            async for event in events:
                if not isinstance(event, ConnectorStatusChanged):
                    continue
                if event.connector_id not in self.site.upstream_connectors:
                    continue
                unread.discard(event.connector_id)
                if self._reported.get(event.connector_id) == connector_status(event.status):
                    continue
                self._reported[event.connector_id] = connector_status(event.status)
                await self._send(peer, status_notification(event.connector_id, event.status, event.changed_at))
        finally:
            await cancel_and_wait(late)

    async def _report_unread(self, peer: Any, unread: set[int]) -> None:
        await asyncio.sleep(FIRST_STATUS_GRACE_S)
        for evse_id in sorted(unread):
            if evse_id in unread:
                unread.discard(evse_id)
                await self.send(peer, evse_id)
