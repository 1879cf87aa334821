"""How a simulated charger reacts to its master, read from the profile: limit, enable, watchdog.

``ChargerBehaviour`` is the small state machine behind ``ModbusSimulator``'s charger API. Per
socket it knows whether a vehicle is plugged in, how much power the vehicle wants, the current
limit and enable the master wrote, and whether the watchdog has run out. ``apply`` turns that into
registers: the vehicle state is C while the car wants power and the charger may give it, B
otherwise; power is capped at the offered current; the offered current is the master's limit, or
the profile's ``[watchdog] safe_current_a`` once the master has stopped feeding the watchdog for
its timeout (armed by the first feed, so a charger nobody talks to keeps its own setting).

That car follows a new offer at once. A vehicle model (``adapters.modbus.site_physics``) may
instead say what the car draws per phase (``draw``): the charger then shows that, so a car can
take a while to follow its offer, or take less than offered, or draw on one phase only.

Nothing is device-specific: which register is the limit, what "on" means and how long the
watchdog waits all come from ``[writes]`` and ``[watchdog]``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pymodbus.constants import ExcCodes

from adapters.modbus.codec import TYPES, decode_raw, encode_raw, to_quantity
from adapters.modbus.layout import DeviceMap, Location, RegisterImage
from adapters.modbus.profile import CurrentLimitWrite, RegisterSpec, WriteTarget
from gateway.domain.model import VehicleState

log = logging.getLogger(__name__)

NOMINAL_VOLTAGE_V = 230.0  # for power <-> current when the profile has no voltage
SetRole = Callable[[str, object, int], None]
GetRole = Callable[[str, int], object]


@dataclass(slots=True)
class SocketState:
    """What one simulated socket is doing; counters are for tests (``feeds``, ``expiries``)."""

    plugged: bool = False
    demand_w: float = 0.0  # what the vehicle would draw if allowed
    limit_a: float | None = None  # the master's limit; None = never written
    enabled: bool = True
    fallback: bool = False  # the watchdog ran out: the charger applies its safe current
    base_offered_a: float | None = None  # offered current before any master limit (profile's initial value)
    # what the car draws per phase, from a vehicle model; None: the car follows the offer at once
    drawn_a: tuple[float, ...] | None = None
    # tripped by a fault of its own (it overheated): the contactor is open, nothing flows
    tripped: bool = False
    timer: asyncio.TimerHandle | None = None
    feeds: int = 0
    expiries: int = 0


class ChargerBehaviour:
    """The charger side of a simulator: reacts to master writes and keeps registers consistent."""

    def __init__(
        self,
        device_map: DeviceMap,
        image: RegisterImage,
        set_role: SetRole,
        get_role: GetRole,
        changed: Callable[[], None],
    ) -> None:
        self._map = device_map
        self._profile = device_map.profile
        self._image = image
        self._set, self._get, self._changed = set_role, get_role, changed
        self.sockets = {s: SocketState() for s in range(1, device_map.sockets + 1)}

    # --- the simulator's API ---

    def reset(self, socket: int) -> None:
        """Power-on: nothing plugged, no master commands; read the base offered current and enable."""
        old = self.sockets[socket]
        if old.timer is not None:
            old.timer.cancel()
        state = self.sockets[socket] = SocketState()
        offered = self._get("offered_current_a", socket) if "offered_current_a" in self._profile.values else None
        state.base_offered_a = float(offered) if isinstance(offered, int | float) else None
        enabled = self._get("charging_enabled", socket)
        state.enabled = enabled is not False
        dog = self._profile.watchdog
        if dog is not None and dog.timeout_register is not None and dog.timeout_s is not None:
            reg = dog.timeout_register
            loc = self._map.locations(reg, socket)[0]
            raw = dog.timeout_s / (reg.scale * 10**reg.exponent)
            self._image.put(loc.unit_id, loc.table, loc.address, encode_raw(reg, raw if _is_float(reg) else round(raw)))

    def plug_in(self, socket: int) -> None:
        self.sockets[socket].plugged = True
        self.sockets[socket].demand_w = 0.0
        self.apply(socket)

    def start_charging(self, power_w: float, socket: int) -> None:
        state = self.sockets[socket]
        state.plugged, state.demand_w = True, float(power_w)
        self.apply(socket)

    def stop_charging(self, socket: int) -> None:
        self.sockets[socket].demand_w = 0.0
        self.apply(socket)

    def draw(self, currents_a: Sequence[float] | None, socket: int) -> None:
        """The car draws ``currents_a`` per phase now (a vehicle model decides; None: it follows the
        offer at once again). What it draws is shown whether or not the charger allows it: a car
        needs a moment to follow a cut or a pause."""
        self.sockets[socket].drawn_a = None if currents_a is None else tuple(float(a) for a in currents_a)
        self.apply(socket)

    def unplug(self, socket: int) -> None:
        state = self.sockets[socket]
        state.plugged, state.demand_w = False, 0.0
        self.apply(socket)

    def trip(self, socket: int, tripped: bool = True) -> None:
        """The charger stops delivering for a fault of its own (over-temperature) and, with
        ``tripped`` False, resumes: its contactor opens at once, whatever the car wanted."""
        self.sockets[socket].tripped = tripped
        self.apply(socket)

    def offered_a(self, socket: int) -> float | None:
        """The current the charger offers now (A): safe current after a watchdog expiry, else the limit."""
        state = self.sockets[socket]
        if state.fallback:
            return self._profile.watchdog.safe_current_a if self._profile.watchdog else 0.0
        return state.limit_a if state.limit_a is not None else state.base_offered_a

    def allowed(self, socket: int) -> bool:
        """May the vehicle charge: enabled, and offered at least the minimum current (6 A)?"""
        limit = self._profile.writes.current_limit
        offered = self.offered_a(socket)
        minimum = limit.min_a if limit is not None else 0.0
        state = self.sockets[socket]
        return state.enabled and not state.tripped and (offered is None or offered >= minimum)

    def apply(self, socket: int) -> None:
        """Write state, power, currents, offered current and enable flag for ``socket``."""
        state = self.sockets[socket]
        offered = self.offered_a(socket)
        phases = self._phases()
        volts = self._volts(socket, phases)
        if state.drawn_a is not None:  # a vehicle model says what the car draws (nothing through an open contactor)
            flowing = state.plugged and not state.tripped
            currents = ([*state.drawn_a, *[0.0] * phases] if flowing else [0.0] * phases)[:phases]
            power = sum(a * v for a, v in zip(currents, volts, strict=True))
            charging = power > 0
        else:
            charging = state.plugged and state.demand_w > 0 and self.allowed(socket)
            power = state.demand_w if charging else 0.0
            if charging and offered is not None:
                power = min(power, offered * sum(volts))
            currents = [power / phases / v for v in volts]
        vehicle = VehicleState.C if charging else VehicleState.B if state.plugged else VehicleState.A
        self._set("vehicle_state", vehicle, socket)
        if "power_w" in self._profile.values:
            self._set("power_w", power, socket)
        if "current_a" in self._profile.values:
            self._set("current_a", currents, socket)
        if "offered_current_a" in self._profile.values and offered is not None:
            self._set("offered_current_a", offered, socket)
        if "charging_enabled" in self._profile.values and self._profile.writes.enable is not None:
            self._set("charging_enabled", self.allowed(socket), socket)
        self._changed()

    # --- master writes ---

    def check_write(self, unit_id: int, table: str, address: int, values: Sequence[int | bool]) -> ExcCodes | None:
        """Refuse what the charger could not take: a limit above max_a, half a multi-register value."""
        limit = self._profile.writes.current_limit
        for target in (limit, self._profile.writes.enable, self._profile.watchdog):
            if target is None or target.table is None or target.address is None:
                continue
            spec = target.register()
            for socket in self.sockets:
                loc = self._map.locations(spec, socket)[0]
                inside = _overlap(loc, unit_id, table, address, len(values))
                if not inside:
                    continue
                if loc.address < address or address + len(values) < loc.address + loc.width:
                    return ExcCodes.ILLEGAL_VALUE  # multi-register values must be written in one request
                if target is limit:
                    words = [int(v) for v in values[loc.address - address : loc.address - address + loc.width]]
                    amps = self._amps(limit, words)
                    if amps is None or amps < 0 or amps > limit.max_a + 1e-6:
                        return ExcCodes.ILLEGAL_VALUE
        return None

    def after_write(self, unit_id: int, table: str, address: int, count: int) -> None:
        """The master wrote ``count`` registers (or bits): apply limit, enable and watchdog feeds."""
        w, dog = self._profile.writes, self._profile.watchdog
        for socket, state in self.sockets.items():
            touched = False
            if w.current_limit is not None and self._hits(w.current_limit, socket, unit_id, table, address, count):
                state.limit_a = self._amps(w.current_limit, self._words(w.current_limit, socket))
                touched = True
                if dog is not None and dog.value == "current_limit":
                    self._feed(socket)
            enable = w.enable
            if (
                enable is not None
                and enable.table is not None
                and self._hits(enable, socket, unit_id, table, address, count)
            ):
                raw = decode_raw(enable.register(), self._words(enable, socket))
                if raw in (enable.on, enable.off):
                    state.enabled = raw == enable.on
                    touched = True
            if dog is not None and dog.table is not None and self._hits(dog, socket, unit_id, table, address, count):
                self._feed(socket)
            if touched:
                self.apply(socket)
        self._changed()

    # --- watchdog ---

    def timeout_s(self, socket: int) -> float | None:
        """How long the charger waits for the next feed (s), from its timeout register or the profile."""
        dog = self._profile.watchdog
        if dog is None:
            return None
        if dog.timeout_register is not None:
            reg = dog.timeout_register
            raw = decode_raw(reg, self._image.words(self._map.locations(reg, socket)[0]))
            seconds = to_quantity(reg, raw) if isinstance(raw, int | float) else None
            if seconds is not None and seconds > 0:
                return seconds
        return dog.timeout_s

    def _feed(self, socket: int) -> None:
        state = self.sockets[socket]
        state.feeds += 1
        if state.timer is not None:
            state.timer.cancel()
        if state.fallback:
            state.fallback = False
            self.apply(socket)
        timeout = self.timeout_s(socket)
        if timeout is not None:
            state.timer = asyncio.get_running_loop().call_later(timeout, self._expire, socket)

    def _expire(self, socket: int) -> None:
        state = self.sockets[socket]
        state.timer, state.fallback = None, True
        state.expiries += 1
        log.debug("simulator %s: watchdog of socket %d ran out: safe current", self._profile.id, socket)
        self.apply(socket)

    # --- helpers ---

    def _hits(self, target: WriteTarget, socket: int, unit_id: int, table: str, address: int, count: int) -> bool:
        return _overlap(self._map.locations(target.register(), socket)[0], unit_id, table, address, count)

    def _words(self, target: WriteTarget, socket: int) -> list[int]:
        return self._image.words(self._map.locations(target.register(), socket)[0])

    @staticmethod
    def _amps(limit: CurrentLimitWrite, words: list[int]) -> float | None:
        """A current-limit register's words in amperes (``off_value`` reads as 0 A)."""
        raw = decode_raw(limit.register(), words)
        if not isinstance(raw, int | float):
            return None
        if limit.off == "zero" and raw == limit.off_value:
            return 0.0
        return float(raw) if TYPES[limit.type or "u16"].kind == "float" else raw * (limit.resolution_a or 1.0)

    def _phases(self) -> int:
        spec = self._profile.values.get("current_a")
        return spec.phases if spec is not None else 1

    def _volts(self, socket: int, phases: int) -> list[float]:
        found = self._get("voltage_v", socket)
        phase_volts = found if isinstance(found, tuple) else ()
        volts = [v if isinstance(v, int | float) and v > 0 else NOMINAL_VOLTAGE_V for v in phase_volts]
        return (volts + [NOMINAL_VOLTAGE_V] * phases)[:phases]


def _overlap(loc: Location, unit_id: int, table: str, address: int, count: int) -> bool:
    return (
        loc.unit_id == unit_id
        and loc.table == table
        and address < loc.address + loc.width
        and loc.address < address + count
    )


def _is_float(spec: RegisterSpec) -> bool:
    return TYPES[spec.type or "u16"].kind == "float"
