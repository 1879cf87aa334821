"""The status and fault table, exhaustively: every vehicle state, availability, session, offer and
fault combination, for connector 0 and a charger connector, against the OCPP 1.6 schema."""

from __future__ import annotations

import itertools

import pytest
from ocpp.charge_point import snake_to_camel_case
from ocpp.messages import Call, _validate_payload

from gateway.domain.model import ConnectorStatus, Fault, FaultKind, VehicleState
from gateway.domain.status import COMM_LOST, derive_faults, derive_status, evse_offering
from gateway.services.ocpp_status import ERROR_CODE, primary_fault, status_notification_fields

STATES: list[VehicleState | None] = [None, *VehicleState]
FAULT_SETS: list[tuple[Fault, ...]] = [
    (),
    *[(Fault(kind, vendor_code=f"V-{kind.value}"),) for kind in FaultKind],
    (Fault(FaultKind.OVER_TEMPERATURE, info="derating"), Fault(FaultKind.GROUND_FAULT, vendor_code="RCD")),
    (Fault(FaultKind.EV_COMMUNICATION), Fault(FaultKind.OVER_CURRENT, info="x" * 80, vendor_code="y" * 80)),
]
CASES = list(
    itertools.product(STATES, FAULT_SETS, [True, False], [True, False], [True, False, None], [None, True, False])
)


def schema_valid(connector_id: int, fields: dict[str, str]) -> None:
    payload = snake_to_camel_case({"connector_id": connector_id, "timestamp": "2026-01-01T00:00:00Z", **fields})
    _validate_payload(Call("1", "StatusNotification", payload), "1.6")  # raises on a schema violation


@pytest.mark.parametrize(("state", "device_faults", "available", "session", "offering", "online"), CASES)
def test_every_combination_is_valid_and_consistent(
    state: VehicleState | None,
    device_faults: tuple[Fault, ...],
    available: bool,
    session: bool,
    offering: bool | None,
    online: bool | None,
) -> None:
    faults = derive_faults(state, device_faults, online)
    status = derive_status(state, faults, available=available, session_active=session, offering=offering)
    blocking = [f for f in faults if f.blocks_charging]
    for connector_id in (0, 1):
        fields = status_notification_fields(connector_id, status, faults)
        schema_valid(connector_id, fields)
        assert len(fields.get("info", "")) <= 50 and len(fields.get("vendor_error_code", "")) <= 50
        if connector_id == 0:
            assert fields["status"] in ("Available", "Unavailable", "Faulted")
        if not faults:
            assert fields["error_code"] == "NoError"
        else:
            assert fields["error_code"] == ERROR_CODE[primary_fault(faults).kind]  # type: ignore[union-attr]
    if online is False:
        assert faults == (COMM_LOST,) and status is ConnectorStatus.FAULTED
    elif blocking or state in (VehicleState.E, VehicleState.F):
        assert status is ConnectorStatus.FAULTED
    elif not available or state is None:
        assert status is ConnectorStatus.UNAVAILABLE
    elif state is VehicleState.A:
        assert status is ConnectorStatus.AVAILABLE
    elif faults:  # EV communication only
        assert status is ConnectorStatus.SUSPENDED_EVSE
    elif state in (VehicleState.C, VehicleState.D):
        assert status is ConnectorStatus.CHARGING
    elif not session:
        assert status is ConnectorStatus.OCCUPIED
    else:
        assert status is (ConnectorStatus.SUSPENDED_EVSE if offering is False else ConnectorStatus.SUSPENDED_EV)


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        (FaultKind.OVER_TEMPERATURE, "HighTemperature"),
        (FaultKind.GROUND_FAULT, "GroundFailure"),
        (FaultKind.OVER_CURRENT, "OverCurrentFailure"),
        (FaultKind.SHORT_CIRCUIT, "OverCurrentFailure"),
        (FaultKind.OVER_VOLTAGE, "OverVoltage"),
        (FaultKind.UNDER_VOLTAGE, "UnderVoltage"),
        (FaultKind.POWER_METER, "PowerMeterFailure"),
        (FaultKind.POWER_SWITCH, "PowerSwitchFailure"),
        (FaultKind.CONNECTOR_LOCK, "ConnectorLockFailure"),
        (FaultKind.EV_COMMUNICATION, "EVCommunicationError"),
        (FaultKind.COMMUNICATION_LOST, "OtherError"),
        (FaultKind.INTERNAL, "InternalError"),
        (FaultKind.OTHER, "OtherError"),
    ],
)
def test_fault_codes(kind: FaultKind, code: str) -> None:
    assert status_notification_fields(1, ConnectorStatus.FAULTED, (Fault(kind),))["error_code"] == code


def test_short_circuit_says_so_in_info() -> None:
    fields = status_notification_fields(1, ConnectorStatus.FAULTED, (Fault(FaultKind.SHORT_CIRCUIT, vendor_code="9"),))
    assert fields == {
        "status": "Faulted",
        "error_code": "OverCurrentFailure",
        "vendor_error_code": "9",
        "info": "short circuit",
    }


def test_comm_lost_has_a_vendor_code() -> None:
    fields = status_notification_fields(2, ConnectorStatus.FAULTED, (COMM_LOST,))
    assert fields["error_code"] == "OtherError" and fields["vendor_error_code"] == "CommLost"


def test_most_severe_fault_decides() -> None:
    hot = Fault(FaultKind.OVER_TEMPERATURE)
    earth = Fault(FaultKind.GROUND_FAULT)
    assert primary_fault((hot, earth)) == earth
    assert primary_fault(()) is None


@pytest.mark.parametrize(
    ("enabled", "offered", "expected"),
    [
        (False, 16.0, False),
        (True, 16.0, True),
        (True, 5.9, False),
        (None, 6.0, True),
        (True, None, True),
        (None, None, None),
    ],
)
def test_evse_offering(enabled: bool | None, offered: float | None, expected: bool | None) -> None:
    assert evse_offering(enabled, offered) is expected


def test_state_e_and_f_are_faults_with_vendor_codes() -> None:
    assert derive_faults(VehicleState.E, (), True)[0].vendor_code == "CP-E"
    assert derive_faults(VehicleState.F, (), True)[0].vendor_code == "CP-F"
    assert derive_faults(None, (), None) == ()
