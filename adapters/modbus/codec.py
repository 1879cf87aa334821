"""Register words <-> values, for one profile entry; pure functions, no connection needed.

The word-level conversion is pymodbus' own (``ModbusClientMixin.convert_from_registers`` /
``convert_to_registers``), so byte order inside a word is always big-endian as Modbus defines it
and only the *word* order varies by device. On top of that this module adds what devices do to
their numbers: sentinels for "not available", a byte or bit field cut out of a register, ASCII
status letters, and a linear ``raw * scale + offset`` conversion into the role's unit.

Decoding is split in two steps so the same raw code can feed an enum map (vehicle state, fault
codes) or a quantity: ``decode_raw`` gives the device's own value, ``to_quantity`` the unit value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pymodbus.client.mixin import ModbusClientMixin

if TYPE_CHECKING:
    from adapters.modbus.profile_schema import RegisterSpec

_DT = ModbusClientMixin.DATATYPE

Raw = int | float | str | bool
"""A device's own value: an integer code or count, a float, a string, a status letter or a bit."""


@dataclass(frozen=True, slots=True)
class DataType:
    """One ``type`` a profile may name: its width and how pymodbus converts it."""

    name: str
    registers: int  # width in 16-bit registers; 0 = given by ``length`` (strings); bits take 1 address
    kind: Literal["int", "float", "string", "bool"]
    datatype: ModbusClientMixin.DATATYPE | None  # None for single bits (coils, discrete inputs)
    unsigned: ModbusClientMixin.DATATYPE | None = None  # same width, unsigned: the raw bit pattern


TYPES: dict[str, DataType] = {
    t.name: t
    for t in (
        DataType("u16", 1, "int", _DT.UINT16, _DT.UINT16),
        DataType("i16", 1, "int", _DT.INT16, _DT.UINT16),
        DataType("u32", 2, "int", _DT.UINT32, _DT.UINT32),
        DataType("i32", 2, "int", _DT.INT32, _DT.UINT32),
        DataType("u64", 4, "int", _DT.UINT64, _DT.UINT64),
        DataType("i64", 4, "int", _DT.INT64, _DT.UINT64),
        DataType("f32", 2, "float", _DT.FLOAT32, _DT.UINT32),
        DataType("f64", 4, "float", _DT.FLOAT64, _DT.UINT64),
        DataType("string", 0, "string", _DT.STRING),
        DataType("bool", 1, "bool", None),
    )
}
"""The data-type table that drives validation, decoding and encoding (as Home Assistant's does)."""


def _dtype(spec: RegisterSpec) -> DataType:
    return TYPES[spec.type or "bool"]  # the loader resolves the type; "bool" is its default for bit tables


def _order(spec: RegisterSpec) -> Literal["big", "little"]:
    return spec.word_order or "big"  # the loader resolves it from [modbus] word_order


def width(spec: RegisterSpec) -> int:
    """How many addresses (registers, or bits for coil/discrete) one value occupies."""
    dtype = _dtype(spec)
    return (spec.length or 0) if dtype.kind == "string" else dtype.registers


def field(spec: RegisterSpec) -> tuple[int, int] | None:
    """``(shift, mask)`` of the byte or bit field the spec cuts out of the register, or None."""
    if spec.byte == "high":
        return 8, 0xFF
    if spec.byte == "low":
        return 0, 0xFF
    if spec.mask is not None or spec.shift:
        return spec.shift, spec.mask if spec.mask is not None else ~0
    return None


def decode_raw(spec: RegisterSpec, words: Sequence[int] | Sequence[bool]) -> Raw | None:
    """The device's own value from the words (or bits) at the spec's address; None = not available.

    Sentinels are compared with the whole value before a field is cut out, both as the unsigned bit
    pattern (so ``0xFFFFFFFF`` or ``0x8000`` match) and as the typed value (so ``-1`` matches).
    Floats that are NaN or infinite are always "not available".
    """
    dtype = _dtype(spec)
    if dtype.kind == "bool":
        return bool(words[0])
    assert dtype.datatype is not None
    regs = [int(w) for w in words]
    value = ModbusClientMixin.convert_from_registers(regs, dtype.datatype, word_order=_order(spec))
    if dtype.kind == "string":
        assert isinstance(value, str)
        return value.rstrip("\x00 ") or None
    assert isinstance(value, int | float)
    if dtype.kind == "float" and not math.isfinite(value):
        return None
    if spec.sentinel:
        assert dtype.unsigned is not None
        pattern = ModbusClientMixin.convert_from_registers(regs, dtype.unsigned, word_order=_order(spec))
        if value in spec.sentinel or pattern in spec.sentinel:
            return None
    cut = field(spec)
    if cut is not None:
        shift, mask = cut
        if dtype.kind != "int":
            raise ValueError(f"cannot cut a bit field out of a {spec.type}")
        value = (int(value) >> shift) & mask
    if spec.ascii:
        return chr(int(value)) if value else None
    return value


def to_quantity(spec: RegisterSpec, raw: Raw | None, sf: int = 0) -> float | None:
    """The value in the role's unit: ``sign * raw * scale * 10^(exponent + sf) + offset``.

    ``sf`` is the value of the spec's scale-factor register (SunSpec ``*_SF``), 0 without one;
    ``sign`` is -1 when the spec says ``invert``. Powers of ten below zero divide, so a register in
    hundredths gives back exactly the decimal the device meant (``3175`` at ``-2`` is ``31.75``).
    """
    if raw is None:
        return None
    if isinstance(raw, str):
        raise ValueError(f"a {spec.type} text value {raw!r} is not a number")
    power = spec.exponent + sf
    value = float(raw) * spec.scale
    value = value * 10**power if power >= 0 else value / 10**-power
    return (-value if spec.invert else value) + spec.offset


def from_quantity(spec: RegisterSpec, value: float, sf: int = 0) -> int | float:
    """The inverse of ``to_quantity``: the raw number that reads back as ``value`` (rounded for ints)."""
    power = spec.exponent + sf
    raw = (float(value) - spec.offset) * (-1 if spec.invert else 1) / spec.scale
    raw = raw / 10**power if power >= 0 else raw * 10**-power
    return float(raw) if _dtype(spec).kind == "float" else round(raw)


def encode_raw(spec: RegisterSpec, raw: Raw, current: Sequence[int] | Sequence[bool] = ()) -> list[int]:
    """Words (or ``[0|1]`` for a bit) that decode to ``raw``; the inverse of ``decode_raw``.

    When the spec cuts a field out of the register, the other bits are kept from ``current`` (the
    words there now), so two fields sharing a register do not overwrite each other.
    """
    dtype = _dtype(spec)
    if dtype.kind == "bool":
        return [1 if raw else 0]
    assert dtype.datatype is not None
    if dtype.kind == "string":
        regs = ModbusClientMixin.convert_to_registers(str(raw), dtype.datatype, word_order=_order(spec))
        size = width(spec)
        if len(regs) > size:
            raise ValueError(f"text {raw!r} does not fit into {size} registers")
        padding = [0] * (size - len(regs))
        # pymodbus reverses the words of a little-endian string as a whole, so pad on the far side
        return padding + regs if _order(spec) == "little" else regs + padding
    if spec.ascii:
        if not isinstance(raw, str) or len(raw) != 1:
            raise ValueError(f"an ASCII field holds one character, not {raw!r}")
        raw = ord(raw)
    cut = field(spec)
    if cut is None:
        return _number_to_words(spec, dtype, raw)
    assert dtype.unsigned is not None
    shift, mask = cut
    bits = dtype.registers * 16
    mask &= (1 << bits) - 1
    old = 0
    if current:
        old_value = ModbusClientMixin.convert_from_registers(
            [int(w) for w in current], dtype.unsigned, word_order=_order(spec)
        )
        old = int(old_value)  # type: ignore[arg-type]
    new = (old & ~(mask << shift)) | ((int(raw) & mask) << shift)
    return ModbusClientMixin.convert_to_registers(new & ((1 << bits) - 1), dtype.unsigned, _order(spec))


def encode_unavailable(spec: RegisterSpec) -> list[int]:
    """Words a device shows for "no value": the first sentinel (as typed value or bit pattern), or NaN."""
    dtype = _dtype(spec)
    if spec.sentinel and dtype.datatype is not None and dtype.unsigned is not None:
        value = spec.sentinel[0]
        as_type = dtype.datatype if value < 0 else dtype.unsigned  # negative: typed value; else: bit pattern
        return ModbusClientMixin.convert_to_registers(value, as_type, _order(spec))
    if dtype.kind == "float":
        return ModbusClientMixin.convert_to_registers(math.nan, dtype.datatype, _order(spec))  # type: ignore[arg-type]
    raise ValueError(f"a {spec.type} without a sentinel cannot show 'not available'")


def _number_to_words(spec: RegisterSpec, dtype: DataType, raw: Raw) -> list[int]:
    """Encode a plain number, refusing values the register cannot hold instead of wrapping them."""
    assert dtype.datatype is not None
    if dtype.kind == "float":
        return ModbusClientMixin.convert_to_registers(float(raw), dtype.datatype, _order(spec))
    if isinstance(raw, str) or (isinstance(raw, float) and not raw.is_integer()):
        raise ValueError(f"{spec.type} holds whole numbers, not {raw!r}")
    number = int(raw)
    bits = dtype.registers * 16
    low, high = (0, (1 << bits) - 1) if dtype.datatype is dtype.unsigned else (-(1 << bits - 1), (1 << bits - 1) - 1)
    if not low <= number <= high:
        raise ValueError(f"{number} does not fit into {spec.type} ({low}..{high})")
    return ModbusClientMixin.convert_to_registers(number, dtype.datatype, _order(spec))
