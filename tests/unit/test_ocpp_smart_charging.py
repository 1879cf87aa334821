"""OCPP 1.6 smart-charging payloads <-> domain charging profiles, checked against the library's schemas."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from ocpp.charge_point import camel_to_snake_case, remove_nones, serialize_as_dict, snake_to_camel_case
from ocpp.messages import Call, CallResult, _validate_payload
from ocpp.v16 import call

from adapters.ocpp_upstream.smart_charging import (
    KIND,
    PURPOSE,
    RECURRENCE,
    UNIT,
    cap_first_period,
    composite_schedule_result,
    profile_from_ocpp,
    profile_to_ocpp,
    purpose_from_ocpp,
    unit_from_ocpp,
)
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
from gateway.domain.charging_schedule import CompositePeriod
from gateway.domain.charging_store import ChargingProfileStore
from gateway.domain.errors import CommandRejected

T0 = datetime(2026, 3, 2, tzinfo=UTC)

WIRE = {  # a SetChargingProfile.req's csChargingProfiles as the CSMS sends it
    "chargingProfileId": 12,
    "stackLevel": 2,
    "chargingProfilePurpose": "TxDefaultProfile",
    "chargingProfileKind": "Recurring",
    "recurrencyKind": "Daily",
    "validFrom": "2026-03-01T00:00:00Z",
    "validTo": "2026-04-01T00:00:00.000+02:00",
    "chargingSchedule": {
        "duration": 86400,
        "startSchedule": "2026-03-01T22:00:00Z",
        "chargingRateUnit": "A",
        "chargingSchedulePeriod": [
            {"startPeriod": 0, "limit": 32.0},
            {"startPeriod": 28800, "limit": 10.5, "numberPhases": 1},
        ],
        "minChargingRate": 6.0,
    },
}
DOMAIN = ChargingProfile(
    profile_id=12,
    connector_id=1,
    stack_level=2,
    purpose=ProfilePurpose.TX_DEFAULT,
    kind=ProfileKind.RECURRING,
    recurrence=Recurrence.DAILY,
    valid_from=datetime(2026, 3, 1, tzinfo=UTC),
    valid_to=datetime(2026, 3, 31, 22, tzinfo=UTC),
    schedule=ChargingSchedule(
        periods=(SchedulePeriod(0, 32.0), SchedulePeriod(28800, 10.5, 1)),
        rate_unit=RateUnit.AMPERE,
        start_schedule=datetime(2026, 3, 1, 22, tzinfo=UTC),
        duration_s=86400,
        min_charging_rate=6.0,
    ),
)


def as_the_library_delivers(request: call.SetChargingProfile) -> dict[str, Any]:
    """What a SetChargingProfile handler's kwargs are: validated, then snake_cased recursively."""
    payload = snake_to_camel_case(remove_nones(serialize_as_dict(request)))
    _validate_payload(Call("1", "SetChargingProfile", payload), "1.6")
    result: dict[str, Any] = camel_to_snake_case(payload)
    return result


def validated_composite_answer(result: Any) -> dict[str, Any]:
    """What goes on the wire for a GetCompositeSchedule answer, after the library's own schema check."""
    payload = snake_to_camel_case(remove_nones(serialize_as_dict(result)))
    _validate_payload(CallResult("1", payload, action="GetCompositeSchedule"), "1.6")
    answer: dict[str, Any] = payload
    return answer


def test_the_tables_cover_every_domain_value() -> None:
    assert set(PURPOSE.values()) == set(ProfilePurpose)
    assert set(KIND.values()) == set(ProfileKind)
    assert set(RECURRENCE.values()) == set(Recurrence)
    assert set(UNIT.values()) == set(RateUnit)


def test_a_set_charging_profile_as_delivered_by_the_library() -> None:
    kwargs = as_the_library_delivers(call.SetChargingProfile(connector_id=1, cs_charging_profiles=WIRE))
    assert profile_from_ocpp(kwargs["connector_id"], kwargs["cs_charging_profiles"]) == DOMAIN


def test_camel_case_and_library_dataclasses_are_read_too() -> None:
    assert profile_from_ocpp(1, WIRE) == DOMAIN
    assert profile_from_ocpp(1, profile_to_ocpp(DOMAIN)) == DOMAIN


@pytest.mark.parametrize(
    "domain",
    [
        DOMAIN,
        replace(DOMAIN, purpose=ProfilePurpose.TX, kind=ProfileKind.ABSOLUTE, recurrence=None, transaction_id=77),
        replace(
            DOMAIN,
            connector_id=0,
            purpose=ProfilePurpose.CHARGE_POINT_MAX,
            kind=ProfileKind.RELATIVE,
            recurrence=None,
            valid_from=None,
            valid_to=None,
            schedule=ChargingSchedule((SchedulePeriod(0, 11000.0, 3),), RateUnit.WATT),
        ),
    ],
)
def test_domain_profiles_make_schema_valid_requests_and_come_back_unchanged(domain: ChargingProfile) -> None:
    request = call.SetChargingProfile(connector_id=domain.connector_id, cs_charging_profiles=profile_to_ocpp(domain))
    kwargs = as_the_library_delivers(request)
    assert profile_from_ocpp(kwargs["connector_id"], kwargs["cs_charging_profiles"]) == domain


def test_a_zone_less_time_is_taken_as_utc() -> None:
    wire = {**WIRE, "validFrom": "2026-03-01T00:00:00"}
    assert profile_from_ocpp(1, wire).valid_from == datetime(2026, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        ({"chargingProfilePurpose": "Bogus"}, "unknown chargingProfilePurpose 'Bogus'"),
        ({"chargingProfileKind": None}, "unknown chargingProfileKind None"),
        ({"validTo": "tomorrow"}, "validTo 'tomorrow' is not a date-time"),
        ({"chargingSchedule": {"chargingRateUnit": "A"}}, "lacks charging_schedule_period"),
        ({"stackLevel": "x"}, "malformed"),
    ],
)
def test_unreadable_profiles_are_rejected_with_a_reason(patch: dict[str, Any], reason: str) -> None:
    with pytest.raises(CommandRejected, match=reason):
        profile_from_ocpp(1, {**WIRE, **patch})


def test_clear_and_composite_request_fields() -> None:
    assert purpose_from_ocpp(None) is None
    assert purpose_from_ocpp("TxProfile") is ProfilePurpose.TX
    assert unit_from_ocpp(None) is RateUnit.AMPERE
    assert unit_from_ocpp("W") is RateUnit.WATT


def test_a_composite_answer_passes_the_schema() -> None:
    store = ChargingProfileStore(2)
    store.install(profile_from_ocpp(1, WIRE))
    start = datetime(2026, 3, 2, 20, tzinfo=UTC)
    periods = store.composite_schedule(1, start, 6 * 3600, unit=RateUnit.WATT)
    answer = validated_composite_answer(
        composite_schedule_result(1, start, 6 * 3600, periods, RateUnit.WATT, unlimited=22080.0)
    )
    assert answer == {
        "status": "Accepted",
        "connectorId": 1,
        "scheduleStart": "2026-03-02T20:00:00.000Z",
        "chargingSchedule": {
            "duration": 21600,
            "startSchedule": "2026-03-02T20:00:00.000Z",
            "chargingRateUnit": "W",
            "chargingSchedulePeriod": [
                {"startPeriod": 0, "limit": 2415.0, "numberPhases": 1},  # 10.5 A on one phase
                {"startPeriod": 7200, "limit": 22080.0},  # 32 A on three
            ],
        },
    }


def test_composite_limits_are_rounded_down_to_tenths_and_gaps_get_the_maximum() -> None:
    periods = [
        CompositePeriod(0, 13.04347826),
        CompositePeriod(60, None),
        CompositePeriod(120, 21.4),
        CompositePeriod(180, 0.0),
    ]
    answer = validated_composite_answer(composite_schedule_result(0, T0, 600, periods, RateUnit.AMPERE, unlimited=32.0))
    limits = [p["limit"] for p in answer["chargingSchedule"]["chargingSchedulePeriod"]]
    assert limits == [13.0, 32.0, 21.4, 0.0]


def test_an_empty_composite_is_one_period_at_the_maximum() -> None:
    answer = validated_composite_answer(composite_schedule_result(1, T0, 60, [], RateUnit.AMPERE, unlimited=16.0))
    assert answer["chargingSchedule"]["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 16.0}]


def test_the_shared_limit_caps_the_first_period_of_a_composite_only() -> None:
    """GetCompositeSchedule while sharing binds: now it is the share (connector) or the shared
    limit (connector 0), later periods are the profiles'; in W with the store's Supply."""
    store = ChargingProfileStore(2)
    store.install(profile_from_ocpp(1, WIRE))  # 10.5 A on one phase until 22:00, then 32 A
    start = datetime(2026, 3, 2, 20, tzinfo=UTC)
    periods = store.composite_schedule(1, start, 6 * 3600, unit=RateUnit.WATT, now_a=8.0)
    answer = validated_composite_answer(
        composite_schedule_result(1, start, 6 * 3600, periods, RateUnit.WATT, unlimited=22080.0)
    )
    assert answer["chargingSchedule"]["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 1840.0, "numberPhases": 1},  # 8 A on one phase, not 10.5 A
        {"startPeriod": 7200, "limit": 22080.0},  # 32 A on three: the profile's again
    ]
    # a share above what the profiles allow changes nothing; no profile at all: the share
    assert store.composite_schedule(1, start, 600, now_a=20.0) == [CompositePeriod(0, 10.5, 1)]
    assert store.composite_schedule(0, start, 600, now_a=12.3) == [CompositePeriod(0, 12.3)]
    assert store.composite_schedule(0, start, 600) == [CompositePeriod(0, None)]


def test_a_native_chargers_composite_is_capped_at_its_share_in_its_own_unit() -> None:
    relayed = {
        "charging_rate_unit": "W",
        "charging_schedule_period": [{"start_period": 0, "limit": 11040.0}, {"start_period": 60, "limit": 22080.0}],
        "duration": 600,
    }
    capped = cap_first_period(relayed, 8.04, Supply())
    assert capped["charging_schedule_period"] == [
        {"start_period": 0, "limit": 5547.6},  # 8.04 A * 230 V * 3, rounded down to tenths
        {"start_period": 60, "limit": 22080.0},
    ]
    assert capped["duration"] == 600 and relayed["charging_schedule_period"][0]["limit"] == 11040.0
    assert cap_first_period(relayed, 20.0, Supply()) == relayed  # above what it says: unchanged
