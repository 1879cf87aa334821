"""Device profiles: one TOML file per device family says which registers hold what.

A profile is data, not code (as evcc's templates are): adding a device means adding a file to
``adapters/profiles/``. The engine (``device.py``) and the simulator (``simulator.py``) are both
built from the same file, so every profile can be tested without the hardware.

Loading validates everything an installer can get wrong and reports *all* problems at once as
``ConfigError([(key path, reason), ...])``, the key path naming the file and the TOML key, e.g.
``phoenix-ev-eth.toml: values.voltage_v.type``. The format is documented in ``docs/profiles.md``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from adapters.modbus.codec import TYPES, field, width
from gateway.domain.errors import ConfigError
from gateway.domain.model import FaultKind, VehicleState

PROFILE_DIR = Path(__file__).resolve().parent.parent / "profiles"

Table = Literal["coil", "discrete", "input", "holding"]
WordOrder = Literal["big", "little"]
BIT_TABLES = ("coil", "discrete")
NO_FAULT = "none"  # the fault "kind" of a code that means "no fault"
ANY_CODE = "*"  # map/codes key matching every code not listed


@dataclass(frozen=True, slots=True)
class Role:
    """What a ``[values.<role>]`` entry feeds: a ``Reading`` field, the vehicle state or a flag."""

    name: str
    unit: str  # the unit the scaled value must be in; "" for states and flags
    kind: Literal["quantity", "energy", "state", "flag"]
    doc: str
    per_phase: bool = False
    charger_only: bool = False


ROLES: dict[str, Role] = {
    r.name: r
    for r in (
        Role("energy_wh", "Wh", "energy", "lifetime import counter (billing grade); integer Wh"),
        Role("energy_export_wh", "Wh", "energy", "lifetime export counter; integer Wh"),
        Role(
            "session_energy_wh",
            "Wh",
            "energy",
            "energy of the current session only; never billed from",
            charger_only=True,
        ),
        Role("power_w", "W", "quantity", "active power, total of all phases"),
        Role("current_a", "A", "quantity", "current per phase (L1, L2, L3)", per_phase=True),
        Role("voltage_v", "V", "quantity", "voltage per phase, line to neutral", per_phase=True),
        Role("frequency_hz", "Hz", "quantity", "grid frequency"),
        Role("temperature_c", "°C", "quantity", "device temperature"),
        Role("soc_percent", "%", "quantity", "state of charge reported by the vehicle", charger_only=True),
        Role("offered_current_a", "A", "quantity", "current limit the charger applies now", charger_only=True),
        Role("vehicle_state", "", "state", "IEC 61851 control-pilot state A-F, through `map`", charger_only=True),
        Role("charging_enabled", "", "flag", "charging allowed by the device (non-zero = yes)", charger_only=True),
    )
}
"""Every role a profile may map, with its unit: the key of ``[values.<role>]`` must be one of these."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterSpec(_Strict):
    """Where one value lives (table, address) and how its words become the device's raw value."""

    table: Table
    address: int = Field(ge=0, le=65535)
    type: str | None = None  # a key of codec.TYPES; defaults to "bool" for coil/discrete
    length: int | None = Field(default=None, ge=1, le=125)  # registers of a string
    word_order: WordOrder | None = None  # None = the profile's [modbus] word_order
    byte: Literal["high", "low"] | None = None
    shift: int = Field(default=0, ge=0, le=63)
    mask: int | None = Field(default=None, ge=1)
    ascii: bool = False
    sentinel: list[int] = Field(default_factory=list)
    scale: float = 1.0
    offset: float = 0.0


class ValueSpec(RegisterSpec):
    """A ``[values.<role>]`` entry; ``phases`` values ``stride`` registers apart for per-phase roles."""

    phases: int = Field(default=1, ge=1, le=3)
    stride: int | None = Field(default=None, ge=1)
    map: dict[str, VehicleState] | None = None


class FaultSpec(RegisterSpec):
    """A ``[faults.<name>]`` source: ``count`` code registers ``stride`` apart, or one bit field."""

    count: int = Field(default=1, ge=1, le=32)
    stride: int | None = Field(default=None, ge=1)
    codes: dict[str, str] | None = None  # raw code -> FaultKind value or "none"
    bits: dict[str, str] | None = None  # bit number -> FaultKind value


class ModbusSettings(_Strict):
    """How to talk to the device: defaults for the whole file and bus behaviour."""

    unit_id: int = Field(default=1, ge=0, le=255)
    word_order: WordOrder = "big"
    max_block_registers: int = Field(default=125, ge=1, le=125)
    max_gap_registers: int = Field(default=0, ge=0, le=124)
    request_delay_ms: int = Field(default=0, ge=0, le=10_000)
    sockets: int = Field(default=1, ge=1, le=64)  # charging sockets one connection can serve
    socket_address_stride: int = Field(default=0, ge=0)  # socket n reads address + (n-1) * stride
    socket_unit_ids: list[int] = Field(default_factory=list)  # socket n uses unit id [n-1]


class SimulatorSettings(_Strict):
    """Optional: what the simulator shows before a test sets anything (role -> value in its unit)."""

    initial: dict[str, Any] = Field(default_factory=dict)


class Profile(_Strict):
    """A validated device profile. Load it with ``load_profile``; do not build one by hand."""

    id: str
    kind: Literal["charger", "meter"]
    vendor: str
    model: str
    source: str
    notes: str = ""
    modbus: ModbusSettings = Field(default_factory=ModbusSettings)
    values: dict[str, ValueSpec]
    faults: dict[str, FaultSpec] = Field(default_factory=dict)
    simulator: SimulatorSettings = Field(default_factory=SimulatorSettings)
    _path: Path | None = PrivateAttr(default=None)

    @property
    def sockets(self) -> int:
        """How many sockets one device of this profile can serve (``[modbus] sockets``)."""
        return self.modbus.sockets

    @property
    def path(self) -> Path | None:
        """The file this profile was loaded from."""
        return self._path


def profile_names() -> list[str]:
    """The profiles shipped in ``adapters/profiles``, by name (file stem), sorted."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name: str | Path) -> Profile:
    """Load and validate a profile by name (file stem in ``adapters/profiles``) or by path to a .toml file.

    Raises ``ConfigError`` listing every problem with its key path.
    """
    text = str(name)
    path = Path(text) if isinstance(name, Path) or text.endswith(".toml") or "/" in text else None
    if path is None:
        path = PROFILE_DIR / f"{text}.toml"
        if not path.is_file():
            known = ", ".join(profile_names()) or "none"
            raise ConfigError([(text, f"no profile named '{text}' (available: {known})")])
    file = path.name
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([(file, f"cannot read the profile: {exc.strerror or exc}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([(file, f"not valid TOML: {exc}")]) from None
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([(f"{file}: {path_}", reason) for path_, reason in _pydantic_problems(exc)]) from None
    problems: list[tuple[str, str]] = []
    _Checker(profile, path.stem, lambda key, reason: problems.append((f"{file}: {key}", reason))).run()
    if problems:
        raise ConfigError(problems)
    profile._path = path
    return profile


def code_key(raw: object) -> str:
    """The ``map`` / ``codes`` key a raw value is looked up under (integers in decimal)."""
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    return str(raw)


def _pydantic_problems(exc: ValidationError) -> list[tuple[str, str]]:
    """Pydantic's errors as ``(dotted key path, reason)`` in words an installer understands."""
    problems = []
    for err in exc.errors():
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        kind, ctx = err["type"], err.get("ctx", {})
        if kind == "extra_forbidden":
            reason = "unknown key (see docs/profiles.md for the keys a profile may use)"
        elif kind == "missing":
            reason = "required key is missing"
        elif kind in ("literal_error", "enum"):
            reason = f"unknown value {err['input']!r} (expected {ctx.get('expected', '?')})"
        else:
            reason = f"{err['msg']} (got {err['input']!r})"
        problems.append((path or "(top level)", reason))
    return problems


class _Checker:
    """The rules pydantic cannot express, each reported with the exact key path; also fills defaults."""

    def __init__(self, profile: Profile, stem: str, bad: Callable[[str, str], None]) -> None:
        self.p, self.stem, self.bad = profile, stem, bad

    def run(self) -> None:
        p = self.p
        if p.id != self.stem:
            self.bad("id", f"must equal the file name without .toml ('{self.stem}'), not '{p.id}'")
        m = p.modbus
        if any(not 0 <= u <= 255 for u in m.socket_unit_ids):
            self.bad("modbus.socket_unit_ids", "unit ids are 0..255")
        if m.socket_unit_ids and len(m.socket_unit_ids) != m.sockets:
            self.bad("modbus.socket_unit_ids", f"give one unit id per socket ({m.sockets})")
        if m.sockets > 1 and not m.socket_unit_ids and not m.socket_address_stride:
            self.bad("modbus.sockets", "more sockets need socket_address_stride or socket_unit_ids")
        if m.sockets > 1 and p.kind == "meter":
            self.bad("modbus.sockets", "a meter has no sockets")
        for role, spec in p.values.items():
            self._value(role, spec)
        for name, source in p.faults.items():
            self._fault(name, source)
        if p.kind == "charger" and "vehicle_state" not in p.values:
            self.bad("values.vehicle_state", "a charger profile must map the vehicle state")
        if p.kind == "meter" and p.faults:
            self.bad("faults", "meter snapshots carry no faults; remove the [faults] section")
        for role, value in p.simulator.initial.items():
            self._initial(role, value)

    def _value(self, role_name: str, spec: ValueSpec) -> None:
        path = f"values.{role_name}"
        role = ROLES.get(role_name)
        if role is None:
            self.bad(path, f"unknown role '{role_name}' (expected one of {', '.join(ROLES)})")
            return
        if role.charger_only and self.p.kind == "meter":
            self.bad(path, f"'{role_name}' is a charger value; a meter profile cannot have it")
        if not self._register(spec, path, spec.phases, spec.stride):
            return
        kind = TYPES[spec.type or "bool"].kind
        if spec.phases > 1 and not role.per_phase:
            self.bad(f"{path}.phases", f"'{role_name}' is one value, not one per phase")
        if role.kind == "state":
            if not spec.map:
                self.bad(f"{path}.map", "required: which raw value means which state A-F")
            else:
                self._keys(spec.map, spec, f"{path}.map")
        elif spec.map is not None:
            self.bad(f"{path}.map", "only vehicle_state translates codes through a map")
        if role.kind in ("state", "flag") and (spec.scale != 1.0 or spec.offset != 0.0):
            self.bad(path, f"'{role_name}' is not a quantity: scale and offset do not apply")
        if role.kind in ("quantity", "energy") and (kind == "string" or spec.ascii):
            self.bad(f"{path}.type", f"'{role_name}' is a number; a text value cannot be scaled")

    def _fault(self, name: str, spec: FaultSpec) -> None:
        path = f"faults.{name}"
        if not self._register(spec, path, spec.count, spec.stride):
            return
        if (spec.codes is None) == (spec.bits is None):
            self.bad(path, "give exactly one of codes (a code per fault) or bits (a bit per fault)")
            return
        kinds = [k.value for k in FaultKind]
        if spec.codes is not None:
            self._keys(spec.codes, spec, f"{path}.codes")
            for key, kind in spec.codes.items():
                if kind != NO_FAULT and kind not in kinds:
                    self.bad(f"{path}.codes.{key}", f"unknown fault kind '{kind}' (expected none, {', '.join(kinds)})")
        if spec.bits is not None:
            if TYPES[spec.type or "bool"].kind != "int" or spec.ascii:
                self.bad(f"{path}.type", "a bit field needs an integer type")
                return
            size = width(spec) * 16
            for key, kind in list(spec.bits.items()):
                if not key.isdigit() or int(key) >= size:
                    self.bad(f"{path}.bits.{key}", f"bit numbers are 0..{size - 1} for a {spec.type}")
                if kind not in kinds:
                    self.bad(f"{path}.bits.{key}", f"unknown fault kind '{kind}' (expected {', '.join(kinds)})")

    def _register(self, spec: RegisterSpec, path: str, count: int, stride: int | None) -> bool:
        """Check the decoding keys shared by values and faults; False if the type is unusable."""
        bits_table = spec.table in BIT_TABLES
        if spec.type is None:
            if not bits_table:
                self.bad(f"{path}.type", "required for input and holding registers")
                return False
            spec.type = "bool"
        dtype = TYPES.get(spec.type)
        if dtype is None:
            self.bad(f"{path}.type", f"unknown type '{spec.type}' (expected one of {', '.join(TYPES)})")
            return False
        if bits_table != (dtype.kind == "bool"):
            if bits_table:
                self.bad(f"{path}.type", "coils and discrete inputs hold bits: type must be 'bool'")
            else:
                self.bad(f"{path}.type", "'bool' is only for coil and discrete tables")
            return False
        spec.word_order = spec.word_order or self.p.modbus.word_order
        if dtype.kind == "string" and spec.length is None:
            self.bad(f"{path}.length", "required for strings: how many registers the text takes")
            return False
        if dtype.kind != "string" and spec.length is not None:
            self.bad(f"{path}.length", f"only strings have a length; a {spec.type} is {dtype.registers} register(s)")
        if spec.byte is not None and (dtype.registers != 1 or dtype.kind != "int"):
            self.bad(f"{path}.byte", "byte selects half of a 16-bit register; use shift and mask for wider types")
        if spec.byte is not None and (spec.shift or spec.mask is not None):
            self.bad(f"{path}.byte", "give either byte or shift/mask, not both")
        if (spec.shift or spec.mask is not None) and dtype.kind != "int":
            self.bad(f"{path}.mask", f"bit fields are cut from integers, not from a {spec.type}")
        cut = field(spec)
        if spec.ascii and (cut is None or cut[1] > 0xFF):
            self.bad(f"{path}.ascii", "an ASCII letter is one byte: also give byte, or a mask of at most 0xFF")
        if spec.scale == 0:
            self.bad(f"{path}.scale", "must not be 0")
        size = width(spec)
        if not bits_table and size > self.p.modbus.max_block_registers:
            self.bad(path, f"{size} registers exceed modbus.max_block_registers")
        if count > 1 and stride is not None and stride < size:
            self.bad(f"{path}.stride", f"{stride} is less than the {size} registers of one {spec.type}")
        last = spec.address + (count - 1) * (stride or size) + size - 1
        if last > 65535:
            self.bad(f"{path}.address", f"the value runs past address 65535 (to {last})")
        return True

    def _keys(self, table: dict[str, Any], spec: RegisterSpec, path: str) -> None:
        """Normalise map/codes keys to what ``code_key`` produces (decimal), reporting bad ones."""
        textual = spec.ascii or spec.type == "string"
        normalised: dict[str, Any] = {}
        for key, value in table.items():
            if key == ANY_CODE or textual:
                if spec.ascii and key != ANY_CODE and len(key) != 1:
                    self.bad(f"{path}.{key}", "keys of an ASCII field are single letters")
                normalised[key] = value
                continue
            try:
                normalised[str(int(key, 0))] = value
            except ValueError:
                self.bad(f"{path}.{key}", "keys are integers (decimal or 0x hex), or '*' for any other code")
        table.clear()
        table.update(normalised)  # same order: the simulator encodes a state with its first code

    def _initial(self, role: str, value: object) -> None:
        path = f"simulator.initial.{role}"
        spec = self.p.values.get(role)
        if spec is None:
            self.bad(path, f"'{role}' is not mapped in [values]")
        elif role == "vehicle_state":
            if value not in {s.value for s in (spec.map or {}).values()}:
                self.bad(path, f"{value!r} is not a state the map can produce")
        elif isinstance(value, list):
            if len(value) != spec.phases or not all(_is_number(v) for v in value):
                self.bad(path, f"give one number or {spec.phases} numbers (one per phase)")
        elif not (_is_number(value) or isinstance(value, bool)):
            self.bad(path, f"{value!r} is not a number")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
