"""What a connector's status is, from what its charger says: pure, table-driven derivations.

Inputs are the IEC 61851 control-pilot state, the charger's own fault codes (already turned into
``Fault`` by the device profile), whether the gateway reaches the device, operator availability,
whether a charging session is under way and whether the charger offers current. The protocol
adapters translate the result (ConnectorStatus + faults) into their own vocabulary.
"""

from __future__ import annotations

from gateway.domain.model import ConnectorStatus, Fault, FaultKind, VehicleState

# Control-pilot states that are faults in themselves.
STATE_FAULTS = {
    VehicleState.E: Fault(FaultKind.INTERNAL, vendor_code="CP-E", info="control pilot state E: no power or CP short"),
    VehicleState.F: Fault(FaultKind.INTERNAL, vendor_code="CP-F", info="control pilot state F: charger not available"),
}
COMM_LOST = Fault(FaultKind.COMMUNICATION_LOST, vendor_code="CommLost", info="the gateway gets no answer")

# With no blocking fault: the status for each vehicle state. B depends on the session (below).
STATE_STATUS = {
    VehicleState.A: ConnectorStatus.AVAILABLE,
    VehicleState.C: ConnectorStatus.CHARGING,
    VehicleState.D: ConnectorStatus.CHARGING,
}

# Vehicle connected, not drawing: (session under way, charger offers current) -> status.
# None for "offers current" means the charger does not tell; then the car is taken to be the one pausing.
PLUGGED_STATUS = {
    (False, True): ConnectorStatus.OCCUPIED,
    (False, False): ConnectorStatus.OCCUPIED,
    (False, None): ConnectorStatus.OCCUPIED,
    (True, True): ConnectorStatus.SUSPENDED_EV,
    (True, None): ConnectorStatus.SUSPENDED_EV,
    (True, False): ConnectorStatus.SUSPENDED_EVSE,
}

MIN_OFFER_A = 6.0  # IEC 61851: below 6 A the charger offers nothing


def derive_faults(
    vehicle_state: VehicleState | None, device_faults: tuple[Fault, ...], device_online: bool | None
) -> tuple[Fault, ...]:
    """All active faults of a connector, device-reported ones first (none known before the first poll).

    A device that does not answer has exactly one fault: what it said last is no longer known.
    """
    if device_online is False:
        return (COMM_LOST,)
    state_fault = STATE_FAULTS.get(vehicle_state) if vehicle_state else None
    return (*device_faults, state_fault) if state_fault else device_faults


def evse_offering(charging_enabled: bool | None, offered_current_a: float | None) -> bool | None:
    """Whether the charger lets the car draw current; None when the charger tells neither."""
    if charging_enabled is False:
        return False
    if offered_current_a is not None:
        return offered_current_a >= MIN_OFFER_A
    return charging_enabled


def derive_status(
    vehicle_state: VehicleState | None,
    faults: tuple[Fault, ...],
    *,
    available: bool = True,
    session_active: bool = False,
    offering: bool | None = None,
    finishing: bool = False,
    awaiting_car: bool = False,
) -> ConnectorStatus:
    """The connector status a driver would see.

    ``session_active``: a transaction is running; ``finishing``: it ended and the car is still
    plugged in (Finishing even while the car still draws: the session is over and the charger has
    been told to stop; the next poll sees it); ``awaiting_car``: a start is authorised (or being
    authorised) and waits for the car, so the connector is taken (OCCUPIED, OCPP's Preparing)
    until the car comes or ConnectionTimeOut gives it back.
    """
    if any(fault.blocks_charging for fault in faults):
        return ConnectorStatus.FAULTED
    if not available:
        return ConnectorStatus.UNAVAILABLE
    if vehicle_state is None:
        return ConnectorStatus.UNAVAILABLE
    if vehicle_state is VehicleState.A:
        return ConnectorStatus.OCCUPIED if awaiting_car else ConnectorStatus.AVAILABLE
    if faults:  # only non-blocking ones (EV communication): the charger holds, waiting for the car
        return ConnectorStatus.SUSPENDED_EVSE
    if finishing and not session_active:
        return ConnectorStatus.FINISHING
    if vehicle_state in STATE_STATUS:
        return STATE_STATUS[vehicle_state]
    return PLUGGED_STATUS[(session_active, offering)]
