"""DemoCsms201: a minimal OCPP 2.0.1 CSMS that accepts, records and logs what it receives.

The 2.0.1 counterpart of ``DemoCsms``, built on it (same surface: host/port, optional password, scripted
``boot_answers``, ``received``, ``connected``, ``wait_for``, ``answer_delay_s``). It validates every
frame with the ``ocpp`` library's 2.0.1 schemas in both directions, so what the gateway sends is
checked by an independent peer, and it can send the station the requests a CSMS starts with
(``call``): RequestStartTransaction, RequestStopTransaction, Reset, ChangeAvailability,
TriggerMessage, GetVariables, SetVariables, GetBaseReport (whose NotifyReports it records),
SetChargingProfile, GetChargingProfiles (whose ReportChargingProfiles it records)...
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from ocpp.charge_point import snake_to_camel_case
from ocpp.routing import on
from ocpp.v201 import ChargePoint, call_result
from ocpp.v201.enums import Action
from websockets.asyncio.server import ServerConnection

from adapters.demo_csms.csms import DemoCsms, Received

SUBPROTOCOL = "ocpp2.0.1"


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _describe(action: str, payload: dict[str, Any]) -> str:
    """One readable line per message for the demo's log (never an id token)."""
    if action == "StatusNotification":
        return f"EVSE {payload['evseId']}: {payload['connectorStatus']}"
    if action == "TransactionEvent":
        info = payload["transactionInfo"]
        energy = [
            f"{s['value']} Wh"
            for v in payload.get("meterValue", [])
            for s in v["sampledValue"]
            if s.get("measurand", "Energy.Active.Import.Register") == "Energy.Active.Import.Register"
        ]
        return f"{payload['eventType']} #{payload['seqNo']} {info['transactionId']} {' '.join(energy)}".rstrip()
    if action == "NotifyReport":
        return f"report {payload['requestId']} part {payload['seqNo']}: {len(payload.get('reportData', []))} variables"
    if action == "SecurityEventNotification":
        return f"{payload['type']} at {payload['timestamp']}"
    if action == "ReportChargingProfiles":
        return f"request {payload['requestId']} EVSE {payload['evseId']}: {len(payload['chargingProfile'])} profiles"
    if action == "BootNotification":
        station = payload["chargingStation"]
        return f"{station['vendorName']} {station['model']} ({payload['reason']})"
    return ""


class _Session201(ChargePoint):
    """The CSMS side of one station connection."""

    def __init__(self, csms: DemoCsms201, station_id: str, connection: ServerConnection) -> None:
        super().__init__(station_id, connection, logger=logging.getLogger("ocpp.demo_csms"))
        self.csms = csms

    async def _record(self, action: str, kwargs: dict[str, Any]) -> None:
        if self.csms.answer_delay_s:
            await asyncio.sleep(self.csms.answer_delay_s)
        self.csms.record(Received(self.id, action, snake_to_camel_case(kwargs)))

    def _token_info(self, id_token: dict[str, Any] | None) -> dict[str, Any]:
        tag = str(id_token["id_token"]) if id_token else ""
        return {"status": "Blocked" if tag in self.csms.blocked_id_tags else "Accepted"}

    @on(Action.boot_notification)
    async def on_boot(self, **kwargs: Any) -> Any:
        await self._record("BootNotification", kwargs)
        status, interval = self.csms.next_boot_answer()
        return call_result.BootNotification(current_time=_now_iso(), interval=interval, status=status)

    @on(Action.heartbeat)
    async def on_heartbeat(self, **kwargs: Any) -> Any:
        await self._record("Heartbeat", kwargs)
        return call_result.Heartbeat(current_time=_now_iso())

    @on(Action.status_notification)
    async def on_status(self, **kwargs: Any) -> Any:
        await self._record("StatusNotification", kwargs)
        return call_result.StatusNotification()

    @on(Action.authorize)
    async def on_authorize(self, id_token: dict[str, Any], **kwargs: Any) -> Any:
        await self._record("Authorize", {"id_token": id_token, **kwargs})
        return call_result.Authorize(id_token_info=self._token_info(id_token))

    @on(Action.transaction_event)
    async def on_transaction_event(self, **kwargs: Any) -> Any:
        await self._record("TransactionEvent", kwargs)
        if kwargs.get("id_token") is None:
            return call_result.TransactionEvent()
        return call_result.TransactionEvent(id_token_info=self._token_info(kwargs["id_token"]))

    @on(Action.meter_values)
    async def on_meter_values(self, **kwargs: Any) -> Any:
        await self._record("MeterValues", kwargs)
        return call_result.MeterValues()

    @on(Action.notify_event)
    async def on_notify_event(self, **kwargs: Any) -> Any:
        await self._record("NotifyEvent", kwargs)
        return call_result.NotifyEvent()

    @on(Action.security_event_notification)
    async def on_security_event(self, **kwargs: Any) -> Any:
        await self._record("SecurityEventNotification", kwargs)
        return call_result.SecurityEventNotification()

    @on(Action.notify_report)
    async def on_notify_report(self, **kwargs: Any) -> Any:
        await self._record("NotifyReport", kwargs)
        return call_result.NotifyReport()

    @on(Action.report_charging_profiles)
    async def on_report_charging_profiles(self, **kwargs: Any) -> Any:
        await self._record("ReportChargingProfiles", kwargs)
        return call_result.ReportChargingProfiles()


class DemoCsms201(DemoCsms):
    """Serves ``ws://host:port/ocpp/<station id>`` with subprotocol ocpp2.0.1; records every CALL.

    ``boot_answers`` scripts the BootNotification replies (status, interval); the last one repeats;
    ``blocked_id_tags`` are answered Blocked (Authorize, TransactionEvent).
    """

    subprotocol = SUBPROTOCOL

    def _new_session(self, charge_point_id: str, connection: ServerConnection) -> Any:
        return _Session201(self, charge_point_id, connection)

    @staticmethod
    def describe(action: str, payload: dict[str, Any]) -> str:
        return _describe(action, payload)
