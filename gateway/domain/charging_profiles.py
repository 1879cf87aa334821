"""Charging profiles: limits on a connector's charging current over time, free of any protocol.

A back office (OCPP 1.6 smart charging) caps what the chargers may draw with profiles of three
purposes, layered as the specification describes:

* ``CHARGE_POINT_MAX`` caps the whole gateway (installed on connector 0 only);
* ``TX_DEFAULT`` is what a session gets by default (connector 0 = every connector, or one connector);
* ``TX`` belongs to one running transaction on one connector and ends with it.

Each profile has a schedule: periods that start ``start_period_s`` seconds into the schedule, each
with a limit in the schedule's ``rate_unit`` (amperes per phase, or watts in total). The schedule
starts at a fixed instant (absolute), repeats daily or weekly from ``start_schedule`` (recurring) or
starts with the transaction (relative). Evaluation lives in ``charging_schedule``, the rules for
installing and clearing in ``charging_store``; this module holds the types, the checks that need no
context, and the plain-dict form used to persist profiles across restarts.

Limits keep the unit they were given in, so the persisted form is exactly what the back office
sent; conversion of watts to amperes happens at evaluation time with a configured ``Supply``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from itertools import pairwise
from typing import Any, TypeVar

T = TypeVar("T")


class ProfilePurpose(StrEnum):
    CHARGE_POINT_MAX = "charge_point_max"
    TX_DEFAULT = "tx_default"
    TX = "tx"


class ProfileKind(StrEnum):
    ABSOLUTE = "absolute"  # starts at ``start_schedule`` (or, without one, like RELATIVE)
    RECURRING = "recurring"  # repeats every day or week from ``start_schedule``
    RELATIVE = "relative"  # starts when the transaction starts


class Recurrence(StrEnum):
    DAILY = "daily"
    WEEKLY = "weekly"


# Cycles are exact 24 h / 7 d from start_schedule in UTC: no daylight-saving adjustment.
CYCLE = {Recurrence.DAILY: timedelta(days=1), Recurrence.WEEKLY: timedelta(days=7)}


class RateUnit(StrEnum):
    """The unit of a schedule's limits: amperes per phase, or watts over all phases."""

    AMPERE = "A"
    WATT = "W"


@dataclass(frozen=True, slots=True)
class Supply:
    """How a limit in watts maps to amperes per phase: ``current_a = power_w / (voltage_v * phases)``.

    ``voltage_v`` is the nominal phase-to-neutral voltage; ``None`` means watts are not supported and
    profiles in W are rejected. ``phases`` is used where a period does not say ``number_phases``
    (OCPP's default is 3; a single-phase site sets 1 so 3680 W means 16 A, not 5.3 A).
    """

    voltage_v: float | None = 230.0
    phases: int = 3

    def to_amps(self, limit: float, unit: RateUnit, number_phases: int | None) -> float:
        if unit is RateUnit.AMPERE:
            return limit
        if self.voltage_v is None:
            raise ValueError("limits in W need a configured voltage")
        return limit / (self.voltage_v * (number_phases or self.phases))

    def from_amps(self, limit_a: float, unit: RateUnit, number_phases: int | None) -> float:
        if unit is RateUnit.AMPERE:
            return limit_a
        if self.voltage_v is None:
            raise ValueError("limits in W need a configured voltage")
        return limit_a * self.voltage_v * (number_phases or self.phases)


@dataclass(frozen=True, slots=True)
class SchedulePeriod:
    """From ``start_period_s`` into the schedule until the next period: at most ``limit``.

    ``limit`` is in the schedule's ``rate_unit``; ``number_phases`` None means "as configured".
    """

    start_period_s: int
    limit: float
    number_phases: int | None = None


@dataclass(frozen=True, slots=True)
class ChargingSchedule:
    """Periods in order; without ``duration_s`` the last period lasts until the schedule ends
    (for ever, or until the next recurrence). ``min_charging_rate`` is kept for the record only."""

    periods: tuple[SchedulePeriod, ...]
    rate_unit: RateUnit = RateUnit.AMPERE
    start_schedule: datetime | None = None
    duration_s: int | None = None
    min_charging_rate: float | None = None
    schedule_id: int | None = None  # the sender's name for it (OCPP 2.0.1 has one), kept to report it back


@dataclass(frozen=True, slots=True)
class ChargingProfile:
    """One installed profile, with the connector it was installed on (0 = the whole gateway)."""

    profile_id: int
    connector_id: int
    stack_level: int
    purpose: ProfilePurpose
    kind: ProfileKind
    schedule: ChargingSchedule
    # TX only: the transaction it belongs to, as the back office names it (1.6: the CSMS's number;
    # 2.0.1: the station's own string)
    transaction_id: int | str | None = None
    recurrence: Recurrence | None = None  # RECURRING only
    valid_from: datetime | None = None
    valid_to: datetime | None = None

    def applies_to(self, connector_id: int) -> bool:
        """Whether this profile takes part in ``connector_id``'s limit (connector 0: the gateway cap)."""
        if self.purpose is ProfilePurpose.CHARGE_POINT_MAX:
            return True
        if connector_id == 0:
            return False
        if self.purpose is ProfilePurpose.TX_DEFAULT:
            return self.connector_id in (0, connector_id)
        return self.connector_id == connector_id


def profile_problem(profile: ChargingProfile) -> str | None:
    """Why ``profile`` is malformed in itself (whatever the charge point's state), or None.

    The reason is one line for the log and the installer; the caller answers Rejected.
    """
    schedule = profile.schedule
    if profile.stack_level < 0:
        return f"stack_level {profile.stack_level} is negative"
    if profile.transaction_id is not None and profile.purpose is not ProfilePurpose.TX:
        return "transaction_id is only allowed on a TX profile"
    for name in ("valid_from", "valid_to"):
        moment = getattr(profile, name)
        if moment is not None and moment.utcoffset() is None:
            return f"{name} has no time zone"
    if schedule.start_schedule is not None and schedule.start_schedule.utcoffset() is None:
        return "start_schedule has no time zone"
    if profile.valid_from and profile.valid_to and profile.valid_to <= profile.valid_from:
        return "valid_to is not after valid_from"
    if profile.kind is ProfileKind.RECURRING:
        if profile.recurrence is None:
            return "a recurring profile needs a recurrence (daily or weekly)"
        if schedule.start_schedule is None:
            return "a recurring profile needs start_schedule to anchor its recurrence"
    if schedule.duration_s is not None and schedule.duration_s <= 0:
        return f"duration_s {schedule.duration_s} is not positive"
    if schedule.min_charging_rate is not None and schedule.min_charging_rate < 0:
        return "min_charging_rate is negative"
    return _periods_problem(profile)


def _periods_problem(profile: ChargingProfile) -> str | None:
    periods = profile.schedule.periods
    if not periods:
        return "the schedule has no periods"
    if periods[0].start_period_s != 0:
        return f"the first period starts at {periods[0].start_period_s} s, not 0"
    for index, (before, after) in enumerate(pairwise(periods), start=1):
        if after.start_period_s <= before.start_period_s:
            return f"period {index} starts at {after.start_period_s} s, not after {before.start_period_s} s"
    cycle = CYCLE.get(profile.recurrence) if profile.kind is ProfileKind.RECURRING and profile.recurrence else None
    if cycle is not None and periods[-1].start_period_s >= cycle.total_seconds():
        return f"period starts at {periods[-1].start_period_s} s, beyond the {profile.recurrence} recurrence"
    for index, period in enumerate(periods):
        if period.limit < 0:
            return f"period {index} has a negative limit {period.limit:g}"
        if period.number_phases is not None and period.number_phases not in (1, 2, 3):
            return f"period {index} has number_phases {period.number_phases} (1, 2 or 3)"
    return None


# -- the plain-dict form (persistence) ----------------------------------------------------------
def profile_to_dict(profile: ChargingProfile) -> dict[str, Any]:
    """A JSON-able dict of ``profile``; ``profile_from_dict`` reads it back unchanged."""
    schedule = profile.schedule
    return {
        "profile_id": profile.profile_id,
        "connector_id": profile.connector_id,
        "stack_level": profile.stack_level,
        "purpose": profile.purpose.value,
        "kind": profile.kind.value,
        "transaction_id": profile.transaction_id,
        "recurrence": profile.recurrence.value if profile.recurrence else None,
        "valid_from": _time_to_str(profile.valid_from),
        "valid_to": _time_to_str(profile.valid_to),
        "schedule": {
            "rate_unit": schedule.rate_unit.value,
            "start_schedule": _time_to_str(schedule.start_schedule),
            "duration_s": schedule.duration_s,
            "min_charging_rate": schedule.min_charging_rate,
            "schedule_id": schedule.schedule_id,
            "periods": [
                {"start_period_s": p.start_period_s, "limit": p.limit, "number_phases": p.number_phases}
                for p in schedule.periods
            ],
        },
    }


def profile_from_dict(data: dict[str, Any]) -> ChargingProfile:
    """The profile stored by ``profile_to_dict``; raises ValueError (naming the key) if malformed."""
    try:
        schedule = data["schedule"]
        return ChargingProfile(
            profile_id=_int(data["profile_id"]),
            connector_id=_int(data["connector_id"]),
            stack_level=_int(data["stack_level"]),
            purpose=ProfilePurpose(data["purpose"]),
            kind=ProfileKind(data["kind"]),
            transaction_id=_optional(_transaction_id, data.get("transaction_id")),
            recurrence=_optional(Recurrence, data.get("recurrence")),
            valid_from=_optional(_time_from_str, data.get("valid_from")),
            valid_to=_optional(_time_from_str, data.get("valid_to")),
            schedule=ChargingSchedule(
                periods=tuple(
                    SchedulePeriod(
                        start_period_s=_int(p["start_period_s"]),
                        limit=float(p["limit"]),
                        number_phases=_optional(_int, p.get("number_phases")),
                    )
                    for p in schedule["periods"]
                ),
                rate_unit=RateUnit(schedule["rate_unit"]),
                start_schedule=_optional(_time_from_str, schedule.get("start_schedule")),
                duration_s=_optional(_int, schedule.get("duration_s")),
                min_charging_rate=_optional(float, schedule.get("min_charging_rate")),
                schedule_id=_optional(_int, schedule.get("schedule_id")),
            ),
        )
    except KeyError as exc:
        raise ValueError(f"missing key {exc.args[0]!r}") from exc
    except (TypeError, AttributeError) as exc:
        raise ValueError(f"malformed profile: {exc}") from exc


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not an integer")
    return value


def _transaction_id(value: Any) -> int | str:
    return value if isinstance(value, str) else _int(value)


def _optional(convert: Callable[[Any], T], value: Any) -> T | None:
    return None if value is None else convert(value)


def _time_to_str(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _time_from_str(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.utcoffset() is None:
        raise ValueError(f"time {text!r} has no time zone")
    return moment
