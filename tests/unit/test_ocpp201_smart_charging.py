"""The 2.0.1 station's smart charging without a network: the translation both ways, the checks and
their reasonCodes, and every answer and report against the 2.0.1 schema."""

from __future__ import annotations

import asyncio
import math
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import pytest
from ocpp.charge_point import camel_to_snake_case, remove_nones, snake_to_camel_case
from ocpp.messages import Call, CallResult, validate_payload

from adapters.ocpp201_upstream.charging_control import MAX_COMPOSITE_S, SmartCharging201
from adapters.ocpp201_upstream.mapping import transaction_id
from adapters.ocpp201_upstream.smart_charging import Refused, profile_from_ocpp, profile_to_ocpp, report_parts
from gateway.domain.charging_profiles import ProfilePurpose, RateUnit, profile_from_dict, profile_to_dict
from gateway.domain.model import ChargerSnapshot, Connector, Reading, VehicleState
from gateway.domain.transactions import AuthPolicy
from gateway.services.sessions import ConnectorPolicy
from gateway.services.site import Site

AT = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def valid(message: Call | CallResult) -> None:
    """The ocpp library's 2.0.1 schema check (raises if the payload fails it)."""
    asyncio.run(validate_payload(message, "2.0.1"))


def answer_valid(result: Any, action: str) -> None:
    valid(CallResult("1", snake_to_camel_case(remove_nones(asdict(result))), action))


def wire(
    profile_id: int = 1, purpose: str = "TxDefaultProfile", limit: float = 16, unit: str = "A", **extra: Any
) -> dict[str, Any]:
    """A chargingProfile as the CSMS sends it (camelCase)."""
    return {
        "id": profile_id,
        "stackLevel": 1,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute",
        "validFrom": "2026-01-01T00:00:00Z",
        "chargingSchedule": [
            {
                "id": 70,
                "startSchedule": "2026-01-01T00:00:00Z",
                "duration": 86400,
                "chargingRateUnit": unit,
                "chargingSchedulePeriod": [
                    {"startPeriod": 0, "limit": limit},
                    {"startPeriod": 3600, "limit": 8.5, "numberPhases": 1},
                ],
                "minChargingRate": 6.0,
            }
        ],
        **extra,
    }


def make_site(voltage: bool = True) -> Site:
    site = Site(
        [Connector(1, "left"), Connector(2, "right")],
        [],
        policies={1: ConnectorPolicy(AuthPolicy.FREE, "FREE-1"), 2: ConnectorPolicy(AuthPolicy.REMOTE)},
    )
    if not voltage:
        site.charging_profiles.supply = type(site.charging_profiles.supply)(voltage_v=None)
    return site


def with_session(site: Site) -> str:
    """A car at EVSE 1 (free charging): its session's transactionId."""
    reading = Reading(AT, energy_wh=1000, power_w=0.0, current_a=(0.0, 0.0, 0.0))
    site.apply(ChargerSnapshot("left", 1, reading, vehicle_state=VehicleState.B))
    session = site.connectors[1].session
    assert session is not None
    return transaction_id(session.local_ref)


def smart_charging(site: Site) -> SmartCharging201:
    """As the station builds it, with the transactions its ledger holds (here: the sessions now)."""
    return SmartCharging201(site, {cid: c.session.local_ref for cid, c in site.connectors.items() if c.session})


def test_a_profile_goes_to_the_domain_and_back_unchanged() -> None:
    sent = wire(transactionId=None)
    profile = profile_from_ocpp(3, sent)
    assert (profile.connector_id, profile.purpose, profile.schedule.schedule_id) == (3, ProfilePurpose.TX_DEFAULT, 70)
    assert profile.schedule.periods[1].limit == 8.5 and profile.schedule.rate_unit is RateUnit.AMPERE
    back = profile_to_ocpp(profile)
    expected = camel_to_snake_case({k: v for k, v in sent.items() if v is not None})
    expected["valid_from"] = expected["charging_schedule"][0]["start_schedule"] = "2026-01-01T00:00:00.000Z"
    assert back == expected
    assert profile_from_dict(profile_to_dict(profile)) == profile  # the store's form keeps the schedule id
    report = report_parts(4, {3: [back]})
    assert [(p.evse_id, p.tbc) for p in report] == [(3, False)]
    valid(Call("1", "ReportChargingProfiles", snake_to_camel_case(remove_nones(asdict(report[0])))))


def test_a_string_transaction_id_is_stored_and_read_back() -> None:
    profile = profile_from_ocpp(1, wire(purpose="TxProfile", transactionId="c1-20261207T090000-1-1"))
    assert profile_from_dict(profile_to_dict(profile)).transaction_id == "c1-20261207T090000-1-1"


def _mutated(change: str) -> dict[str, Any]:
    sent = wire()
    schedule, period = sent["chargingSchedule"][0], sent["chargingSchedule"][0]["chargingSchedulePeriod"][0]
    if change == "external":
        sent["chargingProfilePurpose"] = "ChargingStationExternalConstraints"
    elif change == "two schedules":
        sent["chargingSchedule"] = [schedule, {**schedule, "id": 71}]
    elif change == "phaseToUse":
        period.update(numberPhases=1, phaseToUse=2)
    elif change == "stack beyond 32 bits":
        sent["stackLevel"] = 2**31
    elif change == "start beyond 32 bits":
        sent["chargingSchedule"][0]["chargingSchedulePeriod"][1]["startPeriod"] = int("9" * 4000)
    elif change == "limit infinite":
        period["limit"] = math.inf
    elif change == "limit not a number":
        period["limit"] = math.nan
    elif change == "validFrom not a date":
        sent["validFrom"] = "yesterday"
    elif change == "no schedule id":
        del schedule["id"]
    return sent


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ("external", "InvalidValue"),
        ("two schedules", "UnsupportedParam"),
        ("phaseToUse", "UnsupportedParam"),
        ("stack beyond 32 bits", "ValueTooHigh"),
        ("start beyond 32 bits", "ValueTooHigh"),
        ("limit infinite", "InvalidValue"),
        ("limit not a number", "InvalidValue"),
        ("validFrom not a date", "InvalidValue"),
        ("no schedule id", "MissingParam"),
    ],
)
def test_what_cannot_be_read_is_refused_with_its_reason_code(change: str, code: str) -> None:
    with pytest.raises(Refused) as refused:
        profile_from_ocpp(0, _mutated(change))
    assert refused.value.reason_code == code


@pytest.mark.parametrize(
    ("evse_id", "profile", "code"),
    [
        (5, wire(), "UnknownEvse"),
        (1, wire(purpose="ChargingStationMaxProfile"), "InvalidProfile"),
        (0, wire(purpose="TxProfile", transactionId="t"), "InvalidProfile"),
        (1, wire(purpose="TxProfile"), "MissingParam"),  # K01.FR.03: a TxProfile names its transaction
        (2, wire(purpose="TxProfile", transactionId="t"), "TxNotFound"),  # no session on EVSE 2
        (1, wire(purpose="TxProfile", transactionId="someone-else"), "TxNotFound"),
        (0, {**wire(), "stackLevel": 101}, "InvalidStackLevel"),
        (0, {**wire(), "validTo": "2025-01-01T00:00:00Z"}, "InvalidProfile"),  # before validFrom
        (0, {**wire(), "stackLevel": -1}, "InvalidProfile"),
        (0, wire(limit=-3), "InvalidSchedule"),
        (0, wire(purpose="ChargingStationExternalConstraints"), "InvalidValue"),
    ],
)
def test_set_charging_profile_rejections_pass_the_schema(evse_id: int, profile: dict[str, Any], code: str) -> None:
    site = make_site()
    with_session(site)
    answer = smart_charging(site).set_profile(evse_id, camel_to_snake_case(profile))
    assert (answer.status, answer.status_info["reason_code"]) == ("Rejected", code)
    answer_valid(answer, "SetChargingProfile")
    assert len(site.charging_profiles) == 0


def test_watts_without_a_voltage_and_too_many_periods_are_rejected() -> None:
    smart = smart_charging(make_site(voltage=False))
    answer = smart.set_profile(0, camel_to_snake_case(wire(unit="W", limit=11000)))
    assert answer.status_info["reason_code"] == "UnsupportedRateUnit"
    many = wire()
    many["chargingSchedule"][0]["chargingSchedulePeriod"] = [{"startPeriod": s, "limit": 6} for s in range(101)]
    assert smart.set_profile(0, camel_to_snake_case(many)).status_info["reason_code"] == "TooManyElements"


def test_accepted_profiles_are_reported_per_evse_and_cleared() -> None:
    site = make_site()
    running = with_session(site)
    smart = smart_charging(site)
    for evse_id, sent in [
        (0, wire(1, "ChargingStationMaxProfile", 20)),
        (0, wire(2)),
        (1, wire(3, "TxProfile", transactionId=running)),
        (1, {**wire(4, "TxProfile", transactionId=running), "stackLevel": 2}),
    ]:
        answer = smart.set_profile(evse_id, camel_to_snake_case(sent))
        assert answer.status == "Accepted"
        answer_valid(answer, "SetChargingProfile")
    parts = smart.reports(11, smart.matching(None, {}))
    assert [(p.evse_id, p.tbc, len(p.charging_profile)) for p in parts] == [(0, True, 2), (1, False, 2)]
    for part in parts:
        valid(Call("1", "ReportChargingProfiles", snake_to_camel_case(remove_nones(asdict(part)))))
    assert smart.matching(None, {"charging_limit_source": ["EMS"]}) == []
    assert [p.profile_id for p in smart.matching(1, {"charging_profile_id": [3, 1]})] == [3]
    assert smart.matching(None, {"charging_profile_purpose": "ChargingStationExternalConstraints"}) == []
    by_purpose = smart.clear(None, {"charging_profile_purpose": "TxProfile", "evse_id": 1})
    assert by_purpose.status == "Accepted"
    answer_valid(by_purpose, "ClearChargingProfile")
    assert sorted(p.profile_id for p in site.charging_profiles) == [1, 2]
    unknown = smart.clear(99, None)
    assert unknown.status == "Unknown"
    answer_valid(unknown, "ClearChargingProfile")
    assert smart.clear(None, None).status == "Accepted" and len(site.charging_profiles) == 0


def test_composite_schedules_pass_the_schema() -> None:
    site = make_site()
    smart = smart_charging(site)
    empty = smart.composite(1, 600, None)  # no profile: the unlimited figure, 32 A
    assert empty.schedule["charging_schedule_period"] == [{"start_period": 0, "limit": 32.0}]
    answer_valid(empty, "GetCompositeSchedule")
    station_max = wire(1, "ChargingStationMaxProfile", 10.07)
    del station_max["chargingSchedule"][0]["duration"]  # in force from 2026 on, for ever
    station_max["chargingSchedule"][0]["chargingSchedulePeriod"] = [{"startPeriod": 0, "limit": 10.07}]
    assert smart.set_profile(0, camel_to_snake_case(station_max)).status == "Accepted"
    amps = smart.composite(0, 600, "A")
    assert amps.schedule["charging_schedule_period"][0]["limit"] == 10.0  # rounded down to 0.1
    watts = smart.composite(1, 600, "W")
    assert watts.schedule["charging_rate_unit"] == "W"
    answer_valid(amps, "GetCompositeSchedule")
    answer_valid(watts, "GetCompositeSchedule")
    for evse_id, duration_s in [(9, 600), (1, -1), (1, MAX_COMPOSITE_S + 1)]:
        refused = smart.composite(evse_id, duration_s, None)
        assert refused.status == "Rejected"
        answer_valid(refused, "GetCompositeSchedule")


def test_a_start_profile_is_checked_then_installed_for_the_session_to_come() -> None:
    site = make_site()
    smart = smart_charging(site)
    for evse_id, sent, code in [
        (None, wire(purpose="TxProfile"), "MissingParam"),
        (9, wire(purpose="TxProfile"), "UnknownEvse"),
        (2, wire(), "InvalidProfile"),  # not a TxProfile
        (2, wire(purpose="TxProfile", transactionId="x"), "InvalidProfile"),
    ]:
        with pytest.raises(Refused) as refused:
            smart.start_profile(evse_id, camel_to_snake_case(sent))
        assert refused.value.reason_code == code
    profile = smart.start_profile(2, camel_to_snake_case(wire(5, "TxProfile")))
    smart.install_for_start(profile)
    stored = site.charging_profiles.get(5)
    assert stored is not None and stored.transaction_id is None and stored.connector_id == 2
