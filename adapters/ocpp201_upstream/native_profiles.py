"""The 2.0.1 CSMS's charging profiles for an EVSE of a native OCPP 1.6 charger (merged mode).

A native charger limits itself: its profiles go to it as the 1.6 actions they mean
(``native_relay.charging_profile_16`` translates them), through ``Site.native.relay`` like the other
commands relayed to it (native_relay.py; ``adapters/ocpp_local/merge.py`` puts in the charger's own
connector number and transaction id). What 1.6 cannot say (ChargingStationExternalConstraints,
several chargingSchedules, phaseToUse, a salesTariff) is Rejected ``UnsupportedParam`` without
reaching the charger; a TxProfile names the station's transactionId, which is relayed as the
session's local reference (an unknown one: ``TxNotFound``).

A profile the charger accepted is copied into the Site's store, as the 1.6 charge point does
(adapters/ocpp_upstream/peer.py ``_mirror``): the load sharing counts it in the EVSE's own bound,
so the gateway's share profile (which wins on the charger, see adapters/ocpp_local/native_limits.py)
keeps the CSMS's limit in force, and GetChargingProfiles reports it like the station's own. A
clear the charger accepted takes the copy with it. GetCompositeSchedule is the charger's own
(relayed), its first period capped at the share the sharing allows now, as the station's own
composites are (OCPP 2.0.1 part 2 K01, K08, K10).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from ocpp.v201 import call_result

from adapters.ocpp201_upstream import native_relay
from adapters.ocpp201_upstream.charging_control import PROFILE_NAMES, SmartCharging201, loggable
from adapters.ocpp201_upstream.ledger import Ledger201
from adapters.ocpp201_upstream.native_relay import Answer, charging_profile_16, status_info
from adapters.ocpp201_upstream.smart_charging import (
    Refused,
    iso_utc,
    profile_from_ocpp,
    purpose_from_ocpp,
    unit_from_ocpp,
)
from adapters.ocpp201_upstream.tx_points import TxPoints
from gateway.domain.charging_profiles import ChargingProfile, ProfilePurpose
from gateway.domain.charging_schedule import tenths_down
from gateway.domain.commands import Command, CommandSource, result_from_status
from gateway.domain.errors import CommandRejected
from gateway.domain.events import ChargingProfilesChanged
from gateway.services.charging_limits import allowed_now_a
from gateway.services.site import Site

log = logging.getLogger(__name__)


class Station(Protocol):
    """What the routing needs of the station (``ChargingStation201``)."""

    site: Site
    ledger: Ledger201
    tx_points: TxPoints
    smart_charging: SmartCharging201


# -- SetChargingProfile (K01) ----------------------------------------------------------------------
async def set_profile(station: Station, evse_id: int, charging_profile: dict[str, Any]) -> Any:
    """SetChargingProfile on a native EVSE: relayed, answered with the charger's status."""
    site, store = station.site, station.smart_charging.store
    try:
        profile, profile_16 = _translated(evse_id, charging_profile)
        if profile.purpose is ProfilePurpose.TX and profile.transaction_id is None:  # K01.FR.03
            raise Refused("MissingParam", "a TxProfile names its transactionId")
        local_ref = None if profile.transaction_id is None else _session(station, evse_id, profile.transaction_id)
        reason = store.rejection_reason(profile, active_transaction_id=profile.transaction_id)
        if reason is not None:  # the copy must fit the store, or the sharing would not count it
            raise Refused("InvalidProfile", reason)
    except Refused as refused:
        log.warning("CSMS SetChargingProfile on native EVSE %s rejected: %s", evse_id, refused.info)
        _record(site, Command.CHARGING_PROFILE, "Rejected", evse_id, _named(charging_profile), reason=refused.info)
        return call_result.SetChargingProfile(status="Rejected", status_info=refused.status_info())
    payload = {"connector_id": evse_id, "profile": profile_16, "local_ref": local_ref}
    answer = await native_relay.relayed(site, evse_id, "SetChargingProfile", payload, "Rejected")
    if answer.status not in ("Accepted", "Rejected"):  # 1.6's NotSupported has no 2.0.1 twin
        why = f"the native charger of EVSE {evse_id} answered {answer.status} (OCPP 1.6)"
        answer = Answer("Rejected", status_info(answer.status, why))
    if answer.status == "Accepted":
        _mirror(site, lambda: store.install(profile, active_transaction_id=profile.transaction_id))
    _record(site, Command.CHARGING_PROFILE, answer.status, evse_id, _named(charging_profile))
    return call_result.SetChargingProfile(**answer.fields())


def _translated(evse_id: int, charging_profile: dict[str, Any]) -> tuple[ChargingProfile, dict[str, Any]]:
    """The domain profile (for the copy) and the 1.6 one (for the charger); raises Refused."""
    try:
        profile_16 = charging_profile_16(charging_profile)
    except ValueError as exc:
        raise Refused("UnsupportedParam", f"EVSE {evse_id} is an OCPP 1.6 charger: {exc}") from None
    except (KeyError, TypeError, AttributeError) as exc:
        raise Refused("InvalidValue", f"the charging profile cannot be read: {exc!r}") from None
    return profile_from_ocpp(evse_id, charging_profile), profile_16


def _session(station: Station, evse_id: int, transaction_id: str) -> str:
    """The domain session of the station's ``transaction_id`` on ``evse_id`` (as RequestStopTransaction
    finds it), the reference merge.py turns into the charger's own transaction id."""
    local_ref = station.tx_points.session_of(transaction_id)
    if local_ref is None or station.site.session_connector(local_ref) != evse_id:
        raise Refused("TxNotFound", f"transactionId {transaction_id[:40]!r} is not running on EVSE {evse_id}")
    return local_ref


def _mirror(site: Site, install: Callable[[], ChargingProfile]) -> None:
    """The charger took the profile: its copy in the store, so the sharing counts it."""
    try:
        install()
    except CommandRejected as exc:  # checked before relaying; the store may have changed meanwhile
        log.warning("a profile of a native charger is not counted in its share: %s", exc)
        return
    site.request(ChargingProfilesChanged())


# -- RequestStartTransaction with a chargingProfile (F01/F02) -------------------------------------
async def request_start(
    station: Station, evse_id: int, id_token: dict[str, Any], charging_profile: dict[str, Any] | None
) -> Answer:
    """RemoteStartTransaction with the profile in 1.6 terms; its copy goes in when the charger
    accepted (for the session to come, ended with it as the station's own)."""
    site, store = station.site, station.smart_charging.store
    profile, profile_16 = None, None
    if charging_profile is not None:
        try:
            profile, profile_16 = _translated(evse_id, charging_profile)
            if profile.purpose is not ProfilePurpose.TX or profile.transaction_id is not None:
                raise Refused(
                    "InvalidProfile", "the profile of a RequestStartTransaction is a TxProfile without transactionId"
                )
            reason = store.rejection_reason(profile, remote_start=True)
            if reason is not None:
                raise Refused("InvalidProfile", reason)
        except Refused as refused:
            log.warning("CSMS RequestStartTransaction on native EVSE %s rejected: %s", evse_id, refused.info)
            return Answer("Rejected", refused.status_info())
    answer = await native_relay.request_start(site, evse_id, id_token, profile_16)
    if answer.status == "Accepted" and profile is not None:
        started = profile
        _mirror(site, lambda: store.install(started, remote_start=True))
    return answer


# -- ClearChargingProfile (K10) --------------------------------------------------------------------
async def clear(station: Station, profile_id: int | None, criteria: dict[str, Any] | None) -> Any:
    """By the id of a profile copied for a native EVSE, or by criteria naming a native EVSE: its
    charger clears it (the copy goes once it did). Without evseId the station clears its own and
    the native EVSEs with a matching copy are asked too. Anything else is the station's (as before)."""
    site, store = station.site, station.smart_charging.store
    criteria = criteria or {}
    evse_id = criteria.get("evse_id")
    if profile_id is not None:
        mirrored = store.get(profile_id)
        native = [mirrored.connector_id] if mirrored is not None and site.native.owns(mirrored.connector_id) else []
    elif evse_id is not None:
        native = [evse_id] if site.native.owns(evse_id) else []
    else:
        copies = station.smart_charging.matching(None, criteria)
        native = sorted({p.connector_id for p in copies if site.native.owns(p.connector_id)})
    if not native:
        return station.smart_charging.clear(profile_id, criteria)
    answers = [await _clear_on(station, evse, profile_id, criteria) for evse in native]
    if profile_id is None and evse_id is None:  # and the station's own
        answers.append(Answer(station.smart_charging.clear(None, criteria).status))
    result = next((a for a in answers if a.status == "Accepted"), None)  # cleared somewhere: Accepted
    result = result or next((a for a in answers if a.status_info), answers[0])  # else why not, if known
    return call_result.ClearChargingProfile(**result.fields())


async def _clear_on(station: Station, evse_id: int, profile_id: int | None, criteria: dict[str, Any]) -> Answer:
    site, store = station.site, station.smart_charging.store
    purpose_name = criteria.get("charging_profile_purpose")
    purpose_16 = native_relay.PURPOSE_16.get(purpose_name) if purpose_name is not None else None
    which = {"id": profile_id, "charging_profile_purpose": purpose_name, "stack_level": criteria.get("stack_level")}
    shown = {key: value for key, value in which.items() if value is not None}
    if purpose_name is not None and purpose_16 is None:  # ExternalConstraints: never set on a charger
        answer = Answer("Unknown")
    else:
        payload = {**which, "connector_id": evse_id, "charging_profile_purpose": purpose_16}
        answer = await native_relay.relayed(site, evse_id, "ClearChargingProfile", payload, "Unknown")
    if answer.status == "Accepted":  # and the copy the sharing reads goes too
        if profile_id is not None:
            gone = store.clear(profile_id=profile_id)
        else:
            purpose, stack_level = purpose_from_ocpp(purpose_name), criteria.get("stack_level")
            gone = store.clear(connector_id=evse_id, purpose=purpose, stack_level=stack_level)
        if gone:
            site.request(ChargingProfilesChanged())
    _record(site, Command.CLEAR_CHARGING_PROFILE, answer.status, evse_id, shown)
    return answer


# -- GetCompositeSchedule (K08) --------------------------------------------------------------------
async def composite(station: Station, evse_id: int, duration_s: int, charging_rate_unit: str | None) -> Any:
    """The charger's own composite (1.6 GetCompositeSchedule) as the 2.0.1 schedule; Rejected,
    saying why, when it refuses or does not answer."""
    site = station.site
    asked = {"duration": duration_s, "charging_rate_unit": charging_rate_unit}
    answer = await native_relay.relay_answer(site, evse_id, "GetCompositeSchedule", asked)
    try:
        if answer is None:
            raise Refused(native_relay.NO_ANSWER, f"the native charger of EVSE {evse_id} did not answer (OCPP 1.6)")
        if answer.get("status") != "Accepted" or not isinstance(answer.get("charging_schedule"), dict):
            raise Refused("Rejected", f"the native charger of EVSE {evse_id} answered {answer.get('status')}")
        schedule = _schedule_201(station, evse_id, duration_s, answer)
    except Refused as refused:
        log.warning("CSMS GetCompositeSchedule on native EVSE %s rejected: %s", evse_id, refused.info)
        return call_result.GetCompositeSchedule(status="Rejected", status_info=refused.status_info())
    log.info("CSMS GetCompositeSchedule on EVSE %s: relayed to its native charger: Accepted", evse_id)
    return call_result.GetCompositeSchedule(status="Accepted", schedule=schedule)


def _schedule_201(station: Station, evse_id: int, duration_s: int, answer: dict[str, Any]) -> dict[str, Any]:
    """A 1.6 GetCompositeSchedule.conf (snake_case) as 2.0.1 CompositeScheduleType; raises Refused."""
    schedule = answer["charging_schedule"]
    try:
        unit = unit_from_ocpp(schedule.get("charging_rate_unit"))
        periods = [_period(p) for p in schedule["charging_schedule_period"]]
        start = answer.get("schedule_start") or schedule.get("start_schedule") or iso_utc(station.site.clock.now())
    except (KeyError, TypeError, ValueError) as exc:
        raise Refused("InternalError", f"the native charger's composite cannot be read: {exc}") from None
    now_a = allowed_now_a(station.site, evse_id)
    if now_a is not None and periods:  # what the sharing allows now, as the station's own composites
        try:
            cap = station.smart_charging.store.supply.from_amps(now_a, unit, periods[0].get("number_phases"))
            periods[0]["limit"] = min(periods[0]["limit"], tenths_down(cap))
        except ValueError as exc:  # W without a configured voltage: the charger's own, uncapped
            log.warning("GetCompositeSchedule on native EVSE %s: its share not shown: %s", evse_id, exc)
    return {
        "evse_id": evse_id,
        "duration": int(schedule.get("duration") or duration_s),
        "schedule_start": str(start),
        "charging_rate_unit": unit.value,
        "charging_schedule_period": periods,
    }


def _period(period: dict[str, Any]) -> dict[str, Any]:
    phases = period.get("number_phases")
    limit = {"start_period": int(period["start_period"]), "limit": float(period["limit"])}
    return limit | ({"number_phases": int(phases)} if phases is not None else {})


def _named(charging_profile: dict[str, Any]) -> dict[str, Any]:
    return loggable(charging_profile, PROFILE_NAMES)


def _record(site: Site, command: Command, status: str, evse_id: int, detail: dict[str, Any], **more: Any) -> None:
    """The CSMS's command for the operator's event log (see Site.commands.record)."""
    site.commands.record(command, CommandSource.CSMS, result_from_status(status), evse_id, **detail, **more)
