"""``ocpp-gateway probe``: which profile fits the device at this address?

An installer knows where a device is (an IP address, a serial port) but not always what it is or
which unit id it answers on. ``probe`` tries every profile's identification reads
(``identify.identify``) at the profile's default unit id (or the one given), prints the profiles
that fit with a few decoded values, and a ``config.toml`` block to paste.

It has to be quick, so each request waits ``timeout_s`` (0.5 s) and a unit id that stayed
silent is not asked again: on an RS-485 bus a missing station never answers, and waiting for
it once per profile would take minutes. On a serial port each profile is tried with its own
usual line settings unless the installer gave them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from adapters.modbus import bus
from adapters.modbus.identify import IdentifyResult, identify
from adapters.modbus.profile import ROLES, Profile, Table
from adapters.modbus.transport import ModbusLine, SerialTransport, TcpTransport, Transport
from gateway.domain.errors import DecodeError, DeviceTimeout, DeviceUnavailable
from gateway.domain.model import VehicleState

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 0.5
SHOWN_ROLES = ("energy_wh", "power_w", "vehicle_state", "session_energy_wh", "voltage_v", "current_a", "soc_percent")
MAX_SHOWN = 5  # a few values are enough to tell a fit from a misfit


@dataclass(frozen=True, slots=True)
class Attempt:
    """One profile tried at one unit id, and what came of it."""

    profile_id: str
    unit_id: int
    transport: Transport
    outcome: str  # "fits", "does not fit", "no answer", "no [identify] section", ...


@dataclass(frozen=True, slots=True)
class Found:
    """A profile that fits, at the transport it was found on."""

    result: IdentifyResult
    transport: Transport


@dataclass(slots=True)
class ProbeReport:
    found: list[Found] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)


async def probe(
    profiles: Sequence[Profile],
    transport_for: Callable[[Profile], Transport],
    *,
    unit_id: int | None = None,
    timeout_s: float = PROBE_TIMEOUT_S,
) -> ProbeReport:
    """Try each profile at ``transport_for(profile)`` and ``unit_id`` (None: the profile's own).

    Raises ``DeviceUnavailable`` when a transport cannot be opened at all (nothing listens, no
    such serial port): that is not "no profile fits", and the caller says so in one line.
    """
    report = ProbeReport()
    by_transport: dict[Transport, list[Profile]] = {}
    for profile in profiles:
        by_transport.setdefault(transport_for(profile), []).append(profile)
    for transport, group in by_transport.items():
        # one line at a time: a serial port opens once, so settings change by closing and reopening
        line = ModbusLine(transport, timeout_s)
        silent: set[int] = set()
        try:
            await line.connect("probe")  # unreachable is one clear error, not "no profile fits"
            for profile in group:
                unit = profile.modbus.unit_id if unit_id is None else unit_id
                if profile.identify is None:
                    outcome = "cannot be recognised (the profile has no [identify] section)"
                elif unit in silent:
                    outcome = "no answer (skipped: this unit id did not answer before)"
                else:
                    outcome, result = await _try(profile, line, unit, silent)
                    if result is not None:
                        report.found.append(Found(result, transport))
                report.attempts.append(Attempt(profile.id, unit, transport, outcome))
        finally:
            line.close()
    return report


async def _try(profile: Profile, line: ModbusLine, unit_id: int, silent: set[int]) -> tuple[str, IdentifyResult | None]:
    """One profile at one unit id: ("fits", result) or (why not, None)."""
    client = await line.connect("probe")  # DeviceUnavailable: the address itself is unreachable
    heard: set[int] = set()
    timed_out: set[int] = set()

    async def read(table: Table, address: int, count: int, unit: int) -> list[int]:
        try:
            values = await bus.read(client, table, address, count, unit, where="probe", timeout_s=line.timeout_s)
        except DeviceTimeout:
            timed_out.add(unit)
            raise
        except DecodeError:
            heard.add(unit)  # an exception answer or garbage: somebody is there
            raise
        heard.add(unit)
        return values

    try:
        result = await identify(profile, read, unit_id=unit_id)
    except DeviceUnavailable as exc:  # the connection dropped (a gateway giving up on timeouts)
        line.close()
        log.debug("probe %s: %s", profile.id, exc)
        return "no answer (the connection dropped)", None
    silent.update(timed_out - heard)
    if result is not None:
        return "fits", result
    if unit_id in timed_out - heard:
        return "no answer", None
    return "does not fit", None


def describe_values(result: IdentifyResult) -> str:
    """A few decoded values in their units, e.g. ``energy 1,234,567 Wh, power 7,321 W, vehicle state C``."""
    shown = []
    for role in SHOWN_ROLES:
        if role not in result.values or result.values[role] is None:
            continue
        value = result.values[role]
        label = role.removesuffix("_wh").removesuffix("_w").removesuffix("_v").removesuffix("_a")
        label = label.removesuffix("_percent").replace("_", " ")
        unit = ROLES[role].unit if role in ROLES else ""
        if isinstance(value, VehicleState):
            text = value.value
        elif isinstance(value, tuple):
            text = " / ".join("-" if v is None else f"{v:,.1f}" for v in value)
        elif isinstance(value, float):
            text = f"{value:,.1f}" if abs(value) < 100 else f"{value:,.0f}"
        else:
            text = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
        shown.append(f"{label} {text}{' ' + unit if unit else ''}")
        if len(shown) == MAX_SHOWN:
            break
    return ", ".join(shown) or "(none readable)"


def config_snippet(found: Found) -> str:
    """A ``[[chargers]]`` or ``[[meters]]`` block for config.toml, valid as pasted (rename and renumber)."""
    result, transport = found.result, found.transport
    profile = result.profile
    lines = [
        f"[[{profile.kind}s]]",
        f"name = {json.dumps(f'{profile.id}-{result.unit_id}')}  # any name, unique on the site",
        f"profile = {json.dumps(profile.id)}",
    ]
    if isinstance(transport, TcpTransport):
        lines += [f"host = {json.dumps(transport.host)}", f"port = {transport.port}"]
        if transport.framer == "rtu":
            lines.append('framer = "rtu"  # RTU frames over TCP (a serial gateway)')
    else:
        lines += [
            f"serial = {json.dumps(transport.device)}",
            f"baudrate = {transport.baudrate}",
            f'parity = "{transport.parity}"',
            f"stopbits = {transport.stopbits}",
            f"bytesize = {transport.bytesize}",
        ]
    lines.append(f"unit_id = {result.unit_id}")
    if profile.kind == "charger":
        numbers = ", ".join(str(n) for n in range(1, profile.sockets + 1))
        lines.append(f"connectors = [{numbers}]  # the site's connector number for each socket")
    else:
        lines.append("# connector = 0  # 0: site meter upstream; N: billing meter of connector N; absent: MQTT only")
    return "\n".join(lines)


def describe_transport(transport: Transport) -> str:
    if isinstance(transport, SerialTransport):
        return f"{transport} (RTU)"
    return str(transport) if transport.framer == "rtu" else f"{transport} (Modbus TCP)"
