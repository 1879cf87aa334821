"""ChargingProfileStore: the installed charging profiles, with OCPP 1.6's install and clear rules.

The store is the single owner of the profiles. It checks a profile against the charge point's
state before installing it (so a Rejected answer can say why), replaces what OCPP says a new
profile replaces, clears by id or by criteria, drops TX profiles when their transaction ends, and
answers "what is the limit now, and until when" and "what is the composite schedule". It is
persisted as a plain dict after every change by its owner, so profiles survive a restart
(CHECKLIST item 21). No I/O and no clock: every instant is passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, NamedTuple

from gateway.domain.charging_profiles import (
    ChargingProfile,
    ProfilePurpose,
    RateUnit,
    Supply,
    profile_from_dict,
    profile_problem,
    profile_to_dict,
)
from gateway.domain.charging_schedule import (
    CompositePeriod,
    Session,
    composite,
    effective_limit,
    next_change,
    relevant,
)
from gateway.domain.errors import CommandRejected

STORE_FORMAT = 1


class LimitAt(NamedTuple):
    """The limit in force (amperes per phase, None = unlimited) and when it next changes (None = never)."""

    limit_a: float | None
    next_change_at: datetime | None


@dataclass(frozen=True, slots=True)
class StoreLimits:
    """What the charge point accepts; an adapter publishes these as the matching OCPP configuration
    keys (ChargeProfileMaxStackLevel, ChargingScheduleMaxPeriods, MaxChargingProfilesInstalled)."""

    max_stack_level: int = 100
    max_periods: int = 100
    max_profiles: int = 50


class ChargingProfileStore:
    """Installed profiles of a charge point with connectors ``1..connector_count`` (0 = itself)."""

    def __init__(
        self, connector_count: int, *, supply: Supply | None = None, limits: StoreLimits | None = None
    ) -> None:
        self.connector_count = connector_count
        self.supply = supply or Supply()
        self.limits = limits or StoreLimits()
        self._profiles: dict[int, ChargingProfile] = {}

    def __iter__(self) -> Iterator[ChargingProfile]:
        return iter(sorted(self._profiles.values(), key=lambda p: p.profile_id))

    def __len__(self) -> int:
        return len(self._profiles)

    def get(self, profile_id: int) -> ChargingProfile | None:
        return self._profiles.get(profile_id)

    # -- installing ------------------------------------------------------------------------------
    def rejection_reason(
        self, profile: ChargingProfile, *, active_transaction_id: int | str | None = None, remote_start: bool = False
    ) -> str | None:
        """Why ``profile`` cannot be installed now, or None if it can.

        ``active_transaction_id`` is the transaction running on the profile's connector (None: none).
        ``remote_start``: the profile came with a RemoteStartTransaction, for the session about to
        start, so it must be a TX profile without a transaction id and no transaction is needed yet.
        """
        problem = profile_problem(profile)
        if problem is not None:
            return problem
        connector, purpose = profile.connector_id, profile.purpose
        if not 0 <= connector <= self.connector_count:
            return f"connector {connector} does not exist (0..{self.connector_count})"
        if purpose is ProfilePurpose.CHARGE_POINT_MAX and connector != 0:
            return "a charge point max profile belongs on connector 0"
        if profile.stack_level > self.limits.max_stack_level:
            return f"stack_level {profile.stack_level} is above the maximum {self.limits.max_stack_level}"
        if len(profile.schedule.periods) > self.limits.max_periods:
            return f"{len(profile.schedule.periods)} periods, more than the maximum {self.limits.max_periods}"
        if profile.schedule.rate_unit is RateUnit.WATT and self.supply.voltage_v is None:
            return "limits in W are not supported (no supply voltage configured)"
        if remote_start:
            if purpose is not ProfilePurpose.TX or connector == 0:
                return "a profile with a remote start must be a TX profile on a connector"
            if profile.transaction_id is not None:
                return "a profile with a remote start must not carry a transaction_id"
        elif purpose is ProfilePurpose.TX:
            if connector == 0:
                return "a TX profile belongs on the connector of its transaction, not 0"
            if active_transaction_id is None:
                return f"no transaction is active on connector {connector}"
            if profile.transaction_id not in (None, active_transaction_id):
                return f"transaction {profile.transaction_id} is not the one active on connector {connector}"
        if len(self._profiles) - len(self._replaced_by(profile)) >= self.limits.max_profiles:
            return f"{self.limits.max_profiles} profiles are installed already"
        return None

    def install(
        self, profile: ChargingProfile, *, active_transaction_id: int | str | None = None, remote_start: bool = False
    ) -> ChargingProfile:
        """Install ``profile``, replacing any with the same id, or the same stack level and purpose on
        the same connector (OCPP 1.6 5.16.3). Returns the profile as stored: a TX profile without a
        transaction id is bound to the active transaction. Raises CommandRejected with the reason.
        """
        reason = self.rejection_reason(profile, active_transaction_id=active_transaction_id, remote_start=remote_start)
        if reason is not None:
            raise CommandRejected(f"charging profile {profile.profile_id}: {reason}")
        if profile.purpose is ProfilePurpose.TX and profile.transaction_id is None and not remote_start:
            profile = replace(profile, transaction_id=active_transaction_id)
        for old in self._replaced_by(profile):
            del self._profiles[old]
        self._profiles[profile.profile_id] = profile
        return profile

    def _replaced_by(self, profile: ChargingProfile) -> list[int]:
        return [
            p.profile_id
            for p in self._profiles.values()
            if p.profile_id == profile.profile_id
            or (
                p.connector_id == profile.connector_id
                and p.purpose is profile.purpose
                and p.stack_level == profile.stack_level
            )
        ]

    # -- clearing ----------------------------------------------------------------------------------
    def clear(
        self,
        *,
        profile_id: int | None = None,
        connector_id: int | None = None,
        purpose: ProfilePurpose | None = None,
        stack_level: int | None = None,
        keep: Callable[[int], bool] = lambda _connector_id: False,
    ) -> list[int]:
        """Remove profiles as ClearChargingProfile asks; returns the ids removed (empty = Unknown).

        With ``profile_id`` only that profile goes and the other criteria are ignored (errata 3.26);
        otherwise every profile matching all given criteria (none given: every profile).
        ``connector_id`` 0 matches the profiles installed on connector 0, not every connector.
        Profiles on a connector ``keep`` names stay whatever the criteria (the copies of what a
        native charger enforces itself: they go when the charger has cleared them).
        """
        if profile_id is not None:
            found = self._profiles.get(profile_id)
            if found is None or keep(found.connector_id):
                return []
            del self._profiles[profile_id]
            return [profile_id]
        gone = [
            p.profile_id
            for p in self._profiles.values()
            if not keep(p.connector_id)
            and (connector_id is None or p.connector_id == connector_id)
            and (purpose is None or p.purpose is purpose)
            and (stack_level is None or p.stack_level == stack_level)
        ]
        for key in gone:
            del self._profiles[key]
        return sorted(gone)

    def end_transaction(self, connector_id: int) -> list[int]:
        """The transaction on ``connector_id`` ended (or never started after a remote start): its TX
        profiles end with it. Call it too, after a restart, for connectors with no transaction."""
        return self.clear(connector_id=connector_id, purpose=ProfilePurpose.TX)

    # -- evaluating ------------------------------------------------------------------------------
    def limit_at(
        self,
        connector_id: int,
        at: datetime,
        transaction_started_at: datetime | None = None,
        *,
        charge_point_max: bool = True,
    ) -> LimitAt:
        """The limit on ``connector_id`` at ``at`` in amperes per phase, and when it next changes.

        ``transaction_started_at`` None means no transaction: TX profiles are left out and relative
        schedules give their first period (what a session starting now would get). Apply the limit
        now and evaluate again at ``next_change_at``, so limits change exactly at period boundaries.
        Connector 0 gives the charge point max alone. ``charge_point_max`` False leaves it out: the
        connector's own limit, for a caller that shares the charge point max between connectors.
        """
        session = Session(anchor=transaction_started_at, active=transaction_started_at is not None)
        profiles = relevant(self._profiles.values(), connector_id, session)
        if not charge_point_max:
            profiles = [p for p in profiles if p.purpose is not ProfilePurpose.CHARGE_POINT_MAX]
        limit = effective_limit(profiles, at, session, self.supply)
        return LimitAt(limit.limit_a, next_change(profiles, at, session, self.supply))

    def composite_schedule(
        self,
        connector_id: int,
        start: datetime,
        duration_s: int,
        transaction_started_at: datetime | None = None,
        unit: RateUnit = RateUnit.AMPERE,
        *,
        now_a: float | None = None,
    ) -> list[CompositePeriod]:
        """The limit over ``duration_s`` seconds from ``start`` (GetCompositeSchedule), in ``unit``.

        Without a transaction, relative schedules are shown as if a session started at ``start`` and
        TX profiles are left out. Connector 0 is the charge point max view. A period whose ``limit``
        is None has no profile limiting it: the adapter says what that means to its peer.
        ``now_a``: what the site's power sharing allows now, in A per phase (connector 0: all
        connectors together; a connector: its share; None: nothing shared): the first period is
        capped at it, converted to ``unit`` with the store's Supply; later periods are the profiles'.
        Raises CommandRejected for a connector that does not exist (the answer is Rejected).
        """
        if not 0 <= connector_id <= self.connector_count:
            raise CommandRejected(f"connector {connector_id} does not exist (0..{self.connector_count})")
        anchor = transaction_started_at if transaction_started_at is not None else start
        session = Session(anchor=anchor, active=transaction_started_at is not None)
        profiles = relevant(self._profiles.values(), connector_id, session)
        periods = composite(profiles, start, duration_s, session, self.supply, unit)
        if now_a is None:
            return periods
        first = periods[0] if periods else CompositePeriod(0, None)
        cap = self.supply.from_amps(now_a, unit, first.number_phases)
        if first.limit is None or cap < first.limit:
            first = replace(first, limit=cap)
        return [first, *periods[1:]]

    # -- persistence -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every profile, for the storage adapter."""
        return {"format": STORE_FORMAT, "profiles": [profile_to_dict(p) for p in self]}

    def load_dict(self, data: dict[str, Any]) -> list[str]:
        """Replace the profiles with those in ``data`` (from ``to_dict``).

        Entries that cannot be read, or no longer fit (a connector removed from the configuration),
        are skipped; the returned lines say which and why, for one log line each.
        """
        if data.get("format") != STORE_FORMAT:
            return [f"unknown charging profile store format {data.get('format')!r}: nothing loaded"]
        self._profiles.clear()
        problems = []
        for index, entry in enumerate(data.get("profiles", [])):
            try:
                profile = profile_from_dict(entry)
            except ValueError as exc:
                problems.append(f"profiles[{index}]: {exc}")
                continue
            # A stored TX profile's transaction may still run: check it as if it did.
            reason = self.rejection_reason(
                profile,
                active_transaction_id=profile.transaction_id,
                remote_start=profile.purpose is ProfilePurpose.TX and profile.transaction_id is None,
            )
            if reason is not None:
                problems.append(f"profiles[{index}] (id {profile.profile_id}): {reason}")
                continue
            self._profiles[profile.profile_id] = profile
        return problems
