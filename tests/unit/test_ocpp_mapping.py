"""The pure domain -> OCPP tables."""

from __future__ import annotations

from datetime import UTC, datetime

from adapters.ocpp_upstream.mapping import meter_value
from gateway.domain.model import ConnectorStatus, Fault, FaultKind, Reading
from gateway.services.ocpp_status import ERROR_CODE, STATUS, status_notification_fields


def test_every_status_and_fault_kind_has_an_ocpp_code() -> None:
    assert set(STATUS) == set(ConnectorStatus)
    assert set(ERROR_CODE) == set(FaultKind)


def test_fault_fields_are_cut_to_50_characters() -> None:
    fields = status_notification_fields(
        1, ConnectorStatus.FAULTED, (Fault(FaultKind.OVER_TEMPERATURE, vendor_code="X" * 80, info="y" * 80),)
    )
    assert fields["status"] == "Faulted"
    assert fields["error_code"] == "HighTemperature"
    assert len(fields["vendor_error_code"]) == 50
    assert len(fields["info"]) == 50


def test_no_fault_means_no_error() -> None:
    assert status_notification_fields(1, ConnectorStatus.CHARGING, ()) == {
        "status": "Charging",
        "error_code": "NoError",
    }


def test_meter_value_units_and_single_phase() -> None:
    reading = Reading(
        datetime(2026, 1, 1, tzinfo=UTC), energy_wh=42, current_a=(16.0,), voltage_v=(None,), soc_percent=55.5
    )
    value = meter_value(
        reading, ["Energy.Active.Import.Register", "Current.Import", "Voltage", "SoC", "Power.Active.Import"]
    )
    assert value is not None
    assert value.timestamp == "2026-01-01T00:00:00.000Z"
    got = [(s.measurand, s.value, s.unit, s.phase) for s in value.sampled_value]
    assert got == [
        ("Energy.Active.Import.Register", "42", "Wh", None),
        ("Current.Import", "16", "A", "L1"),
        ("SoC", "55.5", "Percent", None),
    ]
    assert value.sampled_value[2].location == "EV"


def test_nothing_to_send() -> None:
    assert meter_value(Reading(datetime(2026, 1, 1, tzinfo=UTC)), ["Energy.Active.Import.Register"]) is None
