"""The 2.0.1 CSMS's commands for an EVSE of a native OCPP 1.6 charger (merged mode), in 1.6 terms.

A merged charger's connectors are EVSEs of the station, but the charger itself speaks 1.6 and
carries out its own starts, stops, availability, resets and unlocks. Each 2.0.1 request for such
an EVSE becomes the 1.6 action it means, handed to the charger through ``Site.native.relay`` (a
``RelayToCharger`` event that the local OCPP server carries out: the payload names the *site*
connector or session, and ``adapters/ocpp_local/merge.py`` renumbers it into the charger's own
connector number and transaction id); the charger's 1.6 answer comes back as the 2.0.1 status,
with a ``statusInfo`` saying why when it is not what the CSMS asked for.

RequestStartTransaction -> RemoteStartTransaction (the charger's connector, the idTag),
RequestStopTransaction -> RemoteStopTransaction (the charger's transaction id), ChangeAvailability
-> ChangeAvailability (of the connector, or of each charger as a whole), Reset OnIdle / Immediate
of an EVSE -> Reset Soft / Hard of its charger, UnlockConnector -> UnlockConnector. The answers'
names are the same in both versions but 1.6's NotSupported (UnlockFailed here, saying so).
docs/ocpp-2.0.1.md "Native OCPP chargers" has the table.

A charger that is not connected, refuses with a CALLERROR or does not answer within
``RELAY_TIMEOUT_S`` is a refusal (``statusInfo.reasonCode`` ``NoAnswer``); the link to the CSMS
goes on. ``charging_profile_16`` translates a 2.0.1 chargingProfile into the 1.6
csChargingProfiles a native charger takes (native_profiles.py routes the smart-charging requests).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from gateway.domain.authorization import mask_id_tag
from gateway.domain.transactions import StopTransaction
from gateway.services.site import Site

log = logging.getLogger(__name__)

RELAY_TIMEOUT_S = 20.0  # the charger's answer, within the CSMS's patience (merge.py gives up at 15 s)
ID_TAG_MAX = 20  # OCPP 1.6 IdToken is CiString20Type; 2.0.1's idToken may be 36
RESET_16 = {"OnIdle": "Soft", "Immediate": "Hard"}
AVAILABILITY_RANK = {"Accepted": 0, "Scheduled": 1, "Rejected": 2}  # the whole station answers the worst
NO_ANSWER = "NoAnswer"


@dataclass(frozen=True, slots=True)
class Answer:
    """A 2.0.1 answer's ``status`` and, when it says why, its ``statusInfo`` (snake_case)."""

    status: str
    status_info: dict[str, str] | None = None

    def fields(self) -> dict[str, Any]:
        """The answer's keyword arguments for the library's call_result."""
        return {"status": self.status} | ({"status_info": self.status_info} if self.status_info else {})


def status_info(reason_code: str, additional_info: str) -> dict[str, str]:
    """2.0.1 StatusInfoType: reasonCode at most 20 characters, additionalInfo 512."""
    return {"reason_code": reason_code[:20], "additional_info": additional_info[:512]}


async def relay_answer(site: Site, connector_id: int, action: str, payload: dict[str, Any]) -> dict[str, Any] | None:
    """The native charger's whole answer (snake_case), or None if it gave none."""
    return await site.native.ask(connector_id, action, payload, RELAY_TIMEOUT_S)


async def relayed(site: Site, connector_id: int, action: str, payload: dict[str, Any], refused: str) -> Answer:
    """The charger's 1.6 ``status`` as the 2.0.1 one (the names are the same for these actions),
    or ``refused`` with a statusInfo when it gave none."""
    answer = await relay_answer(site, connector_id, action, payload)
    if answer is None or not isinstance(answer.get("status"), str):
        why = f"the native charger of EVSE {connector_id} did not answer {action} (OCPP 1.6)"
        result = Answer(refused, status_info(NO_ANSWER, why))
    else:
        result = Answer(answer["status"])
    log.info("CSMS %s on EVSE %s: relayed to its native charger: %s", action, connector_id, result.status)
    return result


async def request_start(
    site: Site, evse_id: int, id_token: dict[str, Any], charging_profile: dict[str, Any] | None = None
) -> Answer:
    """RequestStartTransaction -> RemoteStartTransaction on the charger's own connector, with the
    TxProfile in 1.6 terms (native_profiles.py). The token's type has no place in 1.6; a token
    longer than 1.6's 20 characters cannot be sent."""
    tag = str(id_token["id_token"])
    if not tag or len(tag) > ID_TAG_MAX:
        log.warning("RequestStartTransaction on EVSE %s: id token %s does not fit OCPP 1.6", evse_id, mask_id_tag(tag))
        why = f"EVSE {evse_id} is an OCPP 1.6 charger: its idTag is 1 to {ID_TAG_MAX} characters"
        return Answer("Rejected", status_info("InvalidIdToken", why))
    payload = {"connector_id": evse_id, "id_tag": tag, "charging_profile": charging_profile}
    return await relayed(site, evse_id, "RemoteStartTransaction", payload, "Rejected")


async def request_stop(site: Site, evse_id: int, local_ref: str) -> Answer:
    """RequestStopTransaction -> RemoteStopTransaction by the charger's own transaction id."""
    return await relayed(site, evse_id, "RemoteStopTransaction", {"local_ref": local_ref}, "Rejected")


async def change_availability(site: Site, evse_id: int, operational_status: str) -> Answer:
    """ChangeAvailability of one native EVSE -> the charger's ChangeAvailability of that connector."""
    payload = {"connector_id": evse_id, "type": operational_status}
    return await relayed(site, evse_id, "ChangeAvailability", payload, "Rejected")


async def change_chargers_availability(site: Site, operational_status: str, own: str) -> Answer:
    """ChangeAvailability of the whole station: each native charger as a whole (connector 0), and
    the answer the worst of the station's own (``own``) and every charger's."""

    def whole(connector_id: int) -> dict[str, Any]:
        return {"connector_id": connector_id, "type": operational_status, "whole_charger": True}

    chargers = site.native.one_connector_per_charger()  # all at once: a silent one costs its timeout once
    answers = await asyncio.gather(*(relayed(site, c, "ChangeAvailability", whole(c), "Rejected") for c in chargers))
    answer = Answer(own)
    for theirs in answers:
        if AVAILABILITY_RANK.get(theirs.status, 2) > AVAILABILITY_RANK.get(answer.status, 2):
            answer = theirs
    return answer


def _charger_busy(site: Site, evse_id: int) -> bool:
    return any(site.connectors[cid].session_active for cid in site.native.connectors_of(evse_id))


async def reset_evse(site: Site, evse_id: int, reset_type: str) -> Answer:
    """Reset of a native EVSE -> Reset of its whole charger (1.6 resets a charge point, not a
    connector): Immediate -> Hard at once. OnIdle -> Soft at once when the charger has no session;
    while one runs it is answered Scheduled and the Soft reset goes when its last session ended
    (2.0.1 B12: OnIdle waits for the transactions; 1.6 Soft would end them)."""
    if reset_type == "OnIdle" and _charger_busy(site, evse_id):
        device = site.connectors[evse_id].device
        if device not in _scheduled:  # (asked again meanwhile: still the one reset)
            task = asyncio.ensure_future(_reset_when_idle(site, evse_id))
            _scheduled[device] = task
            task.add_done_callback(lambda _: _scheduled.pop(device, None))
        log.info("CSMS Reset OnIdle on EVSE %s: Scheduled after the sessions of its native charger", evse_id)
        return Answer("Scheduled")
    return await relayed(site, evse_id, "Reset", {"type": RESET_16.get(reset_type, "Soft")}, "Rejected")


_scheduled: dict[str, asyncio.Future[None]] = {}  # native charger -> its scheduled reset, until it ran


async def _reset_when_idle(site: Site, evse_id: int) -> None:
    events = site.subscribe()
    try:
        if _charger_busy(site, evse_id):
            async for event in events:
                if isinstance(event, StopTransaction) and not _charger_busy(site, evse_id):
                    break
        await relayed(site, evse_id, "Reset", {"type": "Soft"}, "Rejected")
    finally:
        site.unsubscribe(events)


async def reset_chargers(site: Site, reset_type: str) -> None:
    """A Reset of the whole station resets each native charger too (before the station's own)."""
    payload = {"type": RESET_16.get(reset_type, "Soft")}
    chargers = site.native.one_connector_per_charger()  # all at once: a silent one costs its timeout once
    await asyncio.gather(*(relayed(site, c, "Reset", payload, "Rejected") for c in chargers))


async def unlock(site: Site, evse_id: int) -> Answer:
    """UnlockConnector of a native EVSE. During a session it is answered
    OngoingAuthorizedTransaction without asking the charger (2.0.1 F05 does not unlock then; a 1.6
    charger would end the transaction). 1.6's NotSupported has no 2.0.1 twin: UnlockFailed, saying so."""
    if site.connectors[evse_id].session_active:
        return Answer("OngoingAuthorizedTransaction")
    answer = await relayed(site, evse_id, "UnlockConnector", {"connector_id": evse_id}, "UnlockFailed")
    if answer.status == "NotSupported":
        why = f"the native charger of EVSE {evse_id} answered NotSupported (OCPP 1.6)"
        return Answer("UnlockFailed", status_info("NotSupported", why))
    if answer.status not in ("Unlocked", "UnlockFailed"):
        return Answer("UnlockFailed", answer.status_info)
    return answer


PURPOSE_16 = {
    "ChargingStationMaxProfile": "ChargePointMaxProfile",
    "TxDefaultProfile": "TxDefaultProfile",
    "TxProfile": "TxProfile",
}


def charging_profile_16(profile: dict[str, Any]) -> dict[str, Any]:
    """A 2.0.1 chargingProfile (snake_case, as the library hands it) as 1.6 csChargingProfiles.

    Raises ValueError for what 1.6 cannot say: ChargingStationExternalConstraints, more than one
    chargingSchedule, a phaseToUse, a salesTariff. ``transaction_id`` is left out: a 2.0.1 id means
    nothing to the charger; the relay names the session by its local reference (merge.py puts in
    the charger's own id)."""
    purpose = PURPOSE_16.get(str(profile.get("charging_profile_purpose")))
    if purpose is None:
        raise ValueError(f"{profile.get('charging_profile_purpose')} has no OCPP 1.6 counterpart")
    schedules = profile.get("charging_schedule") or []
    if len(schedules) != 1:
        raise ValueError("an OCPP 1.6 charger takes one chargingSchedule per profile")
    schedule = schedules[0]
    if schedule.get("sales_tariff") is not None:
        raise ValueError("an OCPP 1.6 charger takes no salesTariff")
    periods = []
    for period in schedule["charging_schedule_period"]:
        if period.get("phase_to_use") is not None:
            raise ValueError("an OCPP 1.6 charger takes no phaseToUse")
        periods.append(_given({k: period.get(k) for k in ("start_period", "limit", "number_phases")}))
    keys = ("duration", "start_schedule", "charging_rate_unit", "min_charging_rate")
    schedule_16 = _given({k: schedule.get(k) for k in keys}) | {"charging_schedule_period": periods}
    return _given(
        {
            "charging_profile_id": profile["id"],
            "stack_level": profile["stack_level"],
            "charging_profile_purpose": purpose,
            "charging_profile_kind": profile["charging_profile_kind"],
            "recurrency_kind": profile.get("recurrency_kind"),
            "valid_from": profile.get("valid_from"),
            "valid_to": profile.get("valid_to"),
            "charging_schedule": schedule_16,
        }
    )


def _given(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}
