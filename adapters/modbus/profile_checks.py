"""The profile rules pydantic cannot express, each reported with the exact key path and a reason.

The checker also fills in what the file may leave out (types of bit tables, word order and
sentinels from ``[modbus]``, the resolution of a current limit), so the rest of the engine sees a
complete profile. Every problem is collected; ``load_profile`` reports them all at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from adapters.modbus.codec import TYPES, encode_raw, field, width
from adapters.modbus.conditions import satisfied_by_zeros
from adapters.modbus.profile_overlaps import RegisterMap
from adapters.modbus.profile_schema import (
    ANY_CODE,
    BIT_TABLES,
    NO_FAULT,
    READ_ONLY_TABLES,
    ROLES,
    TABLE_NAMES,
    Condition,
    FaultSpec,
    Profile,
    RegisterSpec,
    ValueSpec,
    WriteTarget,
)
from gateway.domain.model import FaultKind

Report = Callable[[str, str], None]


def pydantic_problems(exc: ValidationError) -> list[tuple[str, str]]:
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


class Checker:
    """Run every cross-key rule on ``profile`` (loaded from ``stem``.toml), reporting through ``bad``."""

    def __init__(self, profile: Profile, stem: str, bad: Report) -> None:
        self.p, self.stem, self.bad = profile, stem, bad
        self._registers = RegisterMap(profile.modbus)

    def run(self) -> None:
        p = self.p
        if p.id != self.stem:
            self.bad("id", f"must equal the file name without .toml ('{self.stem}'), not '{p.id}'")
        self._modbus()
        for name, sf in p.scale_factors.items():
            self._scale_factor(name, sf)
        for role, spec in p.values.items():
            self._value(role, spec)
        for name, source in p.faults.items():
            self._fault(name, source)
        if p.kind == "charger" and "vehicle_state" not in p.values:
            self.bad("values.vehicle_state", "a charger profile must map the vehicle state")
        if p.kind == "meter" and p.faults:
            self.bad("faults", "meter snapshots carry no faults; remove the [faults] section")
        self._writes()
        self._watchdog()
        self._identify()
        for key, reason in self._registers.overlaps():
            self.bad(key, reason)
        self._simulator()

    # --- sections ---

    def _modbus(self) -> None:
        m = self.p.modbus
        if any(not 0 <= u <= 255 for u in m.socket_unit_ids):
            self.bad("modbus.socket_unit_ids", "unit ids are 0..255")
        if m.socket_unit_ids and len(m.socket_unit_ids) != m.sockets:
            self.bad("modbus.socket_unit_ids", f"give one unit id per socket ({m.sockets})")
        if m.sockets > 1 and not m.socket_unit_ids and not m.socket_address_stride:
            self.bad("modbus.sockets", "more sockets need socket_address_stride or socket_unit_ids")
        if m.sockets > 1 and self.p.kind == "meter":
            self.bad("modbus.sockets", "a meter has no sockets")
        for type_name in m.sentinels:
            dtype = TYPES.get(type_name)
            if dtype is None or dtype.kind not in ("int", "float"):
                numeric = ", ".join(n for n, t in TYPES.items() if t.kind in ("int", "float"))
                self.bad(f"modbus.sentinels.{type_name}", f"not a numeric type (expected one of {numeric})")

    def _scale_factor(self, name: str, spec: RegisterSpec) -> None:
        path = f"scale_factors.{name}"
        if not self._register(spec, path, 1, None):
            return
        if TYPES[spec.type or "bool"].kind != "int" or spec.ascii or field(spec) is not None:
            self.bad(f"{path}.type", "a scale factor is a whole power of ten: use i16 (SunSpec sunssf)")
        changed = [k for k in ("scale", "exponent", "offset", "invert", "scale_factor") if k in spec.model_fields_set]
        if changed:
            self.bad(f"{path}.{changed[0]}", "a scale factor register is used as it is; scaling keys do not apply")
        self._registers.add(path, spec, 1, None)

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
        self._registers.add(path, spec, spec.phases, spec.stride)
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
        scaled = spec.scale != 1.0 or spec.offset != 0.0 or spec.exponent or spec.invert or spec.scale_factor
        if role.kind == "text" and kind != "string":
            self.bad(f"{path}.type", f"'{role_name}' is text: type must be 'string'")
        if role.kind in ("state", "flag", "text") and scaled:
            self.bad(path, f"'{role_name}' is not a quantity: scale, offset and scale factors do not apply")
        if role.kind in ("quantity", "energy") and (kind == "string" or spec.ascii):
            self.bad(f"{path}.type", f"'{role_name}' is a number; a text value cannot be scaled")
        for index, cond in enumerate(spec.valid_when or []):
            where = f"{path}.valid_when[{index}]"
            if self._condition(cond, where):
                self._registers.add(where, cond, 1, None)

    def _fault(self, name: str, spec: FaultSpec) -> None:
        path = f"faults.{name}"
        if not self._register(spec, path, spec.count, spec.stride):
            return
        self._registers.add(path, spec, spec.count, spec.stride)
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

    def _writes(self) -> None:
        w, p = self.p.writes, self.p
        if p.kind == "meter" and (w.current_limit or w.enable or p.watchdog):
            self.bad("writes" if (w.current_limit or w.enable) else "watchdog", "a meter takes no commands")
            return
        limit = w.current_limit
        if limit is not None and self._target(limit, "writes.current_limit", numeric=True):
            float_register = TYPES[limit.type or "bool"].kind == "float"
            if limit.resolution_a is None:
                limit.resolution_a = 0.1 if float_register else 1.0
            if limit.min_a > limit.max_a:
                self.bad("writes.current_limit.min_a", f"{limit.min_a:g} A is above max_a ({limit.max_a:g} A)")
            top = limit.max_a if float_register else round(limit.max_a / limit.resolution_a)
            for key, raw in (("max_a", top), ("off_value", limit.off_value)):
                self._encodable(limit.register(), raw, f"writes.current_limit.{key}")
            if limit.off == "disable" and (w.enable is None or w.enable.via != "register"):
                self.bad("writes.current_limit.off", "'disable' needs a [writes.enable] coil or register")
        enable = w.enable
        if enable is None:
            return
        if enable.via == "current_limit":
            if enable.table is not None or enable.address is not None:
                self.bad("writes.enable.via", "'current_limit' writes the current limit register: drop table/address")
            if limit is None:
                self.bad("writes.enable.via", "'current_limit' needs [writes.current_limit]")
            elif limit.off != "zero":
                self.bad("writes.enable.via", "'current_limit' needs writes.current_limit.off = 'zero'")
        elif self._target(enable, "writes.enable", numeric=False):
            for key, raw in (("on", enable.on), ("off", enable.off)):
                self._encodable(enable.register(), raw, f"writes.enable.{key}")
            if enable.on == enable.off:
                self.bad("writes.enable.on", "on and off must differ")

    def _watchdog(self) -> None:
        dog = self.p.watchdog
        if dog is None or self.p.kind == "meter":
            return
        if dog.value == "current_limit":
            if self.p.writes.current_limit is None:
                self.bad("watchdog.value", "'current_limit' rewrites [writes.current_limit], which is missing")
            if dog.table is not None or dog.address is not None:
                self.bad("watchdog.value", "'current_limit' writes the current limit register: drop table/address")
        elif self._target(dog, "watchdog", numeric=True):
            if TYPES[dog.type or "bool"].kind != "int":
                self.bad("watchdog.type", "the watchdog register takes whole numbers: use an integer type")
            elif isinstance(dog.value, int):
                self._encodable(dog.register(), dog.value, "watchdog.value")
        if dog.timeout_s is None and dog.timeout_register is None:
            self.bad("watchdog", "give timeout_s (seconds) or timeout_register (where the device keeps it)")
        if dog.timeout_register is not None:
            reg = dog.timeout_register
            if self._register(reg, "watchdog.timeout_register", 1, None):
                if TYPES[reg.type or "bool"].kind not in ("int", "float") or reg.ascii:
                    self.bad("watchdog.timeout_register.type", "a timeout is a number")
                self._registers.add("watchdog.timeout_register", reg, 1, None)
        if dog.period_s is not None and dog.timeout_s is not None and dog.period_s >= dog.timeout_s:
            self.bad("watchdog.period_s", f"must be shorter than timeout_s ({dog.timeout_s:g} s)")

    def _identify(self) -> None:
        if self.p.identify is None:
            return
        usable = [self._condition(match, f"identify.match[{i}]") for i, match in enumerate(self.p.identify.match)]
        if all(usable) and all(satisfied_by_zeros(match) for match in self.p.identify.match):
            self.bad(
                "identify",
                "a device that answers 0 in every register fits every match: add one that zeros cannot satisfy "
                "(a live voltage, a rated current of at least 6 A, a marker or model code), so a fit is evidence",
            )

    def _condition(self, cond: Condition, path: str) -> bool:
        """Check one identify match or ``valid_when`` condition; False if its register is unusable."""
        if cond.sentinel is None:  # compare what is there: a SunSpec end marker 0xFFFF is a value here
            cond.sentinel = []
        if not self._register(cond, path, 1, None):
            return False
        textual = cond.ascii or cond.type == "string"
        if cond.equals is None and cond.one_of is None and cond.min is None and cond.max is None:
            self.bad(path, "give equals, one_of, or min/max: what the register must hold")
        expected = [cond.equals] if cond.equals is not None else list(cond.one_of or [])
        if any(isinstance(e, str) != textual for e in expected):
            what = "text (a string or an ASCII field)" if textual else "numbers"
            self.bad(f"{path}.{'equals' if cond.equals is not None else 'one_of'}", f"this register holds {what}")
        if (cond.min is not None or cond.max is not None) and textual:
            self.bad(f"{path}.min", "a range needs a number, not text")
        if cond.min is not None and cond.max is not None and cond.min > cond.max:
            self.bad(f"{path}.min", f"{cond.min:g} is above max ({cond.max:g})")
        return True

    def _simulator(self) -> None:
        for role, value in self.p.simulator.initial.items():
            self._initial(role, value)
        for name, exponent in self.p.simulator.scale_factors.items():
            if name not in self.p.scale_factors:
                self.bad(f"simulator.scale_factors.{name}", f"no [scale_factors.{name}] in this profile")
            elif not -10 <= exponent <= 10:
                self.bad(f"simulator.scale_factors.{name}", "scale factors are -10..10")

    # --- shared rules ---

    def _register(self, spec: RegisterSpec, path: str, count: int, stride: int | None) -> bool:
        """Check the decoding keys shared by every read entry; False if the type is unusable."""
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
        if spec.sentinel is None:
            spec.sentinel = list(self.p.modbus.sentinels.get(spec.type, []))
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
        if spec.scale_factor is not None:
            if spec.scale_factor not in self.p.scale_factors:
                defined = ", ".join(self.p.scale_factors) or "none"
                reason = f"no [scale_factors.{spec.scale_factor}] register in this profile (defined: {defined})"
                self.bad(f"{path}.scale_factor", reason)
            elif spec.scope == "station" and self.p.scale_factors[spec.scale_factor].scope == "socket":
                self.bad(f"{path}.scale_factor", "a station value cannot use a per-socket scale factor")
        size = width(spec)
        if not bits_table and size > self.p.modbus.max_block_registers:
            self.bad(path, f"{size} registers exceed modbus.max_block_registers")
        if count > 1 and stride is not None and stride < size:
            self.bad(f"{path}.stride", f"{stride} is less than the {size} registers of one {spec.type}")
        last = spec.address + (count - 1) * (stride or size) + size - 1 + self._registers.socket_reach(spec.scope)
        if last > 65535:
            self.bad(f"{path}.address", f"the value runs past address 65535 (to {last})")
        return True

    def _target(self, target: WriteTarget, path: str, *, numeric: bool) -> bool:
        """Check where a command goes; False if it cannot be written at all."""
        missing = [k for k in ("table", "address") if getattr(target, k) is None]
        for key in missing:
            self.bad(f"{path}.{key}", "required key is missing")
        if missing:
            return False
        assert target.table is not None
        if target.table in READ_ONLY_TABLES:
            writable = "'holding' (or 'coil' for a bit)"
            self.bad(f"{path}.table", f"{TABLE_NAMES[target.table]} are read-only: a write needs table = {writable}")
            return False
        coil = target.table == "coil"
        if target.type is None:
            if not coil:
                self.bad(f"{path}.type", "required for holding registers")
                return False
            target.type = "bool"
        dtype = TYPES.get(target.type)
        if dtype is None:
            self.bad(f"{path}.type", f"unknown type '{target.type}' (expected one of {', '.join(TYPES)})")
            return False
        if coil != (dtype.kind == "bool"):
            self.bad(f"{path}.type", "a coil takes 'bool'" if coil else "'bool' is only for coils")
            return False
        if dtype.kind == "string" or (numeric and coil):
            self.bad(f"{path}.type", f"this write takes a number, not a {target.type}")
            return False
        target.word_order = target.word_order or self.p.modbus.word_order
        allowed = (5, 15) if coil else (6, 16)
        if target.function is not None and target.function not in allowed:
            what = "coils" if coil else "holding registers"
            self.bad(f"{path}.function", f"{what} are written with function {' or '.join(map(str, allowed))}")
        if target.function == 6 and dtype.registers > 1:
            self.bad(f"{path}.function", f"FC6 writes one register; a {target.type} needs FC16 (one atomic write)")
        self._registers.add(path, target.register(), 1, None)
        return True

    def _encodable(self, spec: RegisterSpec, raw: int | float, path: str) -> None:
        try:
            encode_raw(spec, raw)
        except ValueError as exc:
            self.bad(path, str(exc))

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
