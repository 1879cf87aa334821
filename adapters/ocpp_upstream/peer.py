"""The ocpp-library side of the upstream connection: the CSMS's requests and their answers.

Handlers answer at once and never await a CALL of their own (that would deadlock the
connection); whatever must be sent afterwards goes through ``@after`` or the Site's events.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ocpp.exceptions import FormationViolationError, OCPPError
from ocpp.messages import Call
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint, call_result
from ocpp.v16.enums import Action

from adapters.ocpp_callerrors import unsupported_action
from adapters.ocpp_link import CsmsPeer
from adapters.ocpp_upstream.incoming import short, unanswered
from adapters.ocpp_upstream.local_list import get_local_list_version, send_local_list
from adapters.ocpp_upstream.smart_charging import (
    cap_first_period,
    composite_schedule_result,
    profile_from_ocpp,
    purpose_from_ocpp,
    unit_from_ocpp,
)
from gateway.domain.authorization import mask_id_tag
from gateway.domain.charging_profiles import RateUnit
from gateway.domain.commands import Command, CommandSource, result_from_status
from gateway.domain.errors import CommandRejected
from gateway.domain.events import ChargingProfilesChanged
from gateway.services.charging_limits import allowed_now_a

if TYPE_CHECKING:
    from adapters.ocpp_upstream.owner import PeerOwner

log = logging.getLogger(__name__)
# The ocpp library logs every frame at INFO, id tags included: keep it at WARNING (see cli.py).

RELAY_TIMEOUT_S = 20.0  # a native charger's answer to a relayed command, within the CSMS's patience
UNLIMITED_A = 32.0  # what a composite schedule shows where no profile limits (OCPP has no "none")
TRIGGERABLE = frozenset({"BootNotification", "Heartbeat", "StatusNotification", "MeterValues"})


class Peer(CsmsPeer, ChargePoint):
    """The ocpp-library side of one connection; handlers delegate to its owner (the VirtualChargePoint)."""

    owner: PeerOwner

    async def _handle_call(self, msg: Call) -> Any:
        """The library's, but silent while Rejected, with OCPP 1.6's CALLERROR for an action the
        gateway does not carry out, and one log line instead of a traceback (see incoming.py)."""
        if unanswered(self.owner.registration, self.owner.accepted.is_set()):
            log.warning("CSMS sent %s while the gateway is Rejected: not answered (OCPP 1.6, 4.2)", short(msg.action))
            return None
        if not isinstance(msg.action, str):
            error: OCPPError = FormationViolationError(details={"cause": "the action must be a string"})
            log.warning("CSMS sent a CALL whose action is not a string: answered %s", error.code)
            await self._send(msg.create_call_error(error).to_json())
            return None
        if "_on_action" not in self.route_map.get(msg.action, {}):
            error = unsupported_action(msg.action, "this charge point")
            log.warning("CSMS asked for %s: answered %s", short(msg.action), error.code)
            await self._send(msg.create_call_error(error).to_json())
            return None
        try:
            return await super()._handle_call(msg)
        except OCPPError as error:  # the request (or, a bug of ours, our answer) failed the schema
            cause = error.details.get("cause", "") if isinstance(error.details, dict) else ""
            log.warning("CSMS %s answered with CALLERROR %s: %s", msg.action, error.code, short(cause, 200))
            await self._send(msg.create_call_error(error).to_json())
            return None

    @on(Action.get_configuration)
    def on_get_configuration(self, key: list[str] | None = None) -> Any:
        known, unknown = self.owner.configuration.get(key)
        return call_result.GetConfiguration(configuration_key=known, unknown_key=unknown or None)

    def _record(self, command: Command, status: str, connector_id: int | None = None, **detail: Any) -> None:
        """The CSMS's command, answered ``status``, for the operator's event log (see Site.commands.record)."""
        self.owner.site.commands.record(command, CommandSource.CSMS, result_from_status(status), connector_id, **detail)

    async def _relayed(self, connector_id: int, action: str, payload: dict[str, Any], fallback: str) -> str:
        """A native charger's answer to a command for one of its connectors (its ``status``), or
        ``fallback`` when it is not connected, refuses, or does not answer in time."""
        answer = await self._relay_answer(connector_id, action, payload)
        status = str(answer.get("status", fallback)) if answer is not None else fallback
        log.info("CSMS %s on connector %s: relayed to its charger: %s", action, connector_id, status)
        return status

    async def _relay_answer(self, connector_id: int, action: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """A native charger's whole answer (snake_case), or None if it gave none."""
        return await self.owner.site.native.ask(connector_id, action, payload, RELAY_TIMEOUT_S)

    @on(Action.remote_start_transaction)
    async def on_remote_start(
        self, id_tag: str, connector_id: int | None = None, charging_profile: dict[str, Any] | None = None
    ) -> Any:
        site = self.owner.site
        if connector_id is not None and site.native.owns(connector_id):  # the charger decides, profile and all
            payload = {"connector_id": connector_id, "id_tag": id_tag, "charging_profile": charging_profile}
            status = await self._relayed(connector_id, "RemoteStartTransaction", payload, "Rejected")
            if status == "Accepted" and charging_profile is not None:
                self._mirror(connector_id, charging_profile, remote_start=True)
            self._record(Command.START, status, connector_id, id_tag=mask_id_tag(id_tag))
            return call_result.RemoteStartTransaction(status=status)
        profile = None
        if charging_profile is not None:  # a TxProfile for the session about to start
            try:
                if connector_id is None:
                    raise CommandRejected("a charging profile needs a connector")
                profile = profile_from_ocpp(connector_id, charging_profile)
                reason = site.charging_profiles.rejection_reason(profile, remote_start=True)
                if reason:
                    raise CommandRejected(reason)
            except CommandRejected as exc:
                log.warning("RemoteStartTransaction rejected: its charging profile: %s", exc)
                self._record(Command.START, "Rejected", connector_id, id_tag=mask_id_tag(id_tag), reason=str(exc))
                return call_result.RemoteStartTransaction(status="Rejected")
        authorize_first = self.owner.configuration.boolean("AuthorizeRemoteTxRequests")
        accepted = site.commands.remote_start(connector_id, id_tag, authorize_first, source=CommandSource.CSMS)
        if accepted and profile is not None:
            site.charging_profiles.install(profile, remote_start=True)
            site.request(ChargingProfilesChanged())
        log.info("CSMS remote start on connector %s: %s", connector_id, "Accepted" if accepted else "Rejected")
        return call_result.RemoteStartTransaction(status="Accepted" if accepted else "Rejected")

    @on(Action.remote_stop_transaction)
    async def on_remote_stop(self, transaction_id: int) -> Any:
        local_ref = self.owner.transactions.local_ref(transaction_id)
        native = self.owner.site.session_connector(local_ref) if local_ref is not None else None
        if local_ref is not None and native is not None and self.owner.site.native.owns(native):
            payload = {"local_ref": local_ref}
            status = await self._relayed(native, "RemoteStopTransaction", payload, "Rejected")
            self._record(Command.STOP, status, native, session=local_ref)
            return call_result.RemoteStopTransaction(status=status)
        if local_ref is None:
            self._record(Command.STOP, "Rejected", None, transaction_id=transaction_id, reason="no such transaction")
        accepted = local_ref is not None and self.owner.site.commands.remote_stop(local_ref, source=CommandSource.CSMS)
        log.info("CSMS remote stop of transaction %s: %s", transaction_id, "Accepted" if accepted else "Rejected")
        return call_result.RemoteStopTransaction(status="Accepted" if accepted else "Rejected")

    @on(Action.trigger_message)
    def on_trigger_message(self, requested_message: str, connector_id: int | None = None) -> Any:
        if requested_message not in TRIGGERABLE:
            return call_result.TriggerMessage(status="NotImplemented")
        if connector_id is not None and connector_id != 0 and connector_id not in self.owner.site.upstream_connectors:
            return call_result.TriggerMessage(status="Rejected")
        return call_result.TriggerMessage(status="Accepted")

    @after(Action.trigger_message)
    async def after_trigger_message(self, requested_message: str, connector_id: int | None = None) -> None:
        if requested_message in TRIGGERABLE:
            try:
                await self.owner.send_triggered(self, requested_message, connector_id)
            except Exception as exc:
                log.warning("triggered %s not sent: %s", requested_message, exc)

    @on(Action.set_charging_profile)
    async def on_set_charging_profile(self, connector_id: int, cs_charging_profiles: dict[str, Any]) -> Any:
        site = self.owner.site
        if site.native.owns(connector_id):  # the charger limits itself; a TxProfile names its session
            profile = dict(cs_charging_profiles)
            csms_id = profile.pop("transaction_id", None)
            local_ref = self.owner.transactions.local_ref(csms_id) if csms_id is not None else None
            payload = {"connector_id": connector_id, "profile": profile, "local_ref": local_ref}
            status = await self._relayed(connector_id, "SetChargingProfile", payload, "Rejected")
            if status == "Accepted":
                self._mirror(connector_id, cs_charging_profiles)
            self._record(Command.CHARGING_PROFILE, status, connector_id, **_profile_shown(cs_charging_profiles))
            return call_result.SetChargingProfile(status=status)
        try:
            if connector_id != 0 and connector_id not in site.upstream_connectors:
                raise CommandRejected(f"no connector {connector_id}")
            profile = profile_from_ocpp(connector_id, cs_charging_profiles)
            active = self.owner.transactions.active_id(connector_id) if connector_id else None
            site.charging_profiles.install(profile, active_transaction_id=active)
        except CommandRejected as exc:
            log.warning("SetChargingProfile on connector %s rejected: %s", connector_id, exc)
            shown = _profile_shown(cs_charging_profiles)
            self._record(Command.CHARGING_PROFILE, "Rejected", connector_id, **shown, reason=str(exc))
            return call_result.SetChargingProfile(status="Rejected")
        log.info("charging profile %s installed on connector %s", profile.profile_id, connector_id)
        self._record(Command.CHARGING_PROFILE, "Accepted", connector_id, **_profile_shown(cs_charging_profiles))
        site.request(ChargingProfilesChanged())
        return call_result.SetChargingProfile(status="Accepted")

    @on(Action.clear_charging_profile)
    async def on_clear_charging_profile(
        self,
        id: int | None = None,
        connector_id: int | None = None,
        charging_profile_purpose: str | None = None,
        stack_level: int | None = None,
    ) -> Any:
        which = {"id": id, "charging_profile_purpose": charging_profile_purpose, "stack_level": stack_level}
        if connector_id is not None and self.owner.site.native.owns(connector_id):
            status = await self._relayed(connector_id, "ClearChargingProfile", which, "Unknown")
            if status == "Accepted":  # and the copy the sharing reads goes too
                mirrored = self.owner.site.charging_profiles.clear(
                    profile_id=id,
                    connector_id=connector_id,
                    purpose=purpose_from_ocpp(charging_profile_purpose),
                    stack_level=stack_level,
                )
                if mirrored:
                    self.owner.site.request(ChargingProfilesChanged())
            self._record(Command.CLEAR_CHARGING_PROFILE, status, connector_id, **_shown(which))
            return call_result.ClearChargingProfile(status=status)
        cleared = self.owner.site.charging_profiles.clear(
            profile_id=id,
            connector_id=connector_id,
            purpose=purpose_from_ocpp(charging_profile_purpose),
            stack_level=stack_level,
            keep=self.owner.site.native.owns,  # a native charger's copies go only when it cleared them (above)
        )
        status = "Accepted" if cleared else "Unknown"
        self._record(Command.CLEAR_CHARGING_PROFILE, status, connector_id, **_shown(which))
        if not cleared:
            return call_result.ClearChargingProfile(status="Unknown")
        log.info("charging profiles %s cleared", cleared)
        self.owner.site.request(ChargingProfilesChanged())
        return call_result.ClearChargingProfile(status="Accepted")

    @on(Action.get_composite_schedule)
    async def on_get_composite_schedule(
        self, connector_id: int, duration: int, charging_rate_unit: str | None = None
    ) -> Any:
        site = self.owner.site
        if site.native.owns(connector_id):  # the charger keeps its own schedule
            asked = {"duration": duration, "charging_rate_unit": charging_rate_unit}
            answer = await self._relay_answer(connector_id, "GetCompositeSchedule", asked)
            if answer is None or answer.get("status") != "Accepted":
                return call_result.GetCompositeSchedule(status="Rejected")
            now_a = self._allowed_now(connector_id)
            schedule = answer.get("charging_schedule")
            if now_a is not None and isinstance(schedule, dict):
                try:
                    answer["charging_schedule"] = cap_first_period(schedule, now_a, site.charging_profiles.supply)
                except (CommandRejected, ValueError) as exc:  # a unit the gateway cannot convert to
                    log.warning("GetCompositeSchedule on connector %s: its share not shown: %s", connector_id, exc)
            return call_result.GetCompositeSchedule(**{**answer, "connector_id": connector_id})
        if connector_id != 0 and connector_id not in site.upstream_connectors:
            return call_result.GetCompositeSchedule(status="Rejected")
        unit = unit_from_ocpp(charging_rate_unit)
        start = site.clock.now()
        started_at = site.sessions.started_at(connector_id)
        now_a = self._allowed_now(connector_id)
        periods = site.charging_profiles.composite_schedule(
            connector_id, start, duration, started_at, unit, now_a=now_a
        )
        unlimited = UNLIMITED_A if unit is RateUnit.AMPERE else UNLIMITED_A * 230 * 3
        return composite_schedule_result(connector_id, start, duration, periods, unit, unlimited=unlimited)

    def _allowed_now(self, connector_id: int) -> float | None:
        return allowed_now_a(self.owner.site, connector_id)

    def _mirror(self, connector_id: int, raw: dict[str, Any], *, remote_start: bool = False) -> None:
        """A profile a native charger accepted from the CSMS, copied into the gateway's store: the
        sharing counts it in the connector's own bound, so the gateway's profile (which wins on the
        charger, see adapters.ocpp_local.native_limits) keeps the CSMS's limit in force."""
        site = self.owner.site
        try:
            profile = profile_from_ocpp(connector_id, raw)
            active = None if remote_start else self.owner.transactions.active_id(connector_id)
            site.charging_profiles.install(profile, active_transaction_id=active, remote_start=remote_start)
        except CommandRejected as exc:
            log.warning("charging profile for native connector %s not counted in its share: %s", connector_id, exc)
            return
        site.request(ChargingProfilesChanged())

    @on(Action.send_local_list)
    def on_send_local_list(
        self, list_version: int, update_type: str, local_authorization_list: list[dict[str, Any]] | None = None
    ) -> Any:
        answer = send_local_list(self.owner.authorizer.local_list, list_version, update_type, local_authorization_list)
        log.info("SendLocalList %s version %s: %s", update_type, list_version, answer.status)
        entries = len(local_authorization_list or [])  # the tags themselves are never recorded
        self._record(Command.LOCAL_LIST, answer.status, None, version=list_version, update=update_type, entries=entries)
        if answer.status == "Accepted":
            self.owner.save_authorization()
        return answer

    @on(Action.get_local_list_version)
    def on_get_local_list_version(self) -> Any:
        return get_local_list_version(self.owner.authorizer.local_list)

    @on(Action.clear_cache)
    def on_clear_cache(self) -> Any:
        self.owner.authorizer.cache.clear()
        self.owner.save_authorization()
        log.info("authorisation cache cleared by the CSMS")
        self._record(Command.CLEAR_CACHE, "Accepted")
        return call_result.ClearCache(status="Accepted")

    @on(Action.change_availability)
    async def on_change_availability(self, connector_id: int, type: str) -> Any:
        if self.owner.site.native.owns(connector_id):
            payload = {"connector_id": connector_id, "type": type}
            status = await self._relayed(connector_id, "ChangeAvailability", payload, "Rejected")
            self._record(Command.AVAILABILITY, status, connector_id, available=type == "Operative")
            return call_result.ChangeAvailability(status=status)
        site = self.owner.site
        status = site.commands.change_availability(
            connector_id, available=type == "Operative", source=CommandSource.CSMS
        )
        if connector_id == 0 and status != "Rejected":  # the whole site: its native chargers too, all at once
            chargers = site.native.one_connector_per_charger()
            answers = await asyncio.gather(
                *(
                    self._relayed(
                        native,
                        "ChangeAvailability",
                        {"connector_id": native, "type": type, "whole_charger": True},
                        "Rejected",
                    )
                    for native in chargers
                )
            )
            for answer in answers:
                status = answer if answer == "Rejected" or status == "Accepted" else status
        log.info("CSMS made connector %s %s: %s", connector_id, type, status)
        return call_result.ChangeAvailability(status=status)

    @on(Action.reset)
    def on_reset(self, type: str) -> Any:
        log.warning("CSMS asked for a %s reset", type)
        self._record(Command.RESET, "Accepted", None, type=type.lower())
        return call_result.Reset(status="Accepted")

    @after(Action.reset)
    async def after_reset(self, type: str) -> None:
        site = self.owner.site
        chargers = site.native.one_connector_per_charger()  # the site's native chargers are reset too, at once
        await asyncio.gather(*(self._relayed(c, "Reset", {"type": type}, "Rejected") for c in chargers))
        try:
            await self.owner.reset(hard=type == "Hard")
        except Exception:  # an @after hook runs untracked: say what went wrong instead of losing it
            log.exception("reset failed")

    @on(Action.unlock_connector)
    async def on_unlock_connector(self, connector_id: int) -> Any:
        if self.owner.site.native.owns(connector_id):
            payload = {"connector_id": connector_id}
            status = await self._relayed(connector_id, "UnlockConnector", payload, "UnlockFailed")
            self._record(Command.UNLOCK, status, connector_id)
            return call_result.UnlockConnector(status=status)
        # No shipped Modbus profile has an unlock register: say so rather than pretend.
        self._record(Command.UNLOCK, "NotSupported", connector_id)
        return call_result.UnlockConnector(status="NotSupported")

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, **_: Any) -> Any:
        return call_result.DataTransfer(status="UnknownVendorId")

    @on(Action.change_configuration)
    def on_change_configuration(self, key: str, value: str) -> Any:
        status = self.owner.configuration.change(key, value)
        log.info("CSMS changed configuration %s: %s", key, status)  # values may be secrets: never logged
        self._record(Command.CONFIGURATION, status, None, key=key[:50])
        if status == "Accepted":
            self.owner.save_configuration()
            self.owner.apply_site_settings()
        return call_result.ChangeConfiguration(status=status)


def _shown(values: dict[str, Any]) -> dict[str, Any]:
    """The arguments that were given (for the event log)."""
    return {key: value for key, value in values.items() if value is not None}


def _profile_shown(raw: dict[str, Any]) -> dict[str, Any]:
    """A charging profile's names for the event log: its id, purpose and stack level."""
    keys = ("charging_profile_id", "charging_profile_purpose", "stack_level")
    return _shown({key: raw.get(key) for key in keys})
