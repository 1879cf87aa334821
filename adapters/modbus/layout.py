"""A profile placed on one installation: concrete register locations, planned reads, role decoding.

Both the engine and the simulator work through ``DeviceMap`` over a ``RegisterImage`` (words by
unit id, table and address), so what the simulator writes for a role is by construction what the
engine decodes for it, and the read planning the engine uses is the one tests can check.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
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
from adapters.modbus.conditions import failing_words, holds_in, satisfying_raw
from adapters.modbus.profile import (
    ANY_CODE,
    BIT_TABLES,
    NO_FAULT,
    ROLES,
    TABLE_NAMES,
    FaultSpec,
    Profile,
    RegisterSpec,
    Table,
    ValueSpec,
    WriteTarget,
    code_key,
)
from gateway.domain.errors import ConfigError
from gateway.domain.model import Fault, FaultKind, VehicleState

MAX_BITS_PER_READ = 2000  # Modbus limit for one coil / discrete-input read

RoleValue = float | int | bool | str | VehicleState | tuple[float | None, ...] | None


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
class Entry:
    """One thing a poll reads: a value, a fault source or a scale factor, for one socket.

    ``socket`` is None for station-scope entries (read once per device). ``key`` is the profile
    key (``values.soc_percent``), so a log line names what an installer can find in the file.
    """

    key: str
    socket: int | None
    locations: tuple[Location, ...]
    optional: bool = False

    @property
    def id(self) -> EntryId:
        return (self.key, self.socket)

    def label(self, sockets: int) -> str:
        """``values.soc_percent``, or ``values.soc_percent of socket 2`` on multi-socket devices."""
        return self.key if self.socket is None or sockets == 1 else f"{self.key} of socket {self.socket}"

    def within(self, block: ReadBlock) -> bool:
        """Does ``block`` read any of this entry's registers?"""
        return any(
            loc.unit_id == block.unit_id
            and loc.table == block.table
            and loc.address < block.address + block.count
            and block.address < loc.address + loc.width
            for loc in self.locations
        )


EntryId = tuple[str, int | None]


@dataclass(frozen=True, slots=True)
class Decoded:
    """Everything one socket's registers say, in domain terms (``values`` are ``Reading`` fields)."""

    values: dict[str, RoleValue]
    vehicle_state: VehicleState | None
    faults: tuple[Fault, ...]
    charging_enabled: bool | None
    id_tag: str | None = None


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
    """A profile with unit ids and socket addresses resolved; decodes and encodes roles per socket.

    ``unit_id`` overrides the profile's station unit id (``[modbus] unit_id``); sockets with their
    own unit ids (``socket_unit_ids``) keep them. Station-scope registers are read from the station
    unit without any socket offset, and their value goes to every socket.
    """

    def __init__(self, profile: Profile, *, unit_id: int | None = None, sockets: int = 1) -> None:
        key = f"{profile.id}: sockets"
        if not 1 <= sockets <= profile.sockets:
            reason = f"profile '{profile.id}' serves {profile.sockets} socket(s), not {sockets}"
            raise ConfigError([(key, f"{reason}; add one device per socket (own host/port or unit id)")])
        self.profile = profile
        self.sockets = sockets
        self.station_unit_id = profile.modbus.unit_id if unit_id is None else unit_id

    def unit_for(self, socket: int) -> int:
        """The unit id that serves ``socket`` (1-based)."""
        ids = self.profile.modbus.socket_unit_ids
        return ids[socket - 1] if ids else self.station_unit_id

    def locations(self, spec: RegisterSpec, socket: int = 1) -> list[Location]:
        """Where each item (phase, or fault register) of ``spec`` lives for ``socket``."""
        size = width(spec)
        items, step = 1, size
        if isinstance(spec, ValueSpec | FaultSpec):
            items = spec.phases if isinstance(spec, ValueSpec) else spec.count
            step = spec.stride or size
        if spec.scope == "station":
            base, unit_id = spec.address, self.station_unit_id
        else:
            base = spec.address + (socket - 1) * self.profile.modbus.socket_address_stride
            unit_id = self.unit_for(socket)
        return [Location(unit_id, spec.table, base + i * step, size) for i in range(items)]

    def entries(self) -> list[Entry]:
        """Everything one poll reads: values, fault sources and scale factors of every socket."""
        p = self.profile
        specs: list[tuple[str, RegisterSpec]] = [
            *((f"scale_factors.{n}", s) for n, s in p.scale_factors.items()),
            *((f"values.{n}", s) for n, s in p.values.items()),
            *((f"faults.{n}", s) for n, s in p.faults.items()),
        ]
        found = []
        for socket in range(1, self.sockets + 1):
            for key, spec in specs:
                if spec.scope == "station" and socket > 1:
                    continue
                owner = None if spec.scope == "station" else socket
                optional = bool(getattr(spec, "optional", False))
                locations = self.locations(spec, socket)
                for cond in getattr(spec, "valid_when", None) or []:  # read with the value it qualifies
                    locations += [loc for loc in self.locations(cond, socket) if loc not in locations]
                found.append(Entry(key, owner, tuple(locations), optional))
        return found

    def all_locations(self) -> list[Location]:
        return [loc for entry in self.entries() for loc in entry.locations]

    def served_locations(self) -> list[Location]:
        """What a simulator of this device must answer: every read, write, watchdog and identify register."""
        p = self.profile
        targets: list[WriteTarget | None] = [p.writes.current_limit, p.writes.enable, p.watchdog]
        extra = [t.register() for t in targets if t is not None and t.table is not None and t.address is not None]
        if p.watchdog is not None and p.watchdog.timeout_register is not None:
            extra.append(p.watchdog.timeout_register)
        extra += list(p.identify.match) if p.identify else []
        sockets = range(1, self.sockets + 1)
        return self.all_locations() + [loc for spec in extra for s in sockets for loc in self.locations(spec, s)]

    def read_blocks(self, skip: Collection[EntryId] = ()) -> list[ReadBlock]:
        """The reads one poll makes, in order, leaving out the entries in ``skip``."""
        m = self.profile.modbus
        locations = [loc for entry in self.entries() if entry.id not in skip for loc in entry.locations]
        return plan_reads(locations, m.max_block_registers, m.max_gap_registers)

    # --- decoding (engine and simulator) ---

    def decode(self, image: RegisterImage, socket: int, unavailable: Collection[EntryId] = ()) -> Decoded:
        """All roles and faults of ``socket``; ``unavailable`` entries read as None (or no faults).

        Raises ValueError if words cannot be decoded.
        """
        values = {
            role: self.read_role(image, role, socket, unavailable)
            for role in self.profile.values
            if ROLES[role].kind in ("quantity", "energy")
        }
        state = self.read_role(image, "vehicle_state", socket, unavailable)
        enabled = self.read_role(image, "charging_enabled", socket, unavailable)
        id_tag = self.read_role(image, "id_tag", socket, unavailable)
        faults = tuple(
            f
            for name, spec in self.profile.faults.items()
            if self._entry_id(f"faults.{name}", spec, socket) not in unavailable
            for f in self.read_faults(image, name, socket)
        )
        return Decoded(
            values=values,
            vehicle_state=state if isinstance(state, VehicleState) else None,
            faults=faults,
            charging_enabled=enabled if isinstance(enabled, bool) else None,
            id_tag=id_tag if isinstance(id_tag, str) else None,
        )

    def read_role(
        self, image: RegisterImage, role: str, socket: int = 1, unavailable: Collection[EntryId] = ()
    ) -> RoleValue:
        """One role in its unit (None if the profile lacks it or the device says "not available")."""
        spec = self.profile.values.get(role)
        if spec is None:
            return None
        per_phase = ROLES[role].per_phase
        missing = None if not per_phase else (None,) * spec.phases
        if self._entry_id(f"values.{role}", spec, socket) in unavailable:
            return missing
        if not self.valid(image, spec, socket):
            return missing
        raws = [decode_raw(spec, image.words(loc)) for loc in self.locations(spec, socket)]
        kind = ROLES[role].kind
        if kind == "state":
            return _lookup(spec.map or {}, raws[0])
        if kind == "flag":
            return None if raws[0] is None else bool(raws[0])
        if kind == "text":
            text = str(raws[0]).strip("\x00 ") if raws[0] is not None else ""
            return text or None
        sf = 0
        if spec.scale_factor is not None:
            sf_spec = self.profile.scale_factors[spec.scale_factor]
            found = self.scale_factor(image, spec.scale_factor, socket)
            if found is None or self._entry_id(f"scale_factors.{spec.scale_factor}", sf_spec, socket) in unavailable:
                return missing
            sf = found
        quantities = [to_quantity(spec, raw, sf) for raw in raws]
        if kind == "energy":
            return None if quantities[0] is None else round(quantities[0])
        return tuple(quantities) if per_phase else quantities[0]

    def valid(self, image: RegisterImage, spec: ValueSpec, socket: int = 1) -> bool:
        """Does every ``valid_when`` condition of ``spec`` hold now (True without any)?"""
        return all(holds_in(cond, image.words(self.locations(cond, socket)[0])) for cond in spec.valid_when or [])

    def scale_factor(self, image: RegisterImage, name: str, socket: int = 1) -> int | None:
        """The power of ten in ``[scale_factors.<name>]`` now; None if the device says "not implemented"."""
        spec = self.profile.scale_factors[name]
        raw = decode_raw(spec, image.words(self.locations(spec, socket)[0]))
        return None if raw is None else int(raw)

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
        sf = 0
        if spec.scale_factor is not None:
            found = self.scale_factor(image, spec.scale_factor, socket)
            if found is None:
                raise ValueError(f"scale factor '{spec.scale_factor}' shows 'not implemented': cannot encode {role}")
            sf = found
        if spec.valid_when and all(item is None for item in items):
            self._invalidate(image, spec, socket)
            return
        for loc, item in zip(locations, items, strict=True):
            if item is None:
                image.put(loc.unit_id, loc.table, loc.address, encode_unavailable(spec))
                continue
            raw: Raw
            if kind == "state":
                raw = _inverse(spec, spec.map or {}, VehicleState(item))
            elif kind == "flag":
                raw = bool(item) if TYPES[spec.type or "bool"].kind == "bool" else int(bool(item))
            elif kind == "text":
                raw = str(item)
            else:
                raw = from_quantity(spec, float(item), sf)  # type: ignore[arg-type]
            image.put(loc.unit_id, loc.table, loc.address, encode_raw(spec, raw, image.words(loc)))
        self._validate(image, spec, socket)

    def _validate(self, image: RegisterImage, spec: ValueSpec, socket: int) -> None:
        """Make every ``valid_when`` condition on another register hold (a value was just stored)."""
        own = self.locations(spec, socket)
        for cond in spec.valid_when or []:
            loc = self.locations(cond, socket)[0]
            if loc not in own and not holds_in(cond, image.words(loc)):
                image.put(loc.unit_id, loc.table, loc.address, encode_raw(cond, satisfying_raw(cond), image.words(loc)))

    def _invalidate(self, image: RegisterImage, spec: ValueSpec, socket: int) -> None:
        """Show "no value" as the device does: the value register reads 0 (or its sentinel) and the
        first condition fails (Bender: SoC 0 while "smart vehicle detected" reads 0)."""
        own = self.locations(spec, socket)
        for loc in own:
            words = encode_unavailable(spec) if spec.sentinel or _is_float(spec) else [0] * loc.width
            image.put(loc.unit_id, loc.table, loc.address, words)
        assert spec.valid_when
        cond = spec.valid_when[0]
        loc = self.locations(cond, socket)[0]
        if holds_in(cond, image.words(loc)):
            image.put(loc.unit_id, loc.table, loc.address, failing_words(cond, image.words(loc)))

    def write_scale_factor(self, image: RegisterImage, name: str, exponent: int, socket: int = 1) -> None:
        """Store a power of ten in ``[scale_factors.<name>]`` (values already stored keep their raw words)."""
        spec = self.profile.scale_factors[name]
        loc = self.locations(spec, socket)[0]
        image.put(loc.unit_id, loc.table, loc.address, encode_raw(spec, exponent))

    def write_fault_raw(self, image: RegisterImage, name: str, index: int, raw: Raw, socket: int = 1) -> None:
        """Store a raw code in item ``index`` of fault source ``name``."""
        spec = self.profile.faults[name]
        loc = self.locations(spec, socket)[index]
        image.put(loc.unit_id, loc.table, loc.address, encode_raw(spec, raw, image.words(loc)))

    def read_fault_raw(self, image: RegisterImage, name: str, index: int, socket: int = 1) -> Raw | None:
        spec = self.profile.faults[name]
        return decode_raw(spec, image.words(self.locations(spec, socket)[index]))

    @staticmethod
    def _entry_id(key: str, spec: RegisterSpec, socket: int) -> EntryId:
        return (key, None if spec.scope == "station" else socket)


def fault_raw(spec: FaultSpec, kind: str) -> Raw | None:
    """The first code of ``spec`` that means ``kind`` ("none" included), or None if it has none."""
    for code, mapped in (spec.codes or {}).items():
        if mapped == kind and code != ANY_CODE:
            return code if spec.ascii or spec.type == "string" else int(code)
    if spec.codes is not None and spec.codes.get(ANY_CODE, FaultKind.OTHER.value) == kind and kind != NO_FAULT:
        listed = {int(c) for c in spec.codes if c != ANY_CODE and c.lstrip("-").isdigit()}
        return next(n for n in range(1, 1 << 16) if n not in listed)  # a code the map does not list
    return None


def _is_float(spec: RegisterSpec) -> bool:
    return TYPES[spec.type or "bool"].kind == "float"


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
