"""Quantities and states of a charging site, free of any protocol.

Units are in the names: ``energy_wh`` is integer watt-hours read from a device's own register
(never integrated from power), ``power_w`` watts (positive = import: drawn from the grid by the
site or delivered to the car), ``current_a`` amperes, ``voltage_v`` volts.
Times are timezone-aware UTC datetimes taken when a value was measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from gateway.domain.battery import SocValue


def utc_now() -> datetime:
    """The current time in UTC; the default clock of the gateway."""
    return datetime.now(UTC)


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` suffix and millisecond precision, as OCPP and MQTT consumers expect."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class VehicleState(StrEnum):
    """IEC 61851-1 control-pilot state of a connector."""

    A = "A"  # no vehicle
    B = "B"  # vehicle connected, not charging
    C = "C"  # charging
    D = "D"  # charging, ventilation required
    E = "E"  # no power / control pilot short-circuited
    F = "F"  # EVSE error, not available


class FaultKind(StrEnum):
    """What went wrong, in words a site owner understands; mapped to protocol codes by adapters."""

    OVER_TEMPERATURE = "over_temperature"
    OVER_CURRENT = "over_current"
    GROUND_FAULT = "ground_fault"  # earth fault / residual current
    SHORT_CIRCUIT = "short_circuit"
    OVER_VOLTAGE = "over_voltage"
    UNDER_VOLTAGE = "under_voltage"
    POWER_METER = "power_meter"
    POWER_SWITCH = "power_switch"  # contactor / relay
    CONNECTOR_LOCK = "connector_lock"
    EV_COMMUNICATION = "ev_communication"  # control pilot / proximity problems
    COMMUNICATION_LOST = "communication_lost"  # the gateway cannot reach the device
    INTERNAL = "internal"
    OTHER = "other"


# Faults that do not stop the connector: the charger waits for the car (OCPP 1.6 asks for
# SuspendedEVSE with EVCommunicationError rather than Faulted for these).
NON_BLOCKING_FAULTS = frozenset({FaultKind.EV_COMMUNICATION})


@dataclass(frozen=True, slots=True)
class Fault:
    """One active fault; ``vendor_code`` keeps the device's own code for the installer."""

    kind: FaultKind
    vendor_code: str = ""
    info: str = ""

    @property
    def blocks_charging(self) -> bool:
        return self.kind not in NON_BLOCKING_FAULTS


class ConnectorStatus(StrEnum):
    """What a connector is doing, derived from its vehicle state, faults and device health."""

    AVAILABLE = "available"
    OCCUPIED = "occupied"  # taken, no session yet: a car plugged in, or an authorised start waiting for it
    CHARGING = "charging"
    SUSPENDED_EV = "suspended_ev"
    SUSPENDED_EVSE = "suspended_evse"
    FINISHING = "finishing"
    UNAVAILABLE = "unavailable"
    FAULTED = "faulted"


@dataclass(frozen=True, slots=True)
class Reading:
    """Values measured together at ``measured_at``; ``None`` means the source does not have it.

    Per-phase values are tuples (L1, L2, L3) or a 1-tuple for single-phase devices.
    ``energy_wh`` is the lifetime import register (billing grade); ``session_energy_wh`` is a
    charger's per-session counter, shown but never billed from.
    """

    measured_at: datetime
    energy_wh: int | None = None
    energy_export_wh: int | None = None
    session_energy_wh: int | None = None
    power_w: float | None = None
    current_a: tuple[float | None, ...] = ()
    voltage_v: tuple[float | None, ...] = ()
    frequency_hz: float | None = None
    temperature_c: float | None = None
    soc_percent: float | None = None
    offered_current_a: float | None = None

    def values(self) -> dict[str, object]:
        """The measured values without the timestamp, for change detection."""
        return {name: getattr(self, name) for name in self.__slots__ if name != "measured_at"}


@dataclass(frozen=True, slots=True)
class ChargerSnapshot:
    """What one poll of a charger socket found. Produced by device adapters, applied by the Site."""

    device: str
    socket: int
    reading: Reading
    vehicle_state: VehicleState | None = None
    faults: tuple[Fault, ...] = ()
    charging_enabled: bool | None = None
    id_tag: str | None = None  # an RFID card the charger read, while it shows one


@dataclass(frozen=True, slots=True)
class MeterSnapshot:
    """What one poll of an energy meter found (``faults``: e.g. SunSpec event bits)."""

    device: str
    reading: Reading
    faults: tuple[Fault, ...] = ()


@dataclass(frozen=True, slots=True)
class DeviceFailed:
    """A poll of ``device`` failed; ``reason`` is one line for the installer."""

    device: str
    reason: str
    failed_at: datetime


Snapshot = ChargerSnapshot | MeterSnapshot | DeviceFailed


@dataclass(slots=True)
class Connector:
    """The Site's view of one connector (site numbering 1..N)."""

    connector_id: int
    device: str
    socket: int = 1
    vehicle_state: VehicleState | None = None
    device_faults: tuple[Fault, ...] = ()
    device_online: bool | None = None  # None until the first poll
    charging_enabled: bool | None = None  # as the charger reports it
    id_tag: str | None = None  # the card the charger shows now (never logged in full)
    available: bool = True  # operator availability (False: taken out of service)
    session_active: bool = False  # a transaction is running on this connector
    finishing: bool = False  # a transaction ended while the car is still plugged in
    reading: Reading | None = None
    soc: SocValue | None = None  # the best state of charge known (see gateway.domain.battery)
    soc_target_percent: float | None = None  # pause charging once ``soc`` reaches this
    current_ceiling_a: float | None = None  # the site owner's ceiling (MQTT), under any profile limit
    session: SessionInfo | None = None  # the transaction running now
    # False for a passthrough charger's connector: shown on MQTT, never part of the site's charge point
    upstream: bool = True
    max_power_w: float | None = None  # the most it can deliver; None: an AC connector's (see domain.metering)
    status: ConnectorStatus = ConnectorStatus.UNAVAILABLE
    faults: tuple[Fault, ...] = ()  # active faults, as of the last status derivation
    status_since: datetime = field(default_factory=utc_now)


@dataclass(slots=True)
class SessionInfo:
    """The transaction running on a connector: what MQTT and the status page show of it."""

    local_ref: str
    id_tag: str  # shown masked only
    meter_start_wh: int
    started_at: datetime
    transaction_id: int | None = None  # the CSMS's number, once it has answered StartTransaction


@dataclass(slots=True)
class Meter:
    """The Site's view of one energy meter; ``connector_id`` 0 = the whole site, None = MQTT only."""

    name: str
    connector_id: int | None = None
    device_online: bool | None = None
    reading: Reading | None = None
    faults: tuple[Fault, ...] = ()  # what the meter itself reports (not communication loss)
    max_power_w: float | None = None  # None: its connector's ceiling, or a building's (see domain.metering)
