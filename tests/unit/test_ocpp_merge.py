"""What a native charger says, in the gateway's terms (merged mode), without a connection."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from adapters.ocpp_local.meter_values import BadMeterValue, parse_time, reading_from_meter_values
from gateway.domain.battery import SocSource
from gateway.domain.model import Connector, ConnectorStatus, Fault, FaultKind, Reading
from gateway.services.ocpp_status import STATUS, from_status_notification
from gateway.services.site import Site

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def test_units_phases_and_the_newest_timestamp() -> None:
    reading = reading_from_meter_values(
        [
            {"timestamp": "2026-11-29T11:59:00Z", "sampled_value": [{"value": "1.5", "unit": "kWh"}]},
            {
                "timestamp": "2026-11-29T11:59:30+00:00",
                "sampled_value": [
                    {"value": "12.345", "measurand": "Energy.Active.Import.Register", "unit": "kWh"},
                    {"value": "7.4", "measurand": "Power.Active.Import", "unit": "kW"},
                    {"value": "16.1", "measurand": "Current.Import", "phase": "L1", "unit": "A"},
                    {"value": "15.9", "measurand": "Current.Import", "phase": "L2", "unit": "A"},
                    {"value": "230.5", "measurand": "Voltage", "phase": "L1-N", "unit": "V"},
                    {"value": "64", "measurand": "SoC", "unit": "Percent"},
                    {"value": "garbage", "measurand": "Energy.Reactive.Import.Register"},
                    {"value": "garbage", "measurand": "Temperature", "format": "SignedData"},
                ],
            },
        ],
        NOW,
    )
    assert reading is not None
    assert reading.measured_at == datetime(2026, 11, 29, 11, 59, 30, tzinfo=UTC)
    assert (reading.energy_wh, reading.power_w, reading.soc_percent) == (12_345, 7_400.0, 64.0)
    assert reading.current_a == (16.1, 15.9) and reading.voltage_v == (230.5,)
    assert reading.temperature_c is None  # what the gateway does not read is skipped, whatever it says


@pytest.mark.parametrize(
    ("value", "measurand", "unit"),
    [
        ("NaN", "Energy.Active.Import.Register", "Wh"),
        ("Infinity", "Power.Active.Import", "W"),
        ("-Infinity", "Energy.Active.Import.Register", "Wh"),
        ("1e400", "Energy.Active.Import.Register", "Wh"),
        ("1e308", "Energy.Active.Import.Register", "kWh"),  # finite, but not in Wh
        ("nan", "SoC", "Percent"),
        ("twelve", "Current.Import", "A"),
        ("1_000", "Voltage", "V"),  # Python's float() reads it; OCPP's decimals do not
        ("-0.5", "Energy.Active.Import.Register", "kWh"),  # a lifetime register never is
    ],
)
def test_a_value_the_gateway_cannot_use_refuses_the_whole_message(value: str, measurand: str, unit: str) -> None:
    sampled = [{"value": "7.4", "measurand": "Power.Active.Import", "unit": "kW"}]
    sampled.append({"value": value, "measurand": measurand, "unit": unit})
    with pytest.raises(BadMeterValue, match=measurand):
        reading_from_meter_values([{"timestamp": "2026-11-29T11:59:00Z", "sampled_value": sampled}], NOW)


def test_a_timestamp_that_is_not_one_falls_back_to_now() -> None:
    reading = reading_from_meter_values([{"timestamp": "yesterday", "sampled_value": [{"value": "10"}]}], NOW)
    assert reading is not None and reading.measured_at == NOW and reading.energy_wh == 10
    assert reading_from_meter_values([{"timestamp": "x", "sampled_value": []}], NOW) is None


def test_status_notifications_round_trip_with_the_upstream_table() -> None:
    for status, ocpp in STATUS.items():
        assert from_status_notification(ocpp, "NoError") == (status, ())
    status, faults = from_status_notification("Faulted", "GroundFailure", "RCD tripped", "E12")
    assert status is ConnectorStatus.FAULTED
    assert faults == (Fault(FaultKind.GROUND_FAULT, vendor_code="E12", info="RCD tripped"),)
    assert from_status_notification("Reserved", "NoError")[0] is ConnectorStatus.OCCUPIED


def test_a_native_chargers_soc_is_the_chargers_and_leaves_with_the_car() -> None:
    site = Site([Connector(1, "NATIVE-1")], [])
    site.native.register([1])
    site.native.status(1, ConnectorStatus.CHARGING, (), NOW)
    site.native.reading(1, Reading(NOW, energy_wh=1_000, soc_percent=57.0))
    soc = site.connectors[1].soc
    assert soc is not None and (soc.soc_percent, soc.source) == (57.0, SocSource.CHARGER)
    site.native.status(1, ConnectorStatus.AVAILABLE, (), NOW)
    assert site.connectors[1].soc is None


def test_a_charger_time_ahead_of_ours_is_taken_as_now() -> None:
    """Found in review: a reading from the future widened the register guard and froze the register."""
    assert parse_time("2027-11-29T12:00:00Z", NOW) == NOW
    assert parse_time("2026-11-29T11:59:00Z", NOW) < NOW  # the past is the charger's business
