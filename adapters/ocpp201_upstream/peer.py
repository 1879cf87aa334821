"""The ocpp-library side of the 2.0.1 connection: the CSMS's requests and their answers.

Handlers answer at once and never await a CALL of their own (that would deadlock the
connection); what must be sent afterwards goes through ``@after``. Commands go through the
Site's command methods with ``source=CommandSource.CSMS``, as in 1.6. An action without a handler
gets OCPP-J's CALLERROR (NotSupported for a 2.0.1 action the station does not carry out,
NotImplemented for a name 2.0.1 does not know: the library swaps the two); a request that fails
the schema gets the library's code (FormatViolation...); a frame that cannot be read is one
WARNING line. The link goes on in every case.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from ocpp.exceptions import FormationViolationError, OCPPError
from ocpp.messages import Call
from ocpp.routing import after, on
from ocpp.v201 import ChargePoint, call_result
from ocpp.v201.enums import Action

from adapters.ocpp201_upstream import native_profiles, native_relay
from adapters.ocpp201_upstream.authorization import Authorization201
from adapters.ocpp201_upstream.charging_control import SmartCharging201
from adapters.ocpp201_upstream.device_model import DeviceModel201
from adapters.ocpp201_upstream.ledger import Ledger201
from adapters.ocpp201_upstream.reports import notify_reports, report_entry, report_variables
from adapters.ocpp201_upstream.resets import Resets201
from adapters.ocpp201_upstream.smart_charging import Refused
from adapters.ocpp201_upstream.tx_points import TxPoints
from adapters.ocpp_callerrors import unsupported_action
from adapters.ocpp_link import CsmsPeer, send_call, short
from gateway.config import UpstreamConfig
from gateway.domain.authorization import mask_id_tag
from gateway.domain.commands import Command, CommandSource, result_from_status
from gateway.services.site import Site
from gateway.services.telemetry import Telemetry

log = logging.getLogger(__name__)

TRIGGERABLE = frozenset({"BootNotification", "Heartbeat", "StatusNotification", "MeterValues", "TransactionEvent"})
OCPP_VERSION = "2.0.1"


class StationOwner(Protocol):
    """What a connection needs of the station that owns it (``ChargingStation201``)."""

    site: Site
    settings: UpstreamConfig
    telemetry: Telemetry
    ledger: Ledger201
    registration: str
    accepted: asyncio.Event
    authorization: Authorization201
    tx_points: TxPoints
    resets: Resets201
    smart_charging: SmartCharging201

    def remote_start_accepted(
        self, evse_id: int | None, id_tag: str, token_type: str, remote_start_id: int
    ) -> None: ...

    async def send_triggered(self, peer: Peer201, message: str, evse_id: int | None) -> None: ...

    @property
    def device_model(self) -> DeviceModel201: ...


class Peer201(CsmsPeer, ChargePoint):
    """One connection to the CSMS; handlers delegate to its owner."""

    owner: StationOwner

    async def _handle_call(self, msg: Call) -> Any:
        """The library's, but silent while the CSMS has the station Rejected (it should not ask
        then), with OCPP-J's CALLERROR for an action without a handler (see ocpp_callerrors.py), and
        one log line instead of the library's traceback."""
        if self.owner.registration == "Rejected" and not self.owner.accepted.is_set():
            log.warning("CSMS sent %s while the station is Rejected: not answered", short(msg.action))
            return None
        error: OCPPError | None = None
        if not isinstance(msg.action, str):
            error = FormationViolationError(details={"cause": "the action must be a string"})
        elif "_on_action" not in self.route_map.get(msg.action, {}):
            error = unsupported_action(msg.action, "this charging station", OCPP_VERSION)
        else:
            try:
                return await super()._handle_call(msg)
            except OCPPError as failed:  # the request (or, a bug of ours, our answer) failed the schema
                error = failed
        cause = error.details.get("cause", "") if isinstance(error.details, dict) else ""
        log.warning("CSMS %s answered with CALLERROR %s: %s", short(msg.action), error.code, short(cause))
        await self._send(msg.create_call_error(error).to_json())
        return None

    def _record(self, command: Command, status: str, evse_id: int | None, **detail: Any) -> None:
        """A command relayed to a native charger, for the operator's event log (see Site.commands.record)."""
        self.owner.site.commands.record(command, CommandSource.CSMS, result_from_status(status), evse_id, **detail)

    @on(Action.request_start_transaction)
    async def on_request_start(
        self,
        id_token: dict[str, Any],
        remote_start_id: int,
        evse_id: int | None = None,
        group_id_token: dict[str, Any] | None = None,
        charging_profile: dict[str, Any] | None = None,
    ) -> Any:
        site = self.owner.site
        if evse_id is not None and evse_id not in site.upstream_connectors:
            log.warning("CSMS RequestStartTransaction on EVSE %s rejected: no such EVSE", evse_id)
            return call_result.RequestStartTransaction(status="Rejected", status_info={"reason_code": "Unsupported"})
        try:  # a TxProfile for the session about to start (charging_control.py)
            profile = (
                None
                if charging_profile is None or (evse_id is not None and site.native.owns(evse_id))  # its charger's
                else self.owner.smart_charging.start_profile(evse_id, charging_profile)
            )
        except Refused as refused:
            log.warning("CSMS RequestStartTransaction on EVSE %s rejected: its profile: %s", evse_id, refused.info)
            return call_result.RequestStartTransaction(status="Rejected", status_info=refused.status_info())
        tag, token_type = str(id_token["id_token"]), str(id_token["type"])
        if evse_id is not None and site.native.owns(evse_id):  # its charger starts it (native_profiles.py)
            answer = await native_profiles.request_start(self.owner, evse_id, id_token, charging_profile)
            if answer.status == "Accepted":
                self.owner.remote_start_accepted(evse_id, tag, token_type, remote_start_id)
            self._record(Command.START, answer.status, evse_id, id_tag=mask_id_tag(tag))
            return call_result.RequestStartTransaction(**answer.fields())
        accepted = site.commands.remote_start(evse_id, tag, False, source=CommandSource.CSMS)
        if accepted:
            self.owner.remote_start_accepted(evse_id, tag, token_type, remote_start_id)
            if profile is not None:
                self.owner.smart_charging.install_for_start(profile)
        log.info("CSMS RequestStartTransaction on EVSE %s: %s", evse_id, "Accepted" if accepted else "Rejected")
        return call_result.RequestStartTransaction(status="Accepted" if accepted else "Rejected")

    @on(Action.request_stop_transaction)
    async def on_request_stop(self, transaction_id: str) -> Any:
        local_ref = self.owner.tx_points.session_of(transaction_id)
        native = self.owner.site.session_connector(local_ref) if local_ref is not None else None
        if local_ref is not None and native is not None and self.owner.site.native.owns(native):
            answer = await native_relay.request_stop(self.owner.site, native, local_ref)
            self._record(Command.STOP, answer.status, native, session=local_ref)
            return call_result.RequestStopTransaction(**answer.fields())
        accepted = local_ref is not None and self.owner.site.commands.remote_stop(local_ref, source=CommandSource.CSMS)
        log.info("CSMS RequestStopTransaction %s: %s", short(transaction_id), "Accepted" if accepted else "Rejected")
        return call_result.RequestStopTransaction(status="Accepted" if accepted else "Rejected")

    @on(Action.reset)
    async def on_reset(self, type: str, evse_id: int | None = None) -> Any:
        if evse_id is not None and self.owner.site.native.owns(evse_id):  # its charger, as a whole
            answer = await native_relay.reset_evse(self.owner.site, evse_id, type)
            self._record(Command.RESET, answer.status, evse_id, type=type.lower())
            return call_result.Reset(**answer.fields())
        status, reason = self.owner.resets.answer(type, evse_id)
        return call_result.Reset(status=status, status_info={"reason_code": reason} if reason else None)

    @after(Action.reset)
    async def after_reset(self, type: str, evse_id: int | None = None) -> None:
        """What an Accepted reset does (resets.py); the answer decided it, the CSMS has it now."""
        try:
            await self.owner.resets.carry_out(type, evse_id)
        except Exception:  # an @after hook runs untracked: say what went wrong instead of losing it
            log.exception("reset failed")

    @on(Action.unlock_connector)
    async def on_unlock_connector(self, evse_id: int, connector_id: int) -> Any:
        """No shipped Modbus profile has an unlock register: a free connector answers UnlockFailed
        (2.0.1 has no NotSupported here) rather than pretend; one in a session is not unlocked."""
        connector = self.owner.site.connectors.get(evse_id)
        if connector is not None and connector.upstream and connector_id == 1 and self.owner.site.native.owns(evse_id):
            answer = await native_relay.unlock(self.owner.site, evse_id)
            self._record(Command.UNLOCK, answer.status, evse_id)
            return call_result.UnlockConnector(**answer.fields())
        if connector is None or not connector.upstream or connector_id != 1:
            status = "UnknownConnector"
        elif connector.session_active:
            status = "OngoingAuthorizedTransaction"
        else:
            status = "UnlockFailed"
        log.info("CSMS UnlockConnector EVSE %s connector %s: %s", evse_id, connector_id, status)
        result = result_from_status(status)
        self.owner.site.commands.record(Command.UNLOCK, CommandSource.CSMS, result, evse_id)
        return call_result.UnlockConnector(status=status)

    @on(Action.change_availability)
    async def on_change_availability(self, operational_status: str, evse: dict[str, Any] | None = None) -> Any:
        site = self.owner.site
        evse_id = int(evse["id"]) if evse is not None else 0
        if evse is not None and evse.get("connector_id") not in (None, 1):  # each EVSE has connector 1 only
            log.info("CSMS ChangeAvailability of EVSE %s connector %s: none", evse_id, evse["connector_id"])
            return call_result.ChangeAvailability(status="Rejected", status_info={"reason_code": "UnknownConnectorId"})
        if site.native.owns(evse_id):  # its charger decides (native_relay.py)
            answer = await native_relay.change_availability(site, evse_id, operational_status)
            self._record(Command.AVAILABILITY, answer.status, evse_id, available=operational_status == "Operative")
            return call_result.ChangeAvailability(**answer.fields())
        available = operational_status == "Operative"
        status = site.commands.change_availability(evse_id, available=available, source=CommandSource.CSMS)
        answer = native_relay.Answer(status)
        if evse_id == 0 and status != "Rejected":  # the whole station: its native chargers too
            answer = await native_relay.change_chargers_availability(site, operational_status, status)
        log.info("CSMS made EVSE %s %s: %s", evse_id, operational_status, answer.status)
        return call_result.ChangeAvailability(**answer.fields())

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, **_: Any) -> Any:
        """The gateway has no vendor extensions: every vendorId is unknown (as the 1.6 charge point answers)."""
        log.info("CSMS DataTransfer of vendor %s: UnknownVendorId", short(vendor_id))
        return call_result.DataTransfer(status="UnknownVendorId")

    @on(Action.trigger_message)
    def on_trigger_message(self, requested_message: str, evse: dict[str, Any] | None = None) -> Any:
        if requested_message not in TRIGGERABLE:
            return call_result.TriggerMessage(status="NotImplemented")
        evse_id = int(evse["id"]) if evse is not None else None
        if evse_id not in (None, 0) and evse_id not in self.owner.site.upstream_connectors:
            return call_result.TriggerMessage(status="Rejected")
        return call_result.TriggerMessage(status="Accepted")

    @after(Action.trigger_message)
    async def after_trigger_message(self, requested_message: str, evse: dict[str, Any] | None = None) -> None:
        if requested_message not in TRIGGERABLE:
            return
        try:
            await self.owner.send_triggered(self, requested_message, int(evse["id"]) if evse is not None else None)
        except Exception as exc:
            log.warning("triggered %s not sent: %s", requested_message, exc)

    # -- authorisation: the local list and the cache (authorization.py) ---------------------------
    @on(Action.send_local_list)
    def on_send_local_list(
        self, version_number: int, update_type: str, local_authorization_list: list[dict[str, Any]] | None = None
    ) -> Any:
        status = self.owner.authorization.send_local_list(version_number, update_type, local_authorization_list)
        log.info("CSMS SendLocalList %s version %s: %s", short(update_type), version_number, status)
        return call_result.SendLocalList(status=status)

    @on(Action.get_local_list_version)
    def on_get_local_list_version(self) -> Any:
        return call_result.GetLocalListVersion(version_number=self.owner.authorization.list_version)

    @on(Action.clear_cache)
    def on_clear_cache(self) -> Any:
        status = self.owner.authorization.clear_cache()
        log.info("CSMS ClearCache: %s", status)
        return call_result.ClearCache(status=status)

    # -- the device model (device_model.py, reports.py) --------------------------------------------
    @on(Action.get_variables)
    def on_get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        return call_result.GetVariables(get_variable_result=self.owner.device_model.get_variables(get_variable_data))

    @on(Action.set_variables)
    def on_set_variables(self, set_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        return call_result.SetVariables(set_variable_result=self.owner.device_model.set_variables(set_variable_data))

    @on(Action.get_base_report)
    def on_get_base_report(self, request_id: int, report_base: str, **_: Any) -> Any:
        variables = report_variables(self.owner.device_model.variables, report_base)
        return call_result.GetBaseReport(status="Accepted" if variables else "EmptyResultSet")

    @after(Action.get_base_report)
    async def after_get_base_report(self, request_id: int, report_base: str, **_: Any) -> None:
        """The report's NotifyReport parts, each after the CSMS answered the one before."""
        variables = report_variables(self.owner.device_model.variables, report_base)
        entries = [report_entry(variable) for variable in variables]
        for part in notify_reports(request_id, entries, self.owner.site.clock.now()) if entries else []:
            if await send_call(self, part) is None:
                log.warning("%s report %s not finished: part %s was not answered", report_base, request_id, part.seq_no)
                return

    # -- smart charging: the Site's charging profiles (charging_control.py, smart_charging.py) -------
    # (an EVSE of a native charger: its charger's, relayed in 1.6 terms, native_profiles.py)
    @on(Action.set_charging_profile)
    async def on_set_charging_profile(self, evse_id: int, charging_profile: dict[str, Any], **_: Any) -> Any:
        if self.owner.site.native.owns(evse_id):
            return await native_profiles.set_profile(self.owner, evse_id, charging_profile)
        return self.owner.smart_charging.set_profile(evse_id, charging_profile)

    @on(Action.clear_charging_profile)
    async def on_clear_charging_profile(
        self, charging_profile_id: int | None = None, charging_profile_criteria: dict[str, Any] | None = None, **_: Any
    ) -> Any:
        return await native_profiles.clear(self.owner, charging_profile_id, charging_profile_criteria)

    @on(Action.get_charging_profiles)
    def on_get_charging_profiles(
        self, request_id: int, charging_profile: dict[str, Any], evse_id: int | None = None, **_: Any
    ) -> Any:
        found = self.owner.smart_charging.matching(evse_id, charging_profile)
        log.info("CSMS GetChargingProfiles %s on EVSE %s: %s profile(s)", short(request_id), short(evse_id), len(found))
        return call_result.GetChargingProfiles(status="Accepted" if found else "NoProfiles")

    @after(Action.get_charging_profiles)
    async def after_get_charging_profiles(
        self, request_id: int, charging_profile: dict[str, Any], evse_id: int | None = None, **_: Any
    ) -> None:
        """The report's ReportChargingProfiles, one per EVSE, each after the CSMS answered the one before."""
        smart_charging = self.owner.smart_charging
        for part in smart_charging.reports(request_id, smart_charging.matching(evse_id, charging_profile)):
            if await send_call(self, part) is None:
                log.warning("charging profile report %s not finished: EVSE %s not answered", request_id, part.evse_id)
                return

    @on(Action.get_composite_schedule)
    async def on_get_composite_schedule(
        self, duration: int, evse_id: int, charging_rate_unit: str | None = None, **_: Any
    ) -> Any:
        if self.owner.site.native.owns(evse_id):
            return await native_profiles.composite(self.owner, evse_id, duration, charging_rate_unit)
        return self.owner.smart_charging.composite(evse_id, duration, charging_rate_unit)
