"""Pure translation between OCPP 1.6 smart-charging payloads and the domain's charging profiles.

The ``ocpp`` library hands a SetChargingProfile handler ``cs_charging_profiles`` as a dict whose
keys it has already turned into snake_case (recursively); a RemoteStartTransaction's
``charging_profile`` arrives the same way. Tests and hand-built calls may use the wire's camelCase
or a ``datatypes.ChargingProfile``: all three are accepted. Answers go out as library dataclasses,
which the library turns back into camelCase and validates against the OCPP JSON schema.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, TypeVar

from ocpp.charge_point import camel_to_snake_case
from ocpp.v16 import call_result, datatypes, enums

from gateway.domain.charging_profiles import (
    ChargingProfile,
    ChargingSchedule,
    ProfileKind,
    ProfilePurpose,
    RateUnit,
    Recurrence,
    SchedulePeriod,
    Supply,
)
from gateway.domain.charging_schedule import CompositePeriod, tenths_down
from gateway.domain.errors import CommandRejected
from gateway.domain.model import iso_utc

K = TypeVar("K")
V = TypeVar("V")

PURPOSE = {
    enums.ChargingProfilePurposeType.charge_point_max_profile: ProfilePurpose.CHARGE_POINT_MAX,
    enums.ChargingProfilePurposeType.tx_default_profile: ProfilePurpose.TX_DEFAULT,
    enums.ChargingProfilePurposeType.tx_profile: ProfilePurpose.TX,
}
KIND = {
    enums.ChargingProfileKindType.absolute: ProfileKind.ABSOLUTE,
    enums.ChargingProfileKindType.recurring: ProfileKind.RECURRING,
    enums.ChargingProfileKindType.relative: ProfileKind.RELATIVE,
}
RECURRENCE = {enums.RecurrencyKind.daily: Recurrence.DAILY, enums.RecurrencyKind.weekly: Recurrence.WEEKLY}
UNIT = {enums.ChargingRateUnitType.amps: RateUnit.AMPERE, enums.ChargingRateUnitType.watts: RateUnit.WATT}


def _lookup(table: Mapping[K, V], value: Any, what: str) -> V:
    for key, mapped in table.items():
        if key == value:
            return mapped
    raise CommandRejected(f"unknown {what} {value!r}")


def profile_from_ocpp(
    connector_id: int, cs_charging_profiles: Mapping[str, Any] | datatypes.ChargingProfile
) -> ChargingProfile:
    """The domain profile for a SetChargingProfile (or RemoteStartTransaction) on ``connector_id``.

    Raises CommandRejected naming the field when a value cannot be read (the library's schema
    validation normally catches these first).
    """
    if isinstance(cs_charging_profiles, datatypes.ChargingProfile):
        raw = asdict(cs_charging_profiles)
    else:
        raw = dict(cs_charging_profiles)
    data: dict[str, Any] = camel_to_snake_case(raw)
    try:
        schedule = data["charging_schedule"]
        kind = _lookup(KIND, data["charging_profile_kind"], "chargingProfileKind")
        recurrence = data.get("recurrency_kind")
        return ChargingProfile(
            profile_id=int(data["charging_profile_id"]),
            connector_id=connector_id,
            stack_level=int(data["stack_level"]),
            purpose=_lookup(PURPOSE, data["charging_profile_purpose"], "chargingProfilePurpose"),
            kind=kind,
            transaction_id=data.get("transaction_id"),
            recurrence=None if recurrence is None else _lookup(RECURRENCE, recurrence, "recurrencyKind"),
            valid_from=_time(data.get("valid_from"), "validFrom"),
            valid_to=_time(data.get("valid_to"), "validTo"),
            schedule=ChargingSchedule(
                periods=tuple(
                    SchedulePeriod(int(p["start_period"]), float(p["limit"]), p.get("number_phases"))
                    for p in schedule["charging_schedule_period"]
                ),
                rate_unit=_lookup(UNIT, schedule["charging_rate_unit"], "chargingRateUnit"),
                start_schedule=_time(schedule.get("start_schedule"), "startSchedule"),
                duration_s=schedule.get("duration"),
                min_charging_rate=schedule.get("min_charging_rate"),
            ),
        )
    except KeyError as exc:
        raise CommandRejected(f"charging profile lacks {exc.args[0]}") from exc
    except (TypeError, ValueError) as exc:
        raise CommandRejected(f"charging profile is malformed: {exc}") from exc


def profile_to_ocpp(profile: ChargingProfile) -> datatypes.ChargingProfile:
    """The library dataclass for ``profile`` (e.g. to answer a diagnostic or to test a round trip)."""
    schedule = profile.schedule
    return datatypes.ChargingProfile(
        charging_profile_id=profile.profile_id,
        stack_level=profile.stack_level,
        charging_profile_purpose=_reverse(PURPOSE, profile.purpose),
        charging_profile_kind=_reverse(KIND, profile.kind),
        transaction_id=profile.transaction_id,
        recurrency_kind=None if profile.recurrence is None else _reverse(RECURRENCE, profile.recurrence),
        valid_from=None if profile.valid_from is None else iso_utc(profile.valid_from),
        valid_to=None if profile.valid_to is None else iso_utc(profile.valid_to),
        charging_schedule=datatypes.ChargingSchedule(
            charging_rate_unit=_reverse(UNIT, schedule.rate_unit),
            charging_schedule_period=[
                datatypes.ChargingSchedulePeriod(p.start_period_s, p.limit, p.number_phases) for p in schedule.periods
            ],
            duration=schedule.duration_s,
            start_schedule=None if schedule.start_schedule is None else iso_utc(schedule.start_schedule),
            min_charging_rate=schedule.min_charging_rate,
        ),
    )


def purpose_from_ocpp(value: str | None) -> ProfilePurpose | None:
    """ClearChargingProfile's optional chargingProfilePurpose criterion."""
    return None if value is None else _lookup(PURPOSE, value, "chargingProfilePurpose")


def unit_from_ocpp(value: str | None) -> RateUnit:
    """GetCompositeSchedule's optional chargingRateUnit; amperes when absent."""
    return RateUnit.AMPERE if value is None else _lookup(UNIT, value, "chargingRateUnit")


def composite_schedule_result(
    connector_id: int,
    start: datetime,
    duration_s: int,
    periods: Sequence[CompositePeriod],
    unit: RateUnit,
    *,
    unlimited: float,
) -> call_result.GetCompositeSchedule:
    """The Accepted GetCompositeSchedule.conf for a composite from ``ChargingProfileStore``.

    OCPP 1.6 has no "no limit" in a schedule, so periods without a profile carry ``unlimited`` (in
    ``unit``: the connector's or gateway's own maximum). Limits are rounded *down* to the 0.1 the
    schema demands, so the answer never promises more than the gateway will allow.
    """
    start = start.astimezone(UTC)
    rows = periods or [CompositePeriod(0, None)]
    return call_result.GetCompositeSchedule(
        status=enums.GetCompositeScheduleStatus.accepted,
        connector_id=connector_id,
        schedule_start=iso_utc(start),
        charging_schedule=datatypes.ChargingSchedule(
            charging_rate_unit=_reverse(UNIT, unit),
            charging_schedule_period=[
                datatypes.ChargingSchedulePeriod(
                    start_period=p.start_period_s,
                    limit=tenths_down(unlimited if p.limit is None else p.limit),
                    number_phases=p.number_phases,
                )
                for p in rows
            ],
            duration=duration_s,
            start_schedule=iso_utc(start),
        ),
    )


def cap_first_period(schedule: Mapping[str, Any], now_a: float, supply: Supply) -> dict[str, Any]:
    """A native charger's composite ``charging_schedule`` (snake_case, as relayed) with its first
    period capped at ``now_a`` (A per phase: its share), in the schedule's own unit."""
    periods = [dict(p) for p in schedule.get("charging_schedule_period", [])]
    if not periods:
        return dict(schedule)
    first = periods[0]
    unit = _lookup(UNIT, schedule.get("charging_rate_unit"), "chargingRateUnit")
    cap = tenths_down(supply.from_amps(now_a, unit, first.get("number_phases")))
    if cap < float(first.get("limit", math.inf)):
        first["limit"] = cap
    return {**schedule, "charging_schedule_period": periods}


def _reverse(table: Mapping[K, V], value: V) -> K:
    return next(key for key, mapped in table.items() if mapped == value)


def _time(value: str | None, what: str) -> datetime | None:
    """An OCPP dateTime; one without a zone is taken as UTC, as OCPP times are."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise CommandRejected(f"{what} {value!r} is not a date-time") from exc
    return moment.replace(tzinfo=UTC) if moment.utcoffset() is None else moment.astimezone(UTC)
