"""Pure translation between OCPP 2.0.1 smart-charging payloads and the domain's charging profiles.

The domain's profiles (``gateway.domain.charging_profiles``) are the ones 1.6 fills: the same
store, the same evaluation and the same limits on the chargers. 2.0.1 differs on the wire only
(OCPP 2.0.1 part 2, K01-K10 and 2.12 ChargingProfileType):

* purposes: ChargingStationMaxProfile is 1.6's ChargePointMaxProfile; ChargingStationExternalConstraints
  is what a station reports of limits set outside OCPP, never something a CSMS sets (Rejected);
* ``chargingSchedule`` is a list of 1 to 3 (the alternatives an ISO 15118 car chooses from): the
  chargers behind the gateway speak IEC 61851 only, so exactly one is taken, more are Rejected;
* a schedule has its own ``id``, kept to be reported back; ``transactionId`` is the station's own
  string; ``phaseToUse`` needs phase switching no charger here has (Rejected); ``salesTariff``
  is for the car (ignored).

The library hands handlers snake_case dicts (recursively); camelCase dicts are accepted too (tests,
hand-built calls). Integers are held to OCPP's 32 bits (a larger start or duration would overflow the
schedule's arithmetic), numbers to finite values. A refusal is ``Refused`` with the statusInfo
reasonCode (2.0.1 Appendix 5) and a line for the log.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ocpp.charge_point import camel_to_snake_case
from ocpp.v201 import call, call_result

from adapters.ocpp_link import short
from gateway.domain.charging_profiles import (
    ChargingProfile,
    ChargingSchedule,
    ProfileKind,
    ProfilePurpose,
    RateUnit,
    Recurrence,
    SchedulePeriod,
)
from gateway.domain.charging_schedule import CompositePeriod, tenths_down
from gateway.domain.model import iso_utc

MAX_INT32 = 2**31 - 1
INFO_CHARACTERS = 512  # statusInfo.additionalInfo's schema limit
EXTERNAL = "ChargingStationExternalConstraints"
CHARGING_LIMIT_SOURCE = "CSO"  # every profile the gateway keeps came from the CSMS (the operator)

PURPOSE = {
    "ChargingStationMaxProfile": ProfilePurpose.CHARGE_POINT_MAX,
    "TxDefaultProfile": ProfilePurpose.TX_DEFAULT,
    "TxProfile": ProfilePurpose.TX,
}
KIND = {"Absolute": ProfileKind.ABSOLUTE, "Recurring": ProfileKind.RECURRING, "Relative": ProfileKind.RELATIVE}
RECURRENCE = {"Daily": Recurrence.DAILY, "Weekly": Recurrence.WEEKLY}
UNIT = {"A": RateUnit.AMPERE, "W": RateUnit.WATT}


class Refused(Exception):
    """A request the station answers Rejected (or Unknown...), with its reasonCode and why."""

    def __init__(self, reason_code: str, info: str) -> None:
        super().__init__(info)
        self.reason_code = reason_code
        self.info = info

    def status_info(self) -> dict[str, str]:
        """The answer's ``statusInfo`` (snake_case, as the library wants it)."""
        info = self.info if len(self.info) <= INFO_CHARACTERS else self.info[: INFO_CHARACTERS - 3] + "..."
        return {"reason_code": self.reason_code, "additional_info": info}


def _lookup(table: Mapping[str, Any], value: Any, what: str) -> Any:
    if isinstance(value, str) and value in table:
        return table[value]
    raise Refused("InvalidValue", f"{what} {shown(value)} is not supported")


def shown(value: Any) -> str:
    """A value from the CSMS for a log line or an additionalInfo: at most 40 characters."""
    return short(repr(value), 40)


def _int32(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Refused("InvalidValue", f"{what} {shown(value)} is not an integer")
    if not -MAX_INT32 - 1 <= value <= MAX_INT32:
        raise Refused("ValueTooHigh" if value > 0 else "ValueTooLow", f"{what} {shown(value)} is beyond 32 bits")
    return value


def _optional_int32(value: Any, what: str) -> int | None:
    return None if value is None else _int32(value, what)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Refused("InvalidValue", f"{what} {shown(value)} is not a number")
    number = float(value) if not isinstance(value, int) or abs(value) <= 2**53 else math.inf
    if not math.isfinite(number):
        raise Refused("InvalidValue", f"{what} {shown(value)} is not a finite number")
    return number


def _time(value: Any, what: str) -> datetime | None:
    """An OCPP dateTime; one without a zone is taken as UTC, as OCPP times are."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        raise Refused("InvalidValue", f"{what} {shown(value)} is not a date-time") from None
    return moment.replace(tzinfo=UTC) if moment.utcoffset() is None else moment.astimezone(UTC)


def profile_from_ocpp(evse_id: int, charging_profile: Mapping[str, Any]) -> ChargingProfile:
    """The domain profile for a SetChargingProfile (or RequestStartTransaction) on ``evse_id``.

    Raises Refused naming the field; the checks that need the station's state (its EVSEs, its
    transactions, the store's limits) are the caller's."""
    data: dict[str, Any] = camel_to_snake_case(dict(charging_profile))
    try:
        purpose = data["charging_profile_purpose"]
        if purpose == EXTERNAL:
            raise Refused("InvalidValue", f"{EXTERNAL} is set by the station itself, never by a CSMS")
        schedules = data["charging_schedule"]
        if not isinstance(schedules, list) or len(schedules) != 1:
            count = len(schedules) if isinstance(schedules, list) else "no"
            raise Refused("UnsupportedParam", f"{count} charging schedules: the chargers take exactly one")
        recurrence = data.get("recurrency_kind")
        transaction_id = data.get("transaction_id")
        return ChargingProfile(
            profile_id=_int32(data["id"], "id"),
            connector_id=evse_id,
            stack_level=_int32(data["stack_level"], "stackLevel"),
            purpose=_lookup(PURPOSE, purpose, "chargingProfilePurpose"),
            kind=_lookup(KIND, data["charging_profile_kind"], "chargingProfileKind"),
            transaction_id=None if transaction_id is None else str(transaction_id),
            recurrence=None if recurrence is None else _lookup(RECURRENCE, recurrence, "recurrencyKind"),
            valid_from=_time(data.get("valid_from"), "validFrom"),
            valid_to=_time(data.get("valid_to"), "validTo"),
            schedule=_schedule(schedules[0]),
        )
    except KeyError as exc:
        raise Refused("MissingParam", f"the charging profile lacks {exc.args[0]}") from None
    except (TypeError, AttributeError) as exc:
        raise Refused("InvalidValue", f"the charging profile cannot be read: {exc}") from None


def _schedule(schedule: dict[str, Any]) -> ChargingSchedule:
    periods = []
    for index, period in enumerate(schedule["charging_schedule_period"]):
        if period.get("phase_to_use") is not None:
            raise Refused("UnsupportedParam", f"period {index}: phaseToUse needs phase switching, no charger has it")
        periods.append(
            SchedulePeriod(
                _int32(period["start_period"], f"period {index} startPeriod"),
                _number(period["limit"], f"period {index} limit"),
                _optional_int32(period.get("number_phases"), f"period {index} numberPhases"),
            )
        )
    rate = schedule.get("min_charging_rate")
    return ChargingSchedule(
        periods=tuple(periods),
        rate_unit=_lookup(UNIT, schedule["charging_rate_unit"], "chargingRateUnit"),
        start_schedule=_time(schedule.get("start_schedule"), "startSchedule"),
        duration_s=_optional_int32(schedule.get("duration"), "duration"),
        min_charging_rate=None if rate is None else _number(rate, "minChargingRate"),
        schedule_id=_int32(schedule["id"], "chargingSchedule id"),
    )


def purpose_from_ocpp(value: str | None) -> ProfilePurpose | None:
    """A criterion's chargingProfilePurpose; ExternalConstraints is never kept, so it matches
    nothing (the caller answers Unknown / NoProfiles)."""
    return None if value is None else PURPOSE.get(value)


def unit_from_ocpp(value: str | None) -> RateUnit:
    """GetCompositeSchedule's optional chargingRateUnit; amperes when absent."""
    return RateUnit.AMPERE if value is None else _lookup(UNIT, value, "chargingRateUnit")


def _reverse(table: Mapping[str, Any], value: Any) -> str:
    return next(key for key, mapped in table.items() if mapped == value)


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def profile_to_ocpp(profile: ChargingProfile, running_transaction_id: str | None = None) -> dict[str, Any]:
    """``profile`` as a 2.0.1 ChargingProfileType (snake_case), for ReportChargingProfiles.

    A TX profile that came with a RequestStartTransaction holds no transaction id: it names the
    transaction running on its EVSE (``running_transaction_id``). A profile a 1.6 CSMS left (the
    store is shared, see docs/ocpp-2.0.1.md) has no schedule id: its profile id stands in."""
    schedule = profile.schedule
    transaction_id = profile.transaction_id if profile.transaction_id is not None else running_transaction_id
    if profile.purpose is not ProfilePurpose.TX:
        transaction_id = None
    return _without_none(
        {
            "id": profile.profile_id,
            "stack_level": profile.stack_level,
            "charging_profile_purpose": _reverse(PURPOSE, profile.purpose),
            "charging_profile_kind": _reverse(KIND, profile.kind),
            "recurrency_kind": None if profile.recurrence is None else _reverse(RECURRENCE, profile.recurrence),
            "valid_from": None if profile.valid_from is None else iso_utc(profile.valid_from),
            "valid_to": None if profile.valid_to is None else iso_utc(profile.valid_to),
            "transaction_id": None if transaction_id is None else str(transaction_id),
            "charging_schedule": [
                _without_none(
                    {
                        "id": schedule.schedule_id if schedule.schedule_id is not None else profile.profile_id,
                        "start_schedule": None if schedule.start_schedule is None else iso_utc(schedule.start_schedule),
                        "duration": schedule.duration_s,
                        "charging_rate_unit": _reverse(UNIT, schedule.rate_unit),
                        "charging_schedule_period": [
                            _without_none(
                                {"start_period": p.start_period_s, "limit": p.limit, "number_phases": p.number_phases}
                            )
                            for p in schedule.periods
                        ],
                        "min_charging_rate": schedule.min_charging_rate,
                    }
                )
            ],
        }
    )


def report_parts(request_id: int, by_evse: Mapping[int, Sequence[dict[str, Any]]]) -> list[call.ReportChargingProfiles]:
    """GetChargingProfiles' ReportChargingProfiles: one per EVSE (the message names one), in EVSE
    order, ``tbc`` on all but the last (K09.FR.04); ``by_evse`` holds profile_to_ocpp dicts."""
    evses = [evse_id for evse_id in sorted(by_evse) if by_evse[evse_id]]
    return [
        call.ReportChargingProfiles(
            request_id=request_id,
            charging_limit_source=CHARGING_LIMIT_SOURCE,
            evse_id=evse_id,
            charging_profile=list(by_evse[evse_id]),
            tbc=index < len(evses) - 1,
        )
        for index, evse_id in enumerate(evses)
    ]


def composite_schedule_result(
    evse_id: int,
    start: datetime,
    duration_s: int,
    periods: Sequence[CompositePeriod],
    unit: RateUnit,
    *,
    unlimited: float,
) -> call_result.GetCompositeSchedule:
    """The Accepted GetCompositeSchedule for a composite from ``ChargingProfileStore``.

    A period has a limit in 2.0.1 too, so where no profile limits ``unlimited`` stands (in ``unit``:
    what the charger can take). Limits are rounded *down* to the one decimal 2.0.1 allows, so the
    answer never promises more than the gateway will allow."""
    rows = periods or [CompositePeriod(0, None)]
    return call_result.GetCompositeSchedule(
        status="Accepted",
        schedule={
            "evse_id": evse_id,
            "duration": duration_s,
            "schedule_start": iso_utc(start.astimezone(UTC)),
            "charging_rate_unit": _reverse(UNIT, unit),
            "charging_schedule_period": [
                _without_none(
                    {
                        "start_period": p.start_period_s,
                        "limit": tenths_down(unlimited if p.limit is None else p.limit),
                        "number_phases": p.number_phases,
                    }
                )
                for p in rows
            ],
        },
    )
