"""A profile placed on one installation: concrete register locations, planned reads, role decoding.

Both the engine and the simulator work through ``DeviceMap`` over a ``RegisterImage`` (words by
unit id, table and address), so what the simulator writes for a role is by construction what the
engine decodes for it, and the read planning the engine uses is the one tests can check.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from adapters.modbus.codec import (
    TYPES,
    Raw,
    decode_raw,
    encode_raw,
    encode_unavailable,
    from_quantity,
    to_quantity,
    width,
)
from adapters.modbus.profile import (
    ANY_CODE,
    BIT_TABLES,
    NO_FAULT,
    ROLES,
    FaultSpec,
    Profile,
    RegisterSpec,
    Table,
    ValueSpec,
    code_key,
)
from gateway.domain.errors import ConfigError
from gateway.domain.model import Fault, FaultKind, VehicleState

MAX_BITS_PER_READ = 2000  # Modbus limit for one coil / discrete-input read
TABLE_NAMES = {
    "coil": "coils",
    "discrete": "discrete inputs",
    "input": "input registers",
    "holding": "holding registers",
}

RoleValue = float | int | bool | VehicleState | tuple[float | None, ...] | None


@dataclass(frozen=True, slots=True)
class Location:
    """``width`` consecutive addresses of one table of one unit."""

    unit_id: int
    table: Table
    address: int
    width: int


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: ``count`` registers (or bits) from ``address``."""

    unit_id: int
    table: Table
    address: int
    count: int

    def __str__(self) -> str:
        return f"{TABLE_NAMES[self.table]} {self.address}..{self.address + self.count - 1} of unit {self.unit_id}"


@dataclass(frozen=True, slots=True)
class Decoded:
    """Everything one socket's registers say, in domain terms (``values`` are ``Reading`` fields)."""

    values: dict[str, RoleValue]
    vehicle_state: VehicleState | None
    faults: tuple[Fault, ...]
    charging_enabled: bool | None


class RegisterImage:
    """Register words (or bits as 0/1) by unit id, table and address; unknown addresses read 0."""

    def __init__(self) -> None:
        self._cells: dict[tuple[int, str], dict[int, int]] = {}

    def get(self, unit_id: int, table: str, address: int, count: int = 1) -> list[int]:
        cells = self._cells.get((unit_id, table), {})
        return [cells.get(address + i, 0) for i in range(count)]

    def put(self, unit_id: int, table: str, address: int, values: Iterable[int | bool]) -> None:
        cells = self._cells.setdefault((unit_id, table), {})
        for i, value in enumerate(values):
            cells[address + i] = int(value)

    def words(self, location: Location) -> list[int]:
        return self.get(location.unit_id, location.table, location.address, location.width)


def plan_reads(locations: Iterable[Location], max_block_registers: int, max_gap_registers: int) -> list[ReadBlock]:
    """As few reads as possible: neighbours merge while the gap and the block limit allow.

    Registers closer than ``max_gap_registers`` are read along with the gap between them (some
    devices refuse reads of undefined addresses, so the profile decides); a block never exceeds
    ``max_block_registers`` (bit tables: 2000 bits).
    """
    spans: dict[tuple[int, Table], list[tuple[int, int]]] = {}
    for loc in locations:
        spans.setdefault((loc.unit_id, loc.table), []).append((loc.address, loc.address + loc.width - 1))
    blocks = []
    for (unit_id, table), found in sorted(spans.items()):
        limit = MAX_BITS_PER_READ if table in BIT_TABLES else max_block_registers
        found.sort()
        start, end = found[0]
        for first, last in found[1:]:
            if first <= end + 1 + max_gap_registers and max(end, last) - start + 1 <= limit:
                end = max(end, last)
                continue
            blocks.append(ReadBlock(unit_id, table, start, end - start + 1))
            start, end = first, last
        blocks.append(ReadBlock(unit_id, table, start, end - start + 1))
    return blocks


class DeviceMap:
    """A profile with unit ids and socket addresses resolved; decodes and encodes roles per socket."""

    def __init__(self, profile: Profile, *, unit_id: int | None = None, sockets: int = 1) -> None:
        key = f"{profile.id}: sockets"
        if not 1 <= sockets <= profile.sockets:
            reason = f"profile '{profile.id}' serves {profile.sockets} socket(s), not {sockets}"
            raise ConfigError([(key, f"{reason}; add one device per socket (own host/port or unit id)")])
        self.profile = profile
        self.sockets = sockets
        self._unit_id = profile.modbus.unit_id if unit_id is None else unit_id

    def unit_for(self, socket: int) -> int:
        """The unit id that serves ``socket`` (1-based)."""
        ids = self.profile.modbus.socket_unit_ids
        return ids[socket - 1] if ids else self._unit_id

    def locations(self, spec: ValueOrFault, socket: int) -> list[Location]:
        """Where each item (phase, or fault register) of ``spec`` lives for ``socket``."""
        size = width(spec)
        items, step = 1, size
        if isinstance(spec, ValueSpec | FaultSpec):
            items = spec.phases if isinstance(spec, ValueSpec) else spec.count
            step = spec.stride or size
        base = spec.address + (socket - 1) * self.profile.modbus.socket_address_stride
        unit_id = self.unit_for(socket)
        return [Location(unit_id, spec.table, base + i * step, size) for i in range(items)]

    def all_locations(self) -> list[Location]:
        specs: list[ValueOrFault] = [*self.profile.values.values(), *self.profile.faults.values()]
        return [loc for s in range(1, self.sockets + 1) for spec in specs for loc in self.locations(spec, s)]

    def read_blocks(self) -> list[ReadBlock]:
        """The reads one poll makes, in order."""
        m = self.profile.modbus
        return plan_reads(self.all_locations(), m.max_block_registers, m.max_gap_registers)

    # --- decoding (engine and simulator) ---

    def decode(self, image: RegisterImage, socket: int) -> Decoded:
        """All roles and faults of ``socket``; raises ValueError if words cannot be decoded."""
        values = {
            role: self.read_role(image, role, socket)
            for role in self.profile.values
            if ROLES[role].kind in ("quantity", "energy")
        }
        state = self.read_role(image, "vehicle_state", socket) if "vehicle_state" in self.profile.values else None
        enabled = self.read_role(image, "charging_enabled", socket)
        faults = tuple(f for name in self.profile.faults for f in self.read_faults(image, name, socket))
        return Decoded(
            values=values,
            vehicle_state=state if isinstance(state, VehicleState) else None,
            faults=faults,
            charging_enabled=enabled if isinstance(enabled, bool) else None,
        )

    def read_role(self, image: RegisterImage, role: str, socket: int = 1) -> RoleValue:
        """One role in its unit (None if the profile lacks it or the device says "not available")."""
        spec = self.profile.values.get(role)
        if spec is None:
            return None
        raws = [decode_raw(spec, image.words(loc)) for loc in self.locations(spec, socket)]
        kind = ROLES[role].kind
        if kind == "state":
            return _lookup(spec.map or {}, raws[0])
        if kind == "flag":
            return None if raws[0] is None else bool(raws[0])
        quantities = [to_quantity(spec, raw) for raw in raws]
        if kind == "energy":
            return None if quantities[0] is None else round(quantities[0])
        return tuple(quantities) if ROLES[role].per_phase else quantities[0]

    def read_faults(self, image: RegisterImage, name: str, socket: int = 1) -> list[Fault]:
        """The active faults one ``[faults.<name>]`` source reports; unlisted codes count as ``other``."""
        spec = self.profile.faults[name]
        found = []
        for index, loc in enumerate(self.locations(spec, socket)):
            raw = decode_raw(spec, image.words(loc))
            if raw is None:
                continue
            info = name if spec.count == 1 else f"{name}[{index + 1}]"
            if spec.codes is not None:
                code = code_key(raw)
                kind = spec.codes.get(code, spec.codes.get(ANY_CODE, FaultKind.OTHER.value))
                if kind != NO_FAULT:
                    found.append(Fault(FaultKind(kind), vendor_code=code, info=info))
            for bit, kind in (spec.bits or {}).items():
                if int(raw) >> int(bit) & 1:
                    found.append(Fault(FaultKind(kind), vendor_code=f"bit {bit}", info=info))
        return found

    # --- encoding (simulator) ---

    def write_role(self, image: RegisterImage, role: str, value: object, socket: int = 1) -> None:
        """Store ``value`` (in the role's unit) so that ``read_role`` gives it back, quantised."""
        spec = self.profile.values.get(role)
        if spec is None:
            raise KeyError(f"profile '{self.profile.id}' does not map '{role}'")
        locations = self.locations(spec, socket)
        kind = ROLES[role].kind
        items: Sequence[object]
        if isinstance(value, list | tuple):
            if len(value) != len(locations):
                raise ValueError(f"'{role}' takes {len(locations)} value(s), got {len(value)}")
            items = value
        else:
            items = [value] * len(locations)
        for loc, item in zip(locations, items, strict=True):
            if item is None:
                image.put(loc.unit_id, loc.table, loc.address, encode_unavailable(spec))
                continue
            raw: Raw
            if kind == "state":
                raw = _inverse(spec, spec.map or {}, VehicleState(item))
            elif kind == "flag":
                raw = bool(item) if TYPES[spec.type or "bool"].kind == "bool" else int(bool(item))
            else:
                raw = from_quantity(spec, float(item))
            image.put(loc.unit_id, loc.table, loc.address, encode_raw(spec, raw, image.words(loc)))

    def write_fault_raw(self, image: RegisterImage, name: str, index: int, raw: Raw, socket: int = 1) -> None:
        """Store a raw code in item ``index`` of fault source ``name``."""
        spec = self.profile.faults[name]
        loc = self.locations(spec, socket)[index]
        image.put(loc.unit_id, loc.table, loc.address, encode_raw(spec, raw, image.words(loc)))

    def read_fault_raw(self, image: RegisterImage, name: str, index: int, socket: int = 1) -> Raw | None:
        spec = self.profile.faults[name]
        return decode_raw(spec, image.words(self.locations(spec, socket)[index]))


ValueOrFault = RegisterSpec  # ValueSpec or FaultSpec; both are RegisterSpecs with an item count


def fault_raw(spec: FaultSpec, kind: str) -> Raw | None:
    """The first code of ``spec`` that means ``kind`` ("none" included), or None if it has none."""
    for code, mapped in (spec.codes or {}).items():
        if mapped == kind and code != ANY_CODE:
            return code if spec.ascii or spec.type == "string" else int(code)
    if spec.codes is not None and spec.codes.get(ANY_CODE, FaultKind.OTHER.value) == kind and kind != NO_FAULT:
        listed = {int(c) for c in spec.codes if c != ANY_CODE and c.lstrip("-").isdigit()}
        return next(n for n in range(1, 1 << 16) if n not in listed)  # a code the map does not list
    return None


def _lookup(table: dict[str, VehicleState], raw: Raw | None) -> VehicleState | None:
    if raw is None:
        return None
    return table.get(code_key(raw), table.get(ANY_CODE))


def _inverse(spec: RegisterSpec, table: dict[str, VehicleState], state: VehicleState) -> Raw:
    """The first raw code that maps to ``state`` (what the simulator writes for it)."""
    for code, mapped in table.items():
        if mapped is state and code != ANY_CODE:
            return code if spec.ascii or spec.type == "string" else int(code)
    raise ValueError(f"the map of this profile has no code for state {state.value}")
