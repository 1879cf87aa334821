"""OCPP 1.6 status vocabulary of a connector: its ChargePointStatus and ChargePointErrorCode.

Plain strings, no protocol library: the upstream adapter sends them in StatusNotification and
the MQTT bridge shows them beside the gateway's own status, so both say the same thing.
"""

from __future__ import annotations

from gateway.domain.model import ConnectorStatus, Fault, FaultKind

STATUS = {
    ConnectorStatus.AVAILABLE: "Available",
    ConnectorStatus.OCCUPIED: "Preparing",
    ConnectorStatus.CHARGING: "Charging",
    ConnectorStatus.SUSPENDED_EV: "SuspendedEV",
    ConnectorStatus.SUSPENDED_EVSE: "SuspendedEVSE",
    ConnectorStatus.FINISHING: "Finishing",
    ConnectorStatus.UNAVAILABLE: "Unavailable",
    ConnectorStatus.FAULTED: "Faulted",
}

# Fault kind -> OCPP error code, most severe first: when several faults are active the first
# one here decides the StatusNotification (each is still reported once when it is raised).
ERROR_CODE = {
    FaultKind.GROUND_FAULT: "GroundFailure",
    FaultKind.SHORT_CIRCUIT: "OverCurrentFailure",
    FaultKind.OVER_CURRENT: "OverCurrentFailure",
    FaultKind.OVER_TEMPERATURE: "HighTemperature",
    FaultKind.OVER_VOLTAGE: "OverVoltage",
    FaultKind.UNDER_VOLTAGE: "UnderVoltage",
    FaultKind.POWER_SWITCH: "PowerSwitchFailure",
    FaultKind.POWER_METER: "PowerMeterFailure",
    FaultKind.CONNECTOR_LOCK: "ConnectorLockFailure",
    FaultKind.INTERNAL: "InternalError",
    FaultKind.COMMUNICATION_LOST: "OtherError",
    FaultKind.OTHER: "OtherError",
    FaultKind.EV_COMMUNICATION: "EVCommunicationError",
}
SEVERITY = {kind: rank for rank, kind in enumerate(ERROR_CODE)}

# info when the device gave none: says what the error code alone cannot (short circuit vs over-current).
DEFAULT_INFO = {
    FaultKind.SHORT_CIRCUIT: "short circuit",
    FaultKind.OVER_CURRENT: "over-current",
    FaultKind.GROUND_FAULT: "earth fault / residual current",
    FaultKind.POWER_SWITCH: "contactor fault (welded or not closing)",
}

# Connector 0 (the gateway itself) may only be Available, Unavailable or Faulted.
CONNECTOR_ZERO_STATUSES = frozenset({"Available", "Unavailable", "Faulted"})

MAX_TEXT = 50  # vendorErrorCode and info are CiString50 in OCPP 1.6


def primary_fault(faults: tuple[Fault, ...]) -> Fault | None:
    """The fault that decides the error code: the most severe, the first reported among equals."""
    return min(faults, key=lambda fault: SEVERITY[fault.kind], default=None)


def status_notification_fields(connector_id: int, status: ConnectorStatus, faults: tuple[Fault, ...]) -> dict[str, str]:
    """status, errorCode and (when faulted) info / vendorErrorCode of a StatusNotification.

    One table-driven function for every connector, so the CSMS sees the same mapping everywhere.
    """
    ocpp_status = STATUS[status]
    if connector_id == 0 and ocpp_status not in CONNECTOR_ZERO_STATUSES:
        ocpp_status = "Available"
    fields: dict[str, str] = {"status": ocpp_status, "error_code": "NoError"}
    fault = primary_fault(faults)
    if fault is not None:
        fields["error_code"] = ERROR_CODE[fault.kind]
        if fault.vendor_code:
            fields["vendor_error_code"] = fault.vendor_code[:MAX_TEXT]
        fields["info"] = (fault.info or DEFAULT_INFO.get(fault.kind) or fault.kind.value)[:MAX_TEXT]
    return fields


# The other way, for native chargers: what a StatusNotification says, in the gateway's terms.
STATUS_FROM_OCPP = {ocpp: status for status, ocpp in STATUS.items()}
STATUS_FROM_OCPP["Reserved"] = ConnectorStatus.OCCUPIED  # no reservations here: a car is expected
KIND_FROM_ERROR_CODE = {
    "ConnectorLockFailure": FaultKind.CONNECTOR_LOCK,
    "EVCommunicationError": FaultKind.EV_COMMUNICATION,
    "GroundFailure": FaultKind.GROUND_FAULT,
    "HighTemperature": FaultKind.OVER_TEMPERATURE,
    "InternalError": FaultKind.INTERNAL,
    "LocalListConflict": FaultKind.OTHER,
    "OtherError": FaultKind.OTHER,
    "OverCurrentFailure": FaultKind.OVER_CURRENT,
    "OverVoltage": FaultKind.OVER_VOLTAGE,
    "PowerMeterFailure": FaultKind.POWER_METER,
    "PowerSwitchFailure": FaultKind.POWER_SWITCH,
    "ReaderFailure": FaultKind.OTHER,
    "ResetFailure": FaultKind.OTHER,
    "UnderVoltage": FaultKind.UNDER_VOLTAGE,
    "WeakSignal": FaultKind.OTHER,
}


def from_status_notification(
    status: str, error_code: str, info: str = "", vendor_error_code: str = ""
) -> tuple[ConnectorStatus, tuple[Fault, ...]]:
    """A native charger's StatusNotification as the gateway's status and faults (NoError: none)."""
    kind = KIND_FROM_ERROR_CODE.get(error_code)
    faults = (Fault(kind, vendor_code=vendor_error_code or error_code, info=info),) if kind is not None else ()
    return STATUS_FROM_OCPP.get(status, ConnectorStatus.UNAVAILABLE), faults
