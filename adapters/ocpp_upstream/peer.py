"""The ocpp-library side of the upstream connection: the CSMS's requests and their answers.

Handlers answer at once and never await a CALL of their own (that would deadlock the
connection); whatever must be sent afterwards goes through ``@after`` or the Site's events.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ocpp.routing import after, on
from ocpp.v16 import ChargePoint, call_result
from ocpp.v16.enums import Action
from websockets.asyncio.client import ClientConnection

if TYPE_CHECKING:
    from adapters.ocpp_upstream.charge_point import VirtualChargePoint

log = logging.getLogger(__name__)
# The ocpp library logs every frame at INFO, id tags included: keep it at WARNING (see cli.py).
frame_log = logging.getLogger("ocpp")

TRIGGERABLE = frozenset({"BootNotification", "Heartbeat", "StatusNotification", "MeterValues"})


class Peer(ChargePoint):
    """The ocpp-library side of one connection; handlers delegate to the VirtualChargePoint."""

    def __init__(self, owner: VirtualChargePoint, connection: ClientConnection, timeout_s: float) -> None:
        super().__init__(owner.settings.charge_point_id, connection, response_timeout=timeout_s, logger=frame_log)
        self.owner = owner

    @on(Action.get_configuration)
    def on_get_configuration(self, key: list[str] | None = None) -> Any:
        known, unknown = self.owner.configuration.get(key)
        return call_result.GetConfiguration(configuration_key=known, unknown_key=unknown or None)

    @on(Action.remote_start_transaction)
    def on_remote_start(self, id_tag: str, connector_id: int | None = None, **_: Any) -> Any:
        authorize_first = self.owner.configuration.boolean("AuthorizeRemoteTxRequests")
        accepted = self.owner.site.remote_start(connector_id, id_tag, authorize_first)
        log.info("CSMS remote start on connector %s: %s", connector_id, "Accepted" if accepted else "Rejected")
        return call_result.RemoteStartTransaction(status="Accepted" if accepted else "Rejected")

    @on(Action.remote_stop_transaction)
    def on_remote_stop(self, transaction_id: int) -> Any:
        local_ref = self.owner.transactions.local_ref(transaction_id)
        accepted = local_ref is not None and self.owner.site.remote_stop(local_ref)
        log.info("CSMS remote stop of transaction %s: %s", transaction_id, "Accepted" if accepted else "Rejected")
        return call_result.RemoteStopTransaction(status="Accepted" if accepted else "Rejected")

    @on(Action.trigger_message)
    def on_trigger_message(self, requested_message: str, connector_id: int | None = None) -> Any:
        if requested_message not in TRIGGERABLE:
            return call_result.TriggerMessage(status="NotImplemented")
        if connector_id is not None and connector_id != 0 and connector_id not in self.owner.site.connectors:
            return call_result.TriggerMessage(status="Rejected")
        return call_result.TriggerMessage(status="Accepted")

    @after(Action.trigger_message)
    async def after_trigger_message(self, requested_message: str, connector_id: int | None = None) -> None:
        if requested_message in TRIGGERABLE:
            await self.owner.send_triggered(self, requested_message, connector_id)

    @on(Action.change_configuration)
    def on_change_configuration(self, key: str, value: str) -> Any:
        status = self.owner.configuration.change(key, value)
        log.info("CSMS changed configuration %s=%s: %s", key, value, status)
        return call_result.ChangeConfiguration(status=status)
