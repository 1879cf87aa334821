"""What the 2.0.1 station does with the CSMS's smart-charging requests, per EVSE.

The profiles go into the Site's ``ChargingProfileStore``, the one the 1.6 charge point fills: the
LimitKeeper (gateway.services.charging_limits) turns them into the chargers' current limits and
the Site saves them (settings section ``charging_profiles``) on every ``ChargingProfilesChanged``,
so a 2.0.1 profile limits a Modbus charger exactly as a 1.6 one and survives a restart the same
way. The checks that need the station's state are made here, each with its statusInfo reasonCode
(K01); what is malformed in itself is the translation's (smart_charging.py) and the domain's.

Every method works on one EVSE, so a caller can take over an EVSE before it gets here: the
profiles of an EVSE of a native OCPP charger go to its charger (native_profiles.py, from peer.py).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ocpp.v201 import call, call_result

from adapters.ocpp201_upstream.mapping import transaction_id
from adapters.ocpp201_upstream.smart_charging import (
    CHARGING_LIMIT_SOURCE,
    Refused,
    composite_schedule_result,
    profile_from_ocpp,
    profile_to_ocpp,
    purpose_from_ocpp,
    report_parts,
    shown,
    unit_from_ocpp,
)
from gateway.domain.charging_profiles import ChargingProfile, ProfilePurpose, RateUnit, profile_problem
from gateway.domain.commands import Command, CommandSource, result_from_status
from gateway.domain.errors import CommandRejected
from gateway.domain.events import ChargingProfilesChanged
from gateway.services.charging_limits import allowed_now_a
from gateway.services.site import Site

log = logging.getLogger(__name__)

UNLIMITED_A = 32.0  # what a composite shows where no profile limits (a period needs a limit), as 1.6
# A composite crosses every boundary of every profile: 50 daily profiles of 100 periods each took
# about 1 s a day of composite on a busy test machine; 2 days bound what one request can cost.
MAX_COMPOSITE_S = 2 * 24 * 3600


class SmartCharging201:
    """The station's charging profiles: set, cleared, reported and composed, per EVSE."""

    def __init__(self, site: Site, running: Mapping[int, str]) -> None:
        """``running``: EVSE -> the reference of the transaction running on it, as the CSMS knows
        it (the ledger's: with a TxStartPoint before the authorisation, it is not the domain
        session's). At the start no session of a Modbus charger runs (one the last run left open
        is ended, PowerLoss or Reboot): the TxProfiles kept for them end too, or they would limit
        the next session on their EVSE."""
        self.site = site
        self._running = running
        self.store = site.charging_profiles
        ended = [
            profile_id
            for evse_id in sorted(site.upstream_connectors)
            if site.connectors[evse_id].session is None and not site.native.owns(evse_id)
            for profile_id in self.store.end_transaction(evse_id)
        ]
        if ended:
            log.info("TxProfiles %s ended with the sessions of the last run", ended)
            site.request(ChargingProfilesChanged())

    def running_transaction_id(self, evse_id: int) -> str | None:
        """The transactionId of the transaction running on ``evse_id`` now (the station's own)."""
        ref = self._running.get(evse_id)
        return transaction_id(ref) if ref is not None else None

    def _evse(self, evse_id: int, *, station: bool = True) -> None:
        """Refuse an EVSE the station does not have (0, the station, where ``station``)."""
        if evse_id == 0 and station:
            return
        if evse_id not in self.site.upstream_connectors:
            raise Refused("UnknownEvse", f"no EVSE {shown(evse_id)}")
        if self.site.native.owns(evse_id):
            raise Refused("UnsupportedRequest", f"EVSE {evse_id} is a native OCPP charger: its profiles are its own")

    # -- SetChargingProfile (K01) --------------------------------------------------------------------
    def set_profile(self, evse_id: int, charging_profile: dict[str, Any]) -> call_result.SetChargingProfile:
        try:
            self._evse(evse_id)
            profile = profile_from_ocpp(evse_id, charging_profile)
            running = self._checked(profile)
            try:
                profile = self.store.install(profile, active_transaction_id=running)
            except CommandRejected as exc:  # what the state checks above leave: a full store
                full = len(self.store) >= self.store.limits.max_profiles
                raise Refused("OutOfStorage" if full else "InvalidProfile", str(exc)) from None
        except Refused as refused:
            log.warning("CSMS SetChargingProfile on EVSE %s rejected: %s", shown(evse_id), refused.info)
            self._record(
                Command.CHARGING_PROFILE,
                "Rejected",
                evse_id,
                **loggable(charging_profile, PROFILE_NAMES),
                reason=refused.info,
            )
            return call_result.SetChargingProfile(status="Rejected", status_info=refused.status_info())
        log.info("charging profile %s (%s) installed on EVSE %s", profile.profile_id, profile.purpose.value, evse_id)
        self._record(Command.CHARGING_PROFILE, "Accepted", evse_id, **loggable(charging_profile, PROFILE_NAMES))
        self.site.request(ChargingProfilesChanged())
        return call_result.SetChargingProfile(status="Accepted")

    def _checked(self, profile: ChargingProfile, *, remote_start: bool = False) -> str | None:
        """Refuse what the station's state does not allow; returns the EVSE's running transaction."""
        evse_id, purpose, limits = profile.connector_id, profile.purpose, self.store.limits
        if purpose is ProfilePurpose.CHARGE_POINT_MAX and evse_id != 0:
            raise Refused("InvalidProfile", "a ChargingStationMaxProfile belongs on evseId 0")
        running = self.running_transaction_id(evse_id) if evse_id else None
        if remote_start:
            if purpose is not ProfilePurpose.TX or profile.transaction_id is not None:
                raise Refused(
                    "InvalidProfile", "the profile of a RequestStartTransaction is a TxProfile without transactionId"
                )
        elif purpose is ProfilePurpose.TX:
            if evse_id == 0:
                raise Refused("InvalidProfile", "a TxProfile belongs on the EVSE of its transaction, not 0")
            if profile.transaction_id is None:  # K01.FR.03: the CSMS names the transaction
                raise Refused("MissingParam", "a TxProfile names its transactionId")
            if running is None:
                raise Refused("TxNotFound", f"no transaction is running on EVSE {evse_id}")
            if profile.transaction_id != running:
                raise Refused("TxNotFound", f"transactionId {profile.transaction_id!r} is not EVSE {evse_id}'s")
        if profile.stack_level > limits.max_stack_level:
            raise Refused("InvalidStackLevel", f"stackLevel {profile.stack_level} is above {limits.max_stack_level}")
        if len(profile.schedule.periods) > limits.max_periods:
            count = len(profile.schedule.periods)
            raise Refused("TooManyElements", f"{count} periods, more than PeriodsPerSchedule {limits.max_periods}")
        if profile.schedule.rate_unit is RateUnit.WATT and self.store.supply.voltage_v is None:
            raise Refused("UnsupportedRateUnit", "limits in W need a configured supply voltage")
        problem = profile_problem(profile)
        if problem is not None:
            about_schedule = any(word in problem for word in ("period", "schedule", "duration", "min_charging"))
            raise Refused("InvalidSchedule" if about_schedule else "InvalidProfile", problem)
        return running

    # -- RequestStartTransaction with a chargingProfile (F01/F02) -------------------------------------
    def start_profile(self, evse_id: int | None, charging_profile: dict[str, Any]) -> ChargingProfile:
        """The TxProfile for the session a RequestStartTransaction is about to start (not yet
        installed: ``install_for_start`` once the start is accepted). Raises Refused."""
        if evse_id is None:
            raise Refused("MissingParam", "a chargingProfile needs an evseId")
        self._evse(evse_id, station=False)
        profile = profile_from_ocpp(evse_id, charging_profile)
        self._checked(profile, remote_start=True)
        reason = self.store.rejection_reason(profile, remote_start=True)
        if reason is not None:
            raise Refused("InvalidProfile", reason)
        return profile

    def install_for_start(self, profile: ChargingProfile) -> None:
        """The start was accepted: its profile is in force from the session's first moment and
        ends with it (the LimitKeeper clears TX profiles when a session stops)."""
        self.store.install(profile, remote_start=True)
        self.site.request(ChargingProfilesChanged())

    # -- ClearChargingProfile (K10) ------------------------------------------------------------------
    def clear(self, profile_id: int | None, criteria: dict[str, Any] | None) -> call_result.ClearChargingProfile:
        """By id (the criteria are then ignored), else by every criterion given (none: all)."""
        criteria = criteria or {}
        purpose_name = criteria.get("charging_profile_purpose")
        purpose = purpose_from_ocpp(purpose_name)
        if purpose_name is not None and purpose is None:  # ExternalConstraints: never kept here
            cleared: list[int] = []
        else:
            cleared = self.store.clear(
                profile_id=profile_id,
                connector_id=criteria.get("evse_id"),
                purpose=purpose,
                stack_level=criteria.get("stack_level"),
                keep=self.site.native.owns,  # a native charger's copies go when it cleared them (native_profiles.py)
            )
        status = "Accepted" if cleared else "Unknown"
        which = loggable({"id": profile_id, **criteria}, ("id", "evse_id", "charging_profile_purpose", "stack_level"))
        evse_id = which.get("evse_id")
        self._record(Command.CLEAR_CHARGING_PROFILE, status, evse_id, **which)
        log.info("CSMS ClearChargingProfile %s: %s %s", which, status, cleared or "")
        if cleared:
            self.site.request(ChargingProfilesChanged())
        return call_result.ClearChargingProfile(status=status)

    # -- GetChargingProfiles (K09) -------------------------------------------------------------------
    def matching(self, evse_id: int | None, criterion: dict[str, Any]) -> list[ChargingProfile]:
        """The profiles a GetChargingProfiles asks for: on ``evse_id`` (None: every EVSE; 0: those
        of the station) and matching every criterion given."""
        sources = criterion.get("charging_limit_source")
        if sources is not None and CHARGING_LIMIT_SOURCE not in sources:
            return []
        purpose_name = criterion.get("charging_profile_purpose")
        purpose = purpose_from_ocpp(purpose_name)
        if purpose_name is not None and purpose is None:
            return []
        ids, stack_level = criterion.get("charging_profile_id"), criterion.get("stack_level")
        return [
            p
            for p in self.store
            if (evse_id is None or p.connector_id == evse_id)
            and (purpose is None or p.purpose is purpose)
            and (stack_level is None or p.stack_level == stack_level)
            and (ids is None or p.profile_id in ids)
        ]

    def reports(self, request_id: int, profiles: Sequence[ChargingProfile]) -> list[call.ReportChargingProfiles]:
        by_evse: dict[int, list[dict[str, Any]]] = {}
        for profile in profiles:
            running = self.running_transaction_id(profile.connector_id) if profile.connector_id else None
            by_evse.setdefault(profile.connector_id, []).append(profile_to_ocpp(profile, running))
        return report_parts(request_id, by_evse)

    # -- GetCompositeSchedule (K08) ------------------------------------------------------------------
    def composite(
        self, evse_id: int, duration_s: int, charging_rate_unit: str | None
    ) -> call_result.GetCompositeSchedule:
        """The same composition as 1.6: the profiles in force over ``duration_s``, the first period
        capped at what the site's sharing allows now."""
        try:
            self._evse(evse_id)
            if not 0 <= duration_s <= MAX_COMPOSITE_S:
                raise Refused("ValueOutOfRange", f"duration {shown(duration_s)} s is not within 0..{MAX_COMPOSITE_S}")
            unit = unit_from_ocpp(charging_rate_unit)
            if unit is RateUnit.WATT and self.store.supply.voltage_v is None:
                raise Refused("UnsupportedRateUnit", "limits in W need a configured supply voltage")
        except Refused as refused:
            log.warning("CSMS GetCompositeSchedule on EVSE %s rejected: %s", shown(evse_id), refused.info)
            return call_result.GetCompositeSchedule(status="Rejected", status_info=refused.status_info())
        start = self.site.clock.now()
        started_at = self.site.sessions.started_at(evse_id) if evse_id else None
        now_a = allowed_now_a(self.site, evse_id)
        periods = self.store.composite_schedule(evse_id, start, duration_s, started_at, unit, now_a=now_a)
        unlimited = self.store.supply.from_amps(UNLIMITED_A, unit, None)
        return composite_schedule_result(evse_id, start, duration_s, periods, unit, unlimited=unlimited)

    def _record(self, command: Command, status: str, evse_id: int | None, /, **detail: Any) -> None:
        """The CSMS's command for the operator's event log (see Site.commands.record)."""
        self.site.commands.record(command, CommandSource.CSMS, result_from_status(status), evse_id, **detail)


PROFILE_NAMES = ("id", "charging_profile_purpose", "stack_level")  # a profile's names in the event log


def loggable(raw: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """``keys`` of ``raw`` for the event log, each only if it is a value OCPP can carry (a
    4000-digit number or a long string from the CSMS is left out, not written down)."""
    kept = {}
    for key in keys:
        value = raw.get(key)
        if (isinstance(value, int) and abs(value) <= 2**31) or (isinstance(value, str) and len(value) <= 40):
            kept[key] = value
    return kept
