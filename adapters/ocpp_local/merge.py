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
from decimal import Decimal
from typing import Any

from ocpp.exceptions import InternalError, PropertyConstraintViolationError
from ocpp.routing import on
from ocpp.v16 import call, call_result
from ocpp.v16.enums import Action, AuthorizationStatus
from websockets.asyncio.server import ServerConnection

from adapters.ocpp_local.charger_session import ChargerSession
from adapters.ocpp_local.meter_values import REGISTER, BadMeterValue, parse_time, quoted, reading_from_meter_values
from adapters.ocpp_local.native_limits import GATEWAY_PROFILE_ID_BASE, NativeLimits, reserved_problem
from gateway.config import OcppChargerConfig
from gateway.domain.events import CurrentLimitRequested, RelayToCharger
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
        site.native.register(self.charger_connector)
        self._events = site.subscribe()  # from the start: no command may slip before run()
        self._relays: set[asyncio.Future[None]] = set()
        self.live: dict[str, MergedChargerSession] = {}  # lowercased identity -> its current connection
        self.limits = NativeLimits(self)  # each connector's share, as a charging profile of the gateway's
        stored = site.settings.load(IDS_SECTION) or {}
        self.local_refs: dict[int, str] = {int(k): str(v) for k, v in stored.items()}
        self._next_id = max(self.local_refs, default=0) + 1
        stored_next = site.settings.load(IDS_SECTION + "_next")
        if isinstance(stored_next, int) and stored_next > self._next_id:
            self._next_id = stored_next

    async def run(self) -> None:
        """Carry out the back office's commands for these chargers' connectors (RelayToCharger), and
        send them their share of the site's power (CurrentLimitRequested, see native_limits)."""
        try:
            async for event in self._events:
                if isinstance(event, CurrentLimitRequested) and event.connector_id in self.charger_connector:
                    self.limits.requested(event.connector_id, event.limit_a)
                elif isinstance(event, RelayToCharger) and event.connector_id in self.charger_connector:
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
        if request.action == "ClearChargingProfile" and getattr(result, "status", None) == "Accepted":
            self.limits.cleared(request.connector_id)  # the gateway's profile may have gone with the CSMS's
        if not request.answer.done():
            request.answer.set_result(_plain(asdict(result)))

    def _call(self, request: RelayToCharger, number: int) -> Any:
        """The command in the charger's terms: its connector number, its transaction id."""
        payload = request.payload
        if request.action == "RemoteStartTransaction":
            profile = payload.get("charging_profile")  # a TxProfile for the session to come
            if profile is not None:  # it has no transaction yet (and a CSMS's id means nothing to the charger)
                profile = {key: value for key, value in _plain(profile).items() if key != "transaction_id"}
                _refuse_reserved(profile)
            return call.RemoteStartTransaction(id_tag=payload["id_tag"], connector_id=number, charging_profile=profile)
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
            if (payload.get("id") or 0) >= GATEWAY_PROFILE_ID_BASE:
                raise ValueError(f"profile ids from {GATEWAY_PROFILE_ID_BASE} are the gateway's own on native chargers")
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
            _refuse_reserved(profile)
            if payload.get("local_ref") is not None:
                profile["transaction_id"] = self._charger_transaction_id(payload["local_ref"])
            return call.SetChargingProfile(connector_id=number, cs_charging_profiles=profile)
        raise NotImplementedError(f"{request.action} is not relayed to native chargers")

    def _charger_transaction_id(self, local_ref: str) -> int:
        transaction_id = self.known_id(local_ref)
        if transaction_id is None:
            raise LookupError("the charger's transaction id of this session is not known")
        return transaction_id

    def known_id(self, local_ref: str) -> int | None:
        return next((tid for tid, ref in self.local_refs.items() if ref == local_ref), None)

    def __call__(self, identity: str, connection: ServerConnection) -> MergedChargerSession:
        session = MergedChargerSession(self, self.identity.get(identity.lower(), identity), connection)
        self.live[identity.lower()] = session  # a reconnect replaces the old connection
        self.limits.reconnected(identity.lower())  # its shares go again with its first message
        return session

    def transaction_id(self, local_ref: str) -> int:
        """The charger transaction id of ``local_ref``: the one it has, or a new one never given
        before (also across restarts)."""
        known = self.known_id(local_ref)
        if known is not None:
            return known
        transaction_id, self._next_id = self._next_id, self._next_id + 1
        self.local_refs[transaction_id] = local_ref
        self._save()
        connector_id = self.site.session_connector(local_ref)
        if connector_id is not None:  # its share waited for the charger's transaction id
            # (called from the StartTransaction handler: the task sends after the answer has gone)
            asyncio.get_running_loop().call_soon(self.limits.update, connector_id)
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
            self.site.native.status(site_id, status, faults, parse_time(payload.get("timestamp"), now))
        else:
            meter_values = [_snake_meter_value(value) for value in payload.get("meterValue", [])]
            try:
                reading = reading_from_meter_values(meter_values, now)
            except BadMeterValue as exc:  # its CSMS answers the charger; nothing of it is shown
                log.debug("OCPP charger %s (passthrough): MeterValues not shown: %s", identity, exc)
                return
            if reading is not None:
                self.site.native.reading(site_id, reading)


def _refuse_reserved(profile: dict[str, Any]) -> None:
    """A CSMS profile that would take the place of the gateway's own is not relayed."""
    problem = reserved_problem(profile)
    if problem is not None:
        raise ValueError(problem)


def _refused(cause: str) -> PropertyConstraintViolationError:
    """The CALLERROR for a value the schema lets through but the gateway cannot use; ``cause``
    (no id tags in it) goes to the charger and, once, to the log (see ChargerSession)."""
    return PropertyConstraintViolationError(details={"cause": cause})


def _not_stored(action: str) -> InternalError:
    """The CALLERROR for a transaction message the gateway could not put on disk (it refuses
    writes): an answer would make the charger forget what a crash would then lose, so it is asked
    to send it again (chargers retry transaction messages)."""
    return InternalError(details={"cause": f"{action} not stored: the gateway's disk refuses writes; send it again"})


def _raw_register(payload: dict[str, Any]) -> str:
    """The energy register values of a MeterValues as sent, for the log and the charger."""
    values = [
        quoted(sample.get("value"))
        for meter_value in payload.get("meter_value", [])
        for sample in meter_value.get("sampled_value", [])
        if sample.get("measurand", REGISTER) == REGISTER
    ]
    return ", ".join(values[:3]) + (", ..." if len(values) > 3 else "")


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
                self.site.native.offline(self.id, self.site.clock.now())

    def _received(self, action: str, payload: dict[str, Any]) -> None:
        super()._received(action, payload)
        # every message says the charger is there: what it should have and has not, it gets now
        # (sent from a task, after this message's answer)
        asyncio.get_running_loop().call_soon(self.merged.limits.update_charger, self.id.lower())

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
            at = parse_time(payload.get("timestamp"), self.site.clock.now())
            self.site.native.status(site_id, status, faults, at)
        return call_result.StatusNotification()

    @on(Action.meter_values)
    def on_meter_values(self, **payload: Any) -> call_result.MeterValues:
        """Refused (PropertyConstraintViolation) when a value cannot be used or the register guard
        refuses the energy register: the connector keeps its reading. A stale one is answered."""
        self._received(Action.meter_values, payload)
        number = int(payload["connector_id"])
        site_id = self._connector(number) if number else None
        try:
            reading = reading_from_meter_values(payload["meter_value"], self.site.clock.now())
        except BadMeterValue as exc:
            raise _refused(f"connector {number}: {exc}") from None
        if site_id is not None and reading is not None:
            fault = self.site.native.reading(site_id, reading)
            if fault is not None:
                raise _refused(f"connector {number}: energy register {_raw_register(payload)} refused: {fault.info}")
        return call_result.MeterValues()

    @on(Action.authorize)
    async def on_authorize(self, **payload: Any) -> call_result.Authorize:
        self._received(Action.authorize, payload)
        site_id = next((cid for (ident, _), cid in self.merged.site_connector.items() if ident == self.id.lower()), 0)
        try:
            status = await asyncio.wait_for(self.site.native.authorize(site_id, payload["id_tag"]), AUTHORIZE_WAIT_S)
        except TimeoutError:
            status = AuthStatus.INVALID
        return call_result.Authorize(id_tag_info={"status": AUTH_TO_OCPP[status]})

    @on(Action.start_transaction)
    def on_start_transaction(self, **payload: Any) -> call_result.StartTransaction:
        """Accepted at once: the card was authorised before (Authorize) or the charger is free to
        use; the CSMS's own answer comes with StartTransaction.conf upstream. A start sent again
        (its answer lost) gets the same transaction id. meterStart is a register reading: a
        negative one, or one the register guard refuses, is refused (PropertyConstraintViolation)."""
        self._received(Action.start_transaction, payload)
        number, meter_start = int(payload["connector_id"]), int(payload["meter_start"])
        site_id = self._connector(number)
        if site_id is None:
            return call_result.StartTransaction(transaction_id=0, id_tag_info={"status": AuthorizationStatus.invalid})
        if meter_start < 0:
            raise _refused(f"connector {number}: meterStart {meter_start} is negative")
        at = parse_time(payload.get("timestamp"), self.site.clock.now())
        fault = self.site.native.reading(site_id, Reading(at, energy_wh=meter_start))
        if fault is not None:
            raise _refused(f"connector {number}: meterStart {meter_start} refused: {fault.info}")
        local_ref = self.site.native.start(site_id, payload["id_tag"], meter_start, at)
        if not self.site.settle():  # queued upstream, on disk, before the charger gets its answer
            raise _not_stored("StartTransaction")  # it sends it again; the repeat is the same session
        transaction_id = self.merged.transaction_id(local_ref)
        return call_result.StartTransaction(
            transaction_id=transaction_id, id_tag_info={"status": AuthorizationStatus.accepted}
        )

    @on(Action.stop_transaction)
    def on_stop_transaction(self, **payload: Any) -> call_result.StopTransaction:
        self._received(Action.stop_transaction, payload)
        transaction_id = int(payload["transaction_id"])
        local_ref = self.merged.local_refs.get(transaction_id)
        at = parse_time(payload.get("timestamp"), self.site.clock.now())
        reason = REASONS.get(str(payload.get("reason", "Local")), StopReason.OTHER)
        if local_ref is not None:  # (False for a stop sent again whose session is stopped already)
            self.site.native.stop(local_ref, int(payload["meter_stop"]), at, reason)
        if not self.site.settle():  # queued upstream, on disk, before the charger gets its answer
            raise _not_stored("StopTransaction")  # it sends it again (the session is stopped already)
        self.merged.finished(transaction_id)  # and forgotten only then: a stop resent after a kill still finds it
        if local_ref is None:
            log.warning(
                "OCPP charger %s: StopTransaction for unknown transaction %s", self.id, payload["transaction_id"]
            )
        return call_result.StopTransaction()
