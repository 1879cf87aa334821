"""What a connection (``Peer``) needs of the charge point that owns it.

The ``VirtualChargePoint`` keeps the link alive and creates a ``Peer`` per connection; the peer
answers the CSMS's requests by asking its owner. Naming that need as a Protocol lets peer.py depend
on this small interface instead of on charge_point.py, which imports peer.py: no import cycle.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # types only: none of these modules imports peer.py
    from ocpp.v16 import ChargePoint

    from adapters.ocpp_upstream.configuration import OcppConfiguration
    from adapters.ocpp_upstream.transactions import TransactionLog
    from gateway.config import UpstreamConfig
    from gateway.domain.authorizer import Authorizer
    from gateway.services.site import Site
    from gateway.services.telemetry import Telemetry


class PeerOwner(Protocol):
    """The charge point behind a connection: its site, state and the actions the CSMS may ask."""

    site: Site
    settings: UpstreamConfig
    telemetry: Telemetry
    configuration: OcppConfiguration
    transactions: TransactionLog
    authorizer: Authorizer
    registration: str
    accepted: asyncio.Event

    def apply_site_settings(self) -> None: ...

    def save_configuration(self) -> None: ...

    def save_authorization(self) -> None: ...

    async def reset(self, hard: bool) -> None: ...

    async def send_triggered(self, peer: ChargePoint, message: str, connector_id: int | None) -> None:
        """Send what the CSMS triggered over ``peer`` (the connection asking, a ``Peer``)."""
        ...
