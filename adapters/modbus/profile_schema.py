"""The shape of a profile file: one pydantic model per TOML table, and the roles a value can feed.

Pydantic checks what a single key can get wrong (unknown keys, wrong types, ranges); the rules
that span several keys (a scale factor that must exist, overlapping registers, a write to a
read-only table) live in ``profile_checks.py``. Every key is documented in ``docs/profiles.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from gateway.domain.model import VehicleState

Table = Literal["coil", "discrete", "input", "holding"]
WordOrder = Literal["big", "little"]
Scope = Literal["socket", "station"]
BIT_TABLES = ("coil", "discrete")
READ_ONLY_TABLES = ("input", "discrete")
TABLE_NAMES = {
    "coil": "coils",
    "discrete": "discrete inputs",
    "input": "input registers",
    "holding": "holding registers",
}
NO_FAULT = "none"  # the fault "kind" of a code that means "no fault"
ANY_CODE = "*"  # map/codes key matching every code not listed


@dataclass(frozen=True, slots=True)
class Role:
    """What a ``[values.<role>]`` entry feeds: a ``Reading`` field, the vehicle state or a flag."""

    name: str
    unit: str  # the unit the scaled value must be in; "" for states and flags
    kind: Literal["quantity", "energy", "state", "flag", "text"]
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
        Role("id_tag", "", "text", "RFID card the charger read (a string); empty = no card", charger_only=True),
    )
}
"""Every role a profile may map, with its unit: the key of ``[values.<role>]`` must be one of these."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterSpec(_Strict):
    """Where one value lives (table, address) and how its words become the device's raw value.

    The quantity in the role's unit is ``sign * raw * scale * 10^(exponent + sf) + offset`` where
    ``sf`` is the value of the ``scale_factor`` register (SunSpec) and ``sign`` is -1 with ``invert``.
    """

    table: Table
    address: int = Field(ge=0, le=65535)
    type: str | None = None  # a key of codec.TYPES; defaults to "bool" for coil/discrete
    length: int | None = Field(default=None, ge=1, le=125)  # registers of a string
    word_order: WordOrder | None = None  # None = the profile's [modbus] word_order
    byte: Literal["high", "low"] | None = None
    shift: int = Field(default=0, ge=0, le=63)
    mask: int | None = Field(default=None, ge=1)
    ascii: bool = False
    sentinel: list[int] | None = None  # None = the [modbus.sentinels] default of the type
    scale: float = 1.0
    exponent: int = Field(default=0, ge=-12, le=12)  # fixed power of ten: value x 10^exponent
    offset: float = 0.0
    invert: bool = False  # negate (a meter that counts export as positive power)
    scale_factor: str | None = None  # name of a [scale_factors.<name>] register: value x 10^sf
    scope: Scope = "socket"  # "station": one register for the whole device (unit_id, no socket offset)


class Condition(RegisterSpec):
    """A register and what it must hold: ``equals``, ``one_of`` or a ``min``/``max`` range.

    Used by ``[[identify.match]]`` (does the device fit?) and by a value's ``valid_when`` (does the
    reading mean anything now?); ``conditions.py`` evaluates it.
    """

    equals: int | float | str | None = None
    one_of: list[int | str] | None = None
    min: float | None = None  # compared with the scaled value (raw * scale ...)
    max: float | None = None


class ValueSpec(RegisterSpec):
    """A ``[values.<role>]`` entry; ``phases`` values ``stride`` registers apart for per-phase roles.

    ``valid_when`` declares when the register means nothing although it holds a plain number (a
    vendor that shows 0 % SoC for "no vehicle data"): every condition must hold, else the value is
    unknown. A sentinel says the same for one raw value; this says it for a state of the device.
    """

    phases: int = Field(default=1, ge=1, le=3)
    stride: int | None = Field(default=None, ge=1)
    map: dict[str, VehicleState] | None = None
    optional: bool = False  # the device may answer "illegal address": then the value is unavailable
    valid_when: list[Condition] | None = None  # all must hold, else the value reads as unknown


class FaultSpec(RegisterSpec):
    """A ``[faults.<name>]`` source: ``count`` code registers ``stride`` apart, or one bit field."""

    count: int = Field(default=1, ge=1, le=32)
    stride: int | None = Field(default=None, ge=1)
    codes: dict[str, str] | None = None  # raw code -> FaultKind value or "none"
    bits: dict[str, str] | None = None  # bit number -> FaultKind value
    optional: bool = False


class ScaleFactorSpec(RegisterSpec):
    """A ``[scale_factors.<name>]`` register (SunSpec ``*_SF``): a signed power of ten shared by a group."""

    type: str | None = "i16"


class WriteTarget(_Strict):
    """Where a command is written. ``function`` forces FC6 or FC16 (registers), FC5 or FC15 (coils)."""

    table: Table | None = None
    address: int | None = Field(default=None, ge=0, le=65535)
    type: str | None = None  # defaults to "bool" for coils
    word_order: WordOrder | None = None
    scope: Scope = "socket"
    function: Literal[5, 6, 15, 16] | None = None  # None: 5 for a coil, 6 for one register, 16 for more

    def register(self) -> RegisterSpec:
        """The target as a RegisterSpec, for the codec (valid once the loader has checked it)."""
        assert self.table is not None and self.address is not None
        return RegisterSpec(
            table=self.table,
            address=self.address,
            type=self.type,
            word_order=self.word_order,
            sentinel=[],
            scope=self.scope,
        )


class CurrentLimitWrite(WriteTarget):
    """``[writes.current_limit]``: the register that limits the charging current, in amperes.

    Integer registers hold ``amps / resolution_a`` (1 = A, 0.1 = 0.1 A, 0.001 = mA); float
    registers hold amperes, rounded down to ``resolution_a``. Below ``min_a`` (IEC 61851: 6 A) the
    charger cannot charge: ``off = "zero"`` writes ``off_value`` to this register, ``off =
    "disable"`` switches charging off through ``[writes.enable]`` instead.
    """

    resolution_a: float | None = Field(default=None, gt=0)  # None: 1 A (integers), 0.1 A (floats)
    min_a: float = Field(default=6.0, ge=0)
    max_a: float = Field(default=32.0, gt=0)
    off: Literal["zero", "disable"] = "zero"
    off_value: int = 0  # raw value that means "no charging" with off = "zero"


class EnableWrite(WriteTarget):
    """``[writes.enable]``: a coil or register with ``on``/``off`` raw values, or ``via = "current_limit"``."""

    via: Literal["register", "current_limit"] = "register"
    on: int = 1
    off: int = 0


class Writes(_Strict):
    """``[writes]``: the commands a charger takes. Both are optional."""

    current_limit: CurrentLimitWrite | None = None
    enable: EnableWrite | None = None


class WatchdogSpec(WriteTarget):
    """``[watchdog]``: a register the master must keep writing, or the charger falls back to safe current.

    ``value``: a raw number to write each time, ``"increment"`` (a counter that wraps) or
    ``"current_limit"`` (rewrite the current limit itself, as Alfen's validity time needs; no
    register keys then). The device gives up after ``timeout_s`` seconds, or after the time in
    ``timeout_register`` (``raw * scale`` seconds; ``timeout_s`` is the fallback when it reads 0).
    The engine writes every ``period_s`` (default: half the timeout).
    """

    value: int | Literal["increment", "current_limit"] = 1
    timeout_s: float | None = Field(default=None, gt=0)
    timeout_register: RegisterSpec | None = None
    period_s: float | None = Field(default=None, gt=0)
    safe_current_a: float = Field(default=0.0, ge=0)  # what the charger falls back to (simulator, docs)


class IdentifyMatch(Condition):
    """One ``[[identify.match]]``: a register whose raw value must equal, be one of, or lie in a range."""


class IdentifySpec(_Strict):
    """``[identify]``: what ``ocpp-gateway probe`` reads to tell this device family from others.

    At least one match must be positive evidence, a condition a device answering zeros fails
    (checked by the loader): "two registers read 0" is what any silent bridge says.
    """

    match: list[IdentifyMatch] = Field(min_length=1)


class SerialSettings(_Strict):
    """The device's usual RS-485 settings (a default for the device config, which may override them)."""

    baudrate: int = Field(default=9600, gt=0)
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1


class ModbusSettings(_Strict):
    """How to talk to the device: defaults for the whole file and bus behaviour."""

    unit_id: int = Field(default=1, ge=0, le=255)  # the station's unit id
    word_order: WordOrder = "big"
    max_block_registers: int = Field(default=125, ge=1, le=125)
    max_gap_registers: int = Field(default=0, ge=0, le=124)
    request_delay_ms: int = Field(default=0, ge=0, le=10_000)
    sockets: int = Field(default=1, ge=1, le=64)  # charging sockets one connection can serve
    socket_address_stride: int = Field(default=0, ge=0)  # socket n reads address + (n-1) * stride
    socket_unit_ids: list[int] = Field(default_factory=list)  # socket n uses unit id [n-1]
    sentinels: dict[str, list[int]] = Field(default_factory=dict)  # type -> "not available" raw values
    serial: SerialSettings | None = None


class SimulatorSettings(_Strict):
    """Optional: what the simulator shows before a test sets anything (role -> value in its unit)."""

    initial: dict[str, Any] = Field(default_factory=dict)
    scale_factors: dict[str, int] = Field(default_factory=dict)  # [scale_factors.<name>] -> exponent


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
    scale_factors: dict[str, ScaleFactorSpec] = Field(default_factory=dict)
    writes: Writes = Field(default_factory=Writes)
    watchdog: WatchdogSpec | None = None
    identify: IdentifySpec | None = None
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
