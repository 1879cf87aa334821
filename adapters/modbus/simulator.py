"""A Modbus TCP server that behaves like the device a profile describes, for tests and the demo.

Built from the same profile as the engine, so a profile that cannot be simulated is not finished.
Nothing here is device-specific: states, faults and units all come from the profile's maps.

The simulator's ``RegisterImage`` is the device's memory and outlives the server, so ``stop()``
then ``start()`` on the same port looks to a master like a device that dropped off the network
and came back with its values. pymodbus' ``SimDevice`` serves the whole address span of each
table (gaps included, so bridged reads work); its ``action`` hook copies the image into the
served registers before every read and records every master write back into the image.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket as net  # "socket" is a charging socket everywhere else in this module
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from adapters.modbus.codec import encode_raw
from adapters.modbus.conditions import satisfying_raw
from adapters.modbus.layout import DeviceMap, Location, RegisterImage, RoleValue
from adapters.modbus.profile import BIT_TABLES, Profile, Table, load_profile
from adapters.modbus.sim_charger import ChargerBehaviour, SocketState
from adapters.modbus.sim_faults import SimFaults
from gateway.domain.model import Fault, FaultKind, VehicleState

log = logging.getLogger(__name__)

_TABLE_OF_FUNCTION = {
    1: "coil",
    5: "coil",
    15: "coil",
    2: "discrete",
    4: "input",
    3: "holding",
    6: "holding",
    16: "holding",
    22: "holding",
    23: "holding",
}
_ENERGY_ROLES = ("energy_wh", "energy_export_wh", "session_energy_wh")
ARRIVAL_SOC_PERCENT = 30.0  # what a simulated car reports when it plugs in: a plausible start, not 0
BATTERY_WH = 60_000.0  # a simulated car's battery: its SoC rises by the energy charged into it


@dataclass(frozen=True, slots=True)
class SimRequest:
    """One request the simulator received (for tests that count reads, and for the demo's log)."""

    unit_id: int
    function_code: int
    address: int
    count: int

    @property
    def table(self) -> str:
        return _TABLE_OF_FUNCTION.get(self.function_code, "?")

    @property
    def is_read(self) -> bool:
        return self.function_code in (1, 2, 3, 4)


class ModbusSimulator:
    """The device of ``profile`` on a loopback Modbus TCP server, with a small state model.

    Values are set and read in their role's unit (``set("energy_wh", 123456)``) and pass through
    the profile's inverse scale and encoding, so the engine reads back what a real device would show.
    """

    def __init__(self, profile: Profile | str, *, unit_id: int | None = None, sockets: int = 1) -> None:
        self.profile = load_profile(profile) if isinstance(profile, str) else profile
        self._map = DeviceMap(self.profile, unit_id=unit_id, sockets=sockets)
        self._image = RegisterImage()
        self._energy: dict[tuple[int, str], float] = {}  # exact counters, so tick() keeps fractions of Wh
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._answering = asyncio.Event()
        self._answering.set()
        self.answer_with_exception = False  # True: every request gets "device failure" back
        self.requests: deque[SimRequest] = deque(maxlen=10_000)
        self.host = "127.0.0.1"
        self.port = 0
        self.serial: str | None = None  # the serial port of start_serial()
        self._refused: set[Location] = set()  # reads touching these answer "illegal address"
        self._soc: dict[int, float] = {}  # exact SoC of the car on each socket that reports one
        self._changed = asyncio.Event()  # set on every master write, watchdog expiry and state change
        self._faults = SimFaults(self.profile, self._map, self._image)
        self._charger = ChargerBehaviour(self._map, self._image, self.set, self.get, self._changed.set)
        for socket in self._sockets:
            self._reset(socket)

    # --- server ---

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(
        self, host: str = "127.0.0.1", port: int | None = None, *, framer: Literal["tcp", "rtu"] = "tcp"
    ) -> None:
        """Listen on ``host:port`` (default: the port of the previous start, else any free port).

        ``framer="rtu"``: answer RTU frames over TCP, as a device behind a serial gateway does.
        Raises ``OSError`` if the address cannot be bound.
        """
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        port = self.port if port is None else port
        with net.socket(net.AF_INET6 if ":" in host else net.AF_INET) as probe:
            # pymodbus only logs a failed bind; binding once here raises the real OSError (port in use...)
            probe.setsockopt(net.SOL_SOCKET, net.SO_REUSEADDR, 1)
            probe.bind((host, port))
        server = ModbusTcpServer(
            self._sim_devices(),
            address=(host, port),
            framer=FramerType.RTU if framer == "rtu" else FramerType.SOCKET,
            trace_pdu=self._trace,
        )
        await server.serve_forever(background=True)
        self._server, self.host = server, host
        self.port = server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        log.debug("simulator %s listening on %s:%d", self.profile.id, host, self.port)

    async def start_serial(
        self,
        device: str,
        *,
        baudrate: int = 9600,
        parity: Literal["N", "E", "O"] = "N",
        stopbits: int = 1,
        bytesize: int = 8,
        bus_with: Sequence[ModbusSimulator] = (),
    ) -> None:
        """Answer Modbus RTU on the serial port ``device`` (in tests: one end of a socat pty pair).

        ``bus_with`` are other simulators on the same RS-485 bus: they need their own unit ids,
        this simulator's server answers for them too, and ``stop()`` on this one ends the bus.
        Raises ``OSError`` if the port cannot be opened, ``ValueError`` on a unit id clash.
        """
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        owners: dict[int, ModbusSimulator] = {}
        devices: list[SimDevice] = []
        for sim in (self, *bus_with):
            for sim_device in sim._sim_devices():
                if sim_device.id in owners:
                    raise ValueError(f"unit id {sim_device.id} is on the bus twice ({sim.profile.id})")
                owners[sim_device.id] = sim
                devices.append(sim_device)

        def trace(sending: bool, pdu: ModbusPDU) -> ModbusPDU:
            return owners.get(pdu.dev_id, self)._trace(sending, pdu)

        server = ModbusSerialServer(
            devices,
            framer=FramerType.RTU,
            port=device,
            baudrate=baudrate,
            parity=parity,
            stopbits=stopbits,
            bytesize=bytesize,
            trace_pdu=trace,
        )
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:  # pymodbus logs the OSError and raises this instead
            raise OSError(f"cannot open serial port {device}") from exc
        self._server, self.serial = server, device
        log.debug("simulator %s answering RTU on %s", self.profile.id, device)

    async def stop(self) -> None:
        """Close the listener and every master connection; the device memory is kept."""
        server, self._server = self._server, None
        if server is not None:
            self._answering.set()  # release requests held by stall()
            await server.shutdown()
            await asyncio.sleep(0)  # let the transports close before a restart binds the port again

    async def __aenter__(self) -> ModbusSimulator:
        await self.start(self.host, self.port)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    def stall(self) -> None:
        """Stop answering (requests wait, so masters time out) until ``resume()``."""
        self._answering.clear()

    def resume(self) -> None:
        self._answering.set()

    # --- state model ---

    def set(self, role: str, value: object, socket: int = 1) -> None:
        """Set a role in its unit: a number, one per phase, a state letter, a flag, or None (n/a)."""
        if role in _ENERGY_ROLES and value is not None:
            self._energy[(socket, role)] = float(value)  # type: ignore[arg-type]
        if role == "soc_percent":  # the exact SoC, so tick() keeps fractions of a percent
            if isinstance(value, int | float):
                self._soc[socket] = float(value)
            else:
                self._soc.pop(socket, None)
        self._map.write_role(self._image, role, value, socket)
        self._changed.set()

    def get(self, role: str, socket: int = 1) -> RoleValue:
        """What the engine would decode for ``role`` now (None if the profile does not map it)."""
        return self._map.read_role(self._image, role, socket)

    def faults(self, socket: int = 1) -> list[Fault]:
        """The faults the registers show now."""
        return self._faults.shown(socket)

    def plug_in(self, socket: int = 1, soc_percent: float | None = ARRIVAL_SOC_PERCENT) -> None:
        """A vehicle is connected (state B); the session counter starts again.

        The vehicle reports ``soc_percent`` (None: a car that reports none) where the profile maps
        a SoC; it rises while the car charges (``tick``) and is unknown again once it leaves.
        """
        self._set_if_mapped("session_energy_wh", 0, socket)
        self._set_soc(soc_percent, socket)
        self._charger.plug_in(socket)

    def start_charging(self, power_w: float, socket: int = 1) -> None:
        """The vehicle wants ``power_w`` (W), spread evenly over the profile's phases.

        It gets it (state C) while the master allows charging; power is capped at the offered
        current (A) times the phase voltages. Disabled, or offered less than ``min_a``: state B.
        """
        self._charger.start_charging(power_w, socket)

    def stop_charging(self, socket: int = 1) -> None:
        """The vehicle stays plugged in but draws nothing (state B)."""
        self._charger.stop_charging(socket)

    def unplug(self, socket: int = 1) -> None:
        """The vehicle leaves (state A); its SoC is unknown again."""
        self._charger.unplug(socket)
        self._set_soc(None, socket)

    def draw(self, currents_a: Sequence[float] | None, socket: int = 1) -> None:
        """The car draws ``currents_a`` (A) per phase now, whatever the charger offers: a vehicle
        model (``adapters.modbus.site_physics``) drives it. None: it follows the offer at once again."""
        self._charger.draw(currents_a, socket)

    def may_charge(self, socket: int = 1) -> bool:
        """Does the charger let a car charge now: enabled, and offering at least the profile's ``min_a``?"""
        return self._charger.allowed(socket)

    def offered_current_a(self, socket: int = 1) -> float | None:
        """The current the charger offers now (A): the master's limit, or its safe current after a
        watchdog expiry; None while neither the master nor the profile's initial values set one."""
        return self._charger.offered_a(socket)

    def charger_state(self, socket: int = 1) -> SocketState:
        """The charger model of ``socket``: master limit/enable, watchdog ``feeds`` and ``expiries``."""
        return self._charger.sockets[socket]

    def watchdog_timeout_s(self, socket: int = 1) -> float | None:
        """How long (s) the charger waits for a watchdog feed, from its timeout register or the profile."""
        return self._charger.timeout_s(socket)

    def set_scale_factor(self, name: str, exponent: int, socket: int = 1) -> None:
        """Change ``[scale_factors.<name>]``; values already stored keep their raw words (as a device's would)."""
        self._map.write_scale_factor(self._image, name, exponent, socket)

    def scale_factor(self, name: str, socket: int = 1) -> int | None:
        return self._map.scale_factor(self._image, name, socket)

    def refuse(self, name: str, refused: bool = True, socket: int = 1) -> None:
        """Test hook: reads touching value (role) or fault source ``name`` answer "illegal address".

        ``refused=False`` answers them again.
        """
        spec = self.profile.values.get(name) or self.profile.faults.get(name) or self.profile.scale_factors.get(name)
        if spec is None:
            raise KeyError(f"profile '{self.profile.id}' maps no value, fault or scale factor '{name}'")
        locations = set(self._map.locations(spec, socket))
        self._refused = self._refused | locations if refused else self._refused - locations

    async def wait_for(self, condition: Callable[[], bool], timeout_s: float = 3.0) -> None:
        """Wait until ``condition()`` holds, checked after every change; TimeoutError after ``timeout_s``."""
        async with asyncio.timeout(timeout_s):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    def raise_fault(self, kind_or_code: FaultKind | str | int, socket: int = 1) -> None:
        """Show a fault: a ``FaultKind`` (the first code the profile maps to it) or a raw vendor code."""
        self._faults.show(kind_or_code, socket)

    def trip(self, tripped: bool = True, socket: int = 1) -> None:
        """Stop delivering current (a fault of the charger's own), or resume with ``tripped`` False."""
        self._charger.trip(socket, tripped)

    def clear_faults(self, socket: int = 1) -> None:
        """Every fault source shows "no fault" (its first ``none`` code, or all bits clear)."""
        self._faults.clear(socket)

    def tick(self, seconds: float) -> None:
        """Let ``seconds`` pass: energy counters grow by power x time (import or export by sign)."""
        for socket in self._sockets:
            power = self.get("power_w", socket)
            if not isinstance(power, float | int) or power == 0:
                continue
            energy_wh = abs(float(power)) * seconds / 3600.0
            roles = ("energy_wh", "session_energy_wh") if power > 0 else ("energy_export_wh",)
            for role in roles:
                if role in self.profile.values:
                    start = self._energy.get((socket, role))
                    if start is None:  # registers written raw: continue from what they show
                        shown = self.get(role, socket)
                        start = float(shown) if isinstance(shown, int | float) else 0.0
                    self.set(role, start + energy_wh, socket)
            soc = self._soc.get(socket)
            if power > 0 and soc is not None:
                self._set_soc(min(100.0, soc + energy_wh / BATTERY_WH * 100.0), socket)

    def write_registers(
        self, table: Table, address: int, values: list[int] | list[bool], unit_id: int | None = None
    ) -> None:
        """Put raw words (or bits) into the device memory, e.g. to reproduce a vendor quirk in a test."""
        self._image.put(self._map.unit_for(1) if unit_id is None else unit_id, table, address, values)

    def read_registers(self, table: Table, address: int, count: int = 1, unit_id: int | None = None) -> list[int]:
        """Raw words (or bits as 0/1) of the device memory, e.g. to check what a master wrote."""
        return self._image.get(self._map.unit_for(1) if unit_id is None else unit_id, table, address, count)

    # --- internals ---

    @property
    def _sockets(self) -> range:
        return range(1, self._map.sockets + 1)

    def _reset(self, socket: int) -> None:
        """Power-on state: scale factors, what ``[identify]`` expects, no vehicle, no fault, zeros,
        then the profile's [simulator] initial values."""
        for name in self.profile.scale_factors:
            self.set_scale_factor(name, self.profile.simulator.scale_factors.get(name, 0), socket)
        for match in self.profile.identify.match if self.profile.identify else []:
            for loc in self._map.locations(match, socket):
                words = encode_raw(match, satisfying_raw(match), self._image.words(loc))
                self._image.put(loc.unit_id, loc.table, loc.address, words)
        self.clear_faults(socket)
        if "vehicle_state" in self.profile.values:
            self.set("vehicle_state", VehicleState.A, socket)
        for role, value in self.profile.simulator.initial.items():
            self.set(role, value, socket)
        if "soc_percent" not in self.profile.simulator.initial:
            self._set_soc(None, socket)  # no vehicle: no SoC
        self._charger.reset(socket)

    def _set_soc(self, percent: float | None, socket: int) -> None:
        """Show the car's SoC, or "unknown" the way the profile declares it (``valid_when``, a
        sentinel); a register that cannot say "unknown" shows 0, as such a device would."""
        spec = self.profile.values.get("soc_percent")
        if spec is None:
            return
        unknown_shown = bool(spec.valid_when or spec.sentinel or spec.type in ("f32", "f64"))
        self.set("soc_percent", percent if percent is not None or unknown_shown else 0, socket)
        if percent is None:
            self._soc.pop(socket, None)  # a 0 shown for "unknown" is no SoC to charge from

    def _set_if_mapped(self, role: str, value: object, socket: int) -> None:
        if role in self.profile.values:
            self.set(role, value, socket)

    def _sim_devices(self) -> list[SimDevice]:
        """One SimDevice per unit id, each table filled over its whole span min..max address."""
        spans: dict[tuple[int, Table], tuple[int, int]] = {}
        for loc in self._map.served_locations():
            lo, hi = spans.get((loc.unit_id, loc.table), (loc.address, loc.address + loc.width - 1))
            spans[(loc.unit_id, loc.table)] = (min(lo, loc.address), max(hi, loc.address + loc.width - 1))
        devices = []
        for unit_id in sorted({unit for unit, _ in spans}):
            tables: list[list[SimData]] = []
            for table in ("coil", "discrete", "holding", "input"):
                span = spans.get((unit_id, table))
                bits = table in BIT_TABLES
                if span is None:  # SimDevice needs every table; an unused one answers "illegal address"
                    tables.append([SimData(0, datatype=DataType.BITS if bits else DataType.INVALID)])
                    continue
                size = span[1] - span[0] + 1
                values = [False] * size if bits else [0] * size
                tables.append([SimData(span[0], values=values, datatype=DataType.BITS if bits else DataType.REGISTERS)])
            action = functools.partial(self._on_access, unit_id)
            devices.append(SimDevice(unit_id, simdata=(tables[0], tables[1], tables[2], tables[3]), action=action))
        return devices

    async def _on_access(
        self,
        unit_id: int,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus' hook: serve reads from the image, record writes into it (the charger reacts)."""
        await self._answering.wait()
        if self.answer_with_exception:
            return ExcCodes.DEVICE_FAILURE
        table = _TABLE_OF_FUNCTION[function_code]
        if set_values is not None:
            refused = self._charger.check_write(unit_id, table, address, set_values)
            if refused is not None:
                return refused
            self._image.put(unit_id, table, address, set_values)
            log.debug("simulator %s: master wrote %s %d = %s", self.profile.id, table, address, set_values)
            self._charger.after_write(unit_id, table, address, len(set_values))
            return None
        end = address + count * 16 if table in BIT_TABLES else address + count  # bit reads: count in registers
        if any(_touches(loc, unit_id, table, address, end) for loc in self._refused):
            return ExcCodes.ILLEGAL_ADDRESS
        if table in BIT_TABLES:
            # bit blocks are packed 16 to a register; ``start_address`` and ``count`` are in registers
            first = address // 16 - start_address
            for reg in range(first, first + count):
                bits = self._image.get(unit_id, table, (start_address + reg) * 16, 16)
                registers[reg] = sum(bit << i for i, bit in enumerate(bits))
        else:
            offset = address - start_address
            registers[offset : offset + count] = self._image.get(unit_id, table, address, count)
        return None

    def _trace(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.requests.append(SimRequest(pdu.dev_id, pdu.function_code, pdu.address, pdu.count))
        return pdu


def _touches(loc: Location, unit_id: int, table: str, first: int, end: int) -> bool:
    """Does a request for addresses ``first`` up to (not including) ``end`` touch ``loc``?"""
    return loc.unit_id == unit_id and loc.table == table and loc.address < end and first < loc.address + loc.width
