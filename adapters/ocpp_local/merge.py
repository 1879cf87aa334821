"""Merged mode: a native OCPP charger's connectors become connectors of the site's one charge point.

The gateway is the charger's CSMS. What the charger says becomes Site input: StatusNotification
a connector status, MeterValues a reading (its registers, as read), Start/StopTransaction a
session that goes upstream through the outbox under the gateway's identity with the connector
renumbered. The charger gets a transaction id at once, even while the CSMS is away; the id is
mapped to the session's local reference (kept in the settings store, so a StopTransaction
after a gateway restart still finds its session) and the upstream side patches in the CSMS's
id when it has one. Authorize is answered by the gateway's authorisation (the CSMS, or the
local list and cache when it is away).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import asdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ocpp.routing import on
from ocpp.v16 import call, call_result
from ocpp.v16.enums import Action, AuthorizationStatus
from websockets.asyncio.server import ServerConnection

from adapters.ocpp_local.charger_session import ChargerSession
from gateway.config import OcppChargerConfig
from gateway.domain.events import RelayToCharger
from gateway.domain.model import Reading
from gateway.domain.transactions import AuthStatus, StopReason
from gateway.services.ocpp_status import from_status_notification
from gateway.services.site import Site

log = logging.getLogger(__name__)

RELAY_CALL_S = 15.0  # a relayed command's answer from the charger (the CSMS waits for ours)
AUTHORIZE_WAIT_S = 20.0  # a charger waits about 30 s for an answer; the CSMS gets most of it
IDS_SECTION = "native_transactions"  # settings: charger transaction id -> local reference
REASONS = {
    "EVDisconnected": StopReason.EV_DISCONNECTED,
    "Local": StopReason.LOCAL,
    "Remote": StopReason.REMOTE,
    "PowerLoss": StopReason.POWER_LOSS,
    "Reboot": StopReason.REBOOT,
    "SoftReset": StopReason.SOFT_RESET,
    "HardReset": StopReason.HARD_RESET,
    "DeAuthorized": StopReason.DEAUTHORIZED,
    "EmergencyStop": StopReason.EMERGENCY_STOP,
}
AUTH_TO_OCPP = {
    AuthStatus.ACCEPTED: AuthorizationStatus.accepted,
    AuthStatus.BLOCKED: AuthorizationStatus.blocked,
    AuthStatus.EXPIRED: AuthorizationStatus.expired,
    AuthStatus.INVALID: AuthorizationStatus.invalid,
    AuthStatus.CONCURRENT_TX: AuthorizationStatus.concurrent_tx,
}


def _time(text: object, fallback: datetime) -> datetime:
    """An ISO 8601 time from a charger (the schema does not check the format: be forgiving)."""
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return fallback
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _number(value: object) -> float | None:
    try:
        return float(str(value))
    except ValueError:
        return None


def reading_from_meter_values(meter_values: Iterable[dict[str, Any]], now: datetime) -> Reading | None:
    """The registers a MeterValues carries (the newest timestamp wins), with units made ours."""
    fields: dict[str, Any] = {}
    phases: dict[str, dict[str, float]] = {"current_a": {}, "voltage_v": {}}
    measured_at: datetime | None = None
    for meter_value in meter_values:
        at = _time(meter_value.get("timestamp"), now)
        measured_at = at if measured_at is None or at > measured_at else measured_at
        for sample in meter_value.get("sampled_value", []):
            value = _number(sample.get("value"))
            if value is None:
                continue
            measurand = sample.get("measurand", "Energy.Active.Import.Register")
            kilo = str(sample.get("unit", "")).lower().startswith("k")
            phase = str(sample.get("phase", "L1"))[:2]
            if measurand == "Energy.Active.Import.Register":
                fields["energy_wh"] = round(value * 1000 if kilo else value)
            elif measurand == "Power.Active.Import":
                fields["power_w"] = value * 1000 if kilo else value
            elif measurand in ("Current.Import", "Voltage"):
                phases["current_a" if measurand == "Current.Import" else "voltage_v"][phase] = value
            elif measurand == "Current.Offered":
                fields["offered_current_a"] = value
            elif measurand == "SoC":
                fields["soc_percent"] = value
            elif measurand == "Temperature":
                fields["temperature_c"] = value
            elif measurand == "Frequency":
                fields["frequency_hz"] = value
    for name, by_phase in phases.items():
        if by_phase:
            fields[name] = tuple(by_phase.get(p) for p in ("L1", "L2", "L3") if p in by_phase or p == "L1")
    if measured_at is None or not fields:
        return None
    return Reading(measured_at, **fields)


def _plain(value: Any) -> Any:
    """JSON-able again: the ocpp library reads decimals as Decimal, which it cannot send."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def site_connectors(chargers: Iterable[OcppChargerConfig]) -> dict[tuple[str, int], int]:
    """(lowercased identity, the charger's connector number) -> the site's connector number."""
    return {
        (charger.identity.lower(), number): site_id
        for charger in chargers
        for number, site_id in enumerate(charger.connectors, start=1)
    }


class MergedSessions:
    """The ``handler_factory`` of LocalOcppServer for merged chargers."""

    def __init__(self, site: Site, chargers: Iterable[OcppChargerConfig], heartbeat_interval_s: int) -> None:
        self.site = site
        self.heartbeat_interval_s = heartbeat_interval_s
        chargers = list(chargers)
        self.identity = {c.identity.lower(): c.identity for c in chargers}  # -> as configured (the device name)
        self.site_connector = site_connectors(chargers)
        # site connector -> (identity, its number at the charger)
        self.charger_connector = {site_id: where for where, site_id in self.site_connector.items()}
        site.register_native(self.charger_connector)
        self._events = site.subscribe()  # from the start: no command may slip before run()
        self._relays: set[asyncio.Future[None]] = set()
        self.live: dict[str, MergedChargerSession] = {}  # lowercased identity -> its current connection
        stored = site.settings.load(IDS_SECTION) or {}
        self.local_refs: dict[int, str] = {int(k): str(v) for k, v in stored.items()}
        self._next_id = max(self.local_refs, default=0) + 1
        stored_next = site.settings.load(IDS_SECTION + "_next")
        if isinstance(stored_next, int) and stored_next > self._next_id:
            self._next_id = stored_next

    async def run(self) -> None:
        """Carry out the back office's commands for these chargers' connectors (RelayToCharger)."""
        try:
            async for event in self._events:
                if isinstance(event, RelayToCharger) and event.connector_id in self.charger_connector:
                    task = asyncio.ensure_future(self._relay(event))
                    self._relays.add(task)
                    task.add_done_callback(self._relays.discard)
        finally:
            self.site.unsubscribe(self._events)

    async def _relay(self, request: RelayToCharger) -> None:
        identity, number = self.charger_connector[request.connector_id]
        try:
            session = self.live.get(identity)
            if session is None:
                raise ConnectionError(f"charger {self.identity[identity]} is not connected")
            result = await asyncio.wait_for(session.call(self._call(request, number), suppress=False), RELAY_CALL_S)
        except Exception as exc:  # its answer is the caller's business: hand the error over
            if not request.answer.done():
                request.answer.set_exception(exc)
            return
        if not request.answer.done():
            request.answer.set_result(_plain(asdict(result)))

    def _call(self, request: RelayToCharger, number: int) -> Any:
        """The command in the charger's terms: its connector number, its transaction id."""
        payload = request.payload
        if request.action == "RemoteStartTransaction":
            return call.RemoteStartTransaction(id_tag=payload["id_tag"], connector_id=number)
        if request.action == "RemoteStopTransaction":
            return call.RemoteStopTransaction(transaction_id=self._charger_transaction_id(payload["local_ref"]))
        if request.action == "UnlockConnector":
            return call.UnlockConnector(connector_id=number)
        if request.action == "ChangeAvailability":
            whole = payload.get("whole_charger", False)
            return call.ChangeAvailability(connector_id=0 if whole else number, type=payload["type"])
        if request.action == "Reset":
            return call.Reset(type=payload["type"])
        if request.action == "ClearChargingProfile":
            return call.ClearChargingProfile(
                id=payload.get("id"),
                connector_id=number,
                charging_profile_purpose=payload.get("charging_profile_purpose"),
                stack_level=payload.get("stack_level"),
            )
        if request.action == "GetCompositeSchedule":
            unit = payload.get("charging_rate_unit")
            return call.GetCompositeSchedule(connector_id=number, duration=payload["duration"], charging_rate_unit=unit)
        if request.action == "SetChargingProfile":
            profile = _plain(payload["profile"])
            if payload.get("local_ref") is not None:
                profile["transaction_id"] = self._charger_transaction_id(payload["local_ref"])
            return call.SetChargingProfile(connector_id=number, cs_charging_profiles=profile)
        raise NotImplementedError(f"{request.action} is not relayed to native chargers")

    def _charger_transaction_id(self, local_ref: str) -> int:
        ids = [tid for tid, ref in self.local_refs.items() if ref == local_ref]
        if not ids:
            raise LookupError("the charger's transaction id of this session is not known")
        return ids[0]

    def __call__(self, identity: str, connection: ServerConnection) -> MergedChargerSession:
        session = MergedChargerSession(self, self.identity.get(identity.lower(), identity), connection)
        self.live[identity.lower()] = session  # a reconnect replaces the old connection
        return session

    def transaction_id(self, local_ref: str) -> int:
        """A new charger transaction id for ``local_ref``, never given before (also across restarts)."""
        transaction_id, self._next_id = self._next_id, self._next_id + 1
        self.local_refs[transaction_id] = local_ref
        self._save()
        return transaction_id

    def finished(self, transaction_id: int) -> str | None:
        local_ref = self.local_refs.pop(transaction_id, None)
        self._save()
        return local_ref

    def _save(self) -> None:
        self.site.settings.save(IDS_SECTION, {str(k): v for k, v in self.local_refs.items()})
        self.site.settings.save(IDS_SECTION + "_next", self._next_id)


class PassthroughFeed:
    """The ``on_frame`` observer of passthrough relays: what a passthrough charger tells its own
    CSMS about its connectors (StatusNotification, MeterValues) is shown on MQTT too. Its
    sessions stay between it and its CSMS: nothing of it goes upstream under the gateway's
    identity."""

    def __init__(self, site: Site, chargers: Iterable[OcppChargerConfig]) -> None:
        self.site = site
        self.site_connector = site_connectors(chargers)

    def __call__(
        self, identity: str, direction: str, message_type: int, action: str | None, payload: dict[str, Any]
    ) -> None:
        if message_type != 2 or direction != "to_csms" or action not in ("StatusNotification", "MeterValues"):
            return
        site_id = self.site_connector.get((identity.lower(), _int(payload.get("connectorId"))))
        if site_id is None:
            return
        now = self.site.clock.now()
        if action == "StatusNotification":
            status, faults = from_status_notification(
                str(payload.get("status")),
                str(payload.get("errorCode")),
                str(payload.get("info", "")),
                str(payload.get("vendorErrorCode", "")),
            )
            self.site.native_status(site_id, status, faults, _time(payload.get("timestamp"), now))
        else:
            meter_values = [_snake_meter_value(value) for value in payload.get("meterValue", [])]
            reading = reading_from_meter_values(meter_values, now)
            if reading is not None:
                self.site.native_reading(site_id, reading)


def _int(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return -1


def _snake_meter_value(value: dict[str, Any]) -> dict[str, Any]:
    """A raw (camelCase) MeterValue as the library hands them to handlers."""
    return {"timestamp": value.get("timestamp"), "sampled_value": value.get("sampledValue", [])}


class MergedChargerSession(ChargerSession):
    """A ChargerSession whose messages feed the Site instead of a log."""

    def __init__(self, merged: MergedSessions, identity: str, connection: ServerConnection) -> None:
        super().__init__(
            identity, connection, heartbeat_interval_s=merged.heartbeat_interval_s, transaction_ids=iter(())
        )
        self.merged = merged
        self.site = merged.site

    async def start(self) -> None:
        try:
            await super().start()
        finally:
            if self.merged.live.get(self.id.lower()) is self:  # not when a reconnect replaced us
                del self.merged.live[self.id.lower()]
                self.site.native_offline(self.id, self.site.clock.now())

    def _connector(self, number: int) -> int | None:
        site_id = self.merged.site_connector.get((self.id.lower(), int(number)))
        if site_id is None:
            log.warning("OCPP charger %s: connector %s is not in its configured connectors", self.id, number)
        return site_id

    @on(Action.status_notification)
    def on_status_notification(self, **payload: Any) -> call_result.StatusNotification:
        self._received(Action.status_notification, payload)
        number = int(payload["connector_id"])
        site_id = self._connector(number) if number else None
        if site_id is not None:
            status, faults = from_status_notification(
                payload["status"], payload["error_code"], payload.get("info", ""), payload.get("vendor_error_code", "")
            )
            at = _time(payload.get("timestamp"), self.site.clock.now())
            self.site.native_status(site_id, status, faults, at)
        return call_result.StatusNotification()

    @on(Action.meter_values)
    def on_meter_values(self, **payload: Any) -> call_result.MeterValues:
        self._received(Action.meter_values, payload)
        number = int(payload["connector_id"])
        site_id = self._connector(number) if number else None
        reading = reading_from_meter_values(payload["meter_value"], self.site.clock.now())
        if site_id is not None and reading is not None:
            self.site.native_reading(site_id, reading)
        return call_result.MeterValues()

    @on(Action.authorize)
    async def on_authorize(self, **payload: Any) -> call_result.Authorize:
        self._received(Action.authorize, payload)
        site_id = next((cid for (ident, _), cid in self.merged.site_connector.items() if ident == self.id.lower()), 0)
        try:
            status = await asyncio.wait_for(self.site.native_authorize(site_id, payload["id_tag"]), AUTHORIZE_WAIT_S)
        except TimeoutError:
            status = AuthStatus.INVALID
        return call_result.Authorize(id_tag_info={"status": AUTH_TO_OCPP[status]})

    @on(Action.start_transaction)
    def on_start_transaction(self, **payload: Any) -> call_result.StartTransaction:
        """Accepted at once: the card was authorised before (Authorize) or the charger is free to
        use; the CSMS's own answer comes with StartTransaction.conf upstream."""
        self._received(Action.start_transaction, payload)
        site_id = self._connector(int(payload["connector_id"]))
        if site_id is None:
            return call_result.StartTransaction(transaction_id=0, id_tag_info={"status": AuthorizationStatus.invalid})
        at = _time(payload.get("timestamp"), self.site.clock.now())
        local_ref = self.site.native_start(site_id, payload["id_tag"], int(payload["meter_start"]), at)
        transaction_id = self.merged.transaction_id(local_ref)
        return call_result.StartTransaction(
            transaction_id=transaction_id, id_tag_info={"status": AuthorizationStatus.accepted}
        )

    @on(Action.stop_transaction)
    def on_stop_transaction(self, **payload: Any) -> call_result.StopTransaction:
        self._received(Action.stop_transaction, payload)
        local_ref = self.merged.finished(int(payload["transaction_id"]))
        at = _time(payload.get("timestamp"), self.site.clock.now())
        reason = REASONS.get(str(payload.get("reason", "Local")), StopReason.OTHER)
        if local_ref is None or not self.site.native_stop(local_ref, int(payload["meter_stop"]), at, reason):
            log.warning(
                "OCPP charger %s: StopTransaction for unknown transaction %s", self.id, payload["transaction_id"]
            )
        return call_result.StopTransaction()
