"""The register codec: word order, sentinels, fields, ASCII letters, scale. No sockets."""

from __future__ import annotations

import math

import pytest

from adapters.modbus.codec import (
    decode_raw,
    encode_raw,
    encode_unavailable,
    from_quantity,
    to_quantity,
    width,
)
from adapters.modbus.profile import RegisterSpec


def spec(**keys: object) -> RegisterSpec:
    """A register spec as the profile loader leaves it (word order resolved)."""
    keys = {"table": "holding", "address": 0, "word_order": "big", **keys}
    return RegisterSpec.model_validate(keys)


@pytest.mark.parametrize(
    ("type_", "order", "words", "value"),
    [
        ("u16", "big", [0xFFFE], 0xFFFE),
        ("i16", "big", [0xFFFE], -2),
        ("u32", "big", [0x0001, 0x0002], 0x0001_0002),
        ("u32", "little", [0x0001, 0x0002], 0x0002_0001),
        ("i32", "little", [0xFF38, 0xFFFF], -200),  # Phoenix: low word first
        ("u64", "big", [0, 0, 0x0001, 0x86A0], 100_000),
        ("u64", "little", [0x86A0, 0x0001, 0, 0], 100_000),
        ("i64", "big", [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF], -1),
        ("f32", "big", [0x4366, 0x0000], 230.0),  # Eastron: high word first
        ("f32", "little", [0x0000, 0x4366], 230.0),
        ("f64", "big", [0x4059, 0, 0, 0], 100.0),
    ],
)
def test_word_order_and_types(type_: str, order: str, words: list[int], value: float) -> None:
    s = spec(type=type_, word_order=order)
    assert decode_raw(s, words) == value
    assert encode_raw(s, value) == words


def test_width_follows_the_type_and_string_length() -> None:
    assert width(spec(type="u16")) == 1
    assert width(spec(type="f64")) == 4
    assert width(spec(type="string", length=5)) == 5
    assert width(spec(table="coil", type="bool")) == 1


def test_unsigned_sentinel_reads_as_not_available() -> None:
    s = spec(type="u32", sentinel=[0xFFFFFFFF])  # Bender power while the meter is invalid
    assert decode_raw(s, [0xFFFF, 0xFFFF]) is None
    assert decode_raw(s, [0xFFFF, 0xFFFE]) == 0xFFFFFFFE


def test_signed_sentinel_matches_bit_pattern_or_value() -> None:
    assert decode_raw(spec(type="i16", sentinel=[0x8000]), [0x8000]) is None  # SunSpec "not implemented"
    assert decode_raw(spec(type="i16", sentinel=[-32768]), [0x8000]) is None
    assert decode_raw(spec(type="i16", sentinel=[0x8000]), [0x8001]) == -32767


@pytest.mark.parametrize("words", [[0x7FC0, 0x0000], [0x7F80, 0x0000], [0xFF80, 0x0000]])
def test_float_nan_and_infinity_read_as_not_available(words: list[int]) -> None:
    assert decode_raw(spec(type="f32"), words) is None


def test_unavailable_encodes_the_first_sentinel_or_nan() -> None:
    assert encode_unavailable(spec(type="u32", sentinel=[0xFFFFFFFF])) == [0xFFFF, 0xFFFF]
    assert encode_unavailable(spec(type="i16", sentinel=[-32768])) == [0x8000]
    assert decode_raw(spec(type="f32"), encode_unavailable(spec(type="f32"))) is None
    with pytest.raises(ValueError, match="sentinel"):
        encode_unavailable(spec(type="u16"))


def test_scale_and_offset_convert_into_the_role_unit() -> None:
    milliamps = spec(type="u32", scale=0.001)
    assert to_quantity(milliamps, 16_000) == pytest.approx(16.0)
    assert from_quantity(milliamps, 16.0) == 16_000
    assert from_quantity(milliamps, 6.0004) == 6_000  # rounded to what the register can hold
    kilowatt_hours = spec(type="f32", scale=1000)
    assert to_quantity(kilowatt_hours, 12.5) == 12_500.0
    assert from_quantity(kilowatt_hours, 12_500) == pytest.approx(12.5)
    kelvin = spec(type="i16", scale=0.1, offset=-273.15)
    assert to_quantity(kelvin, 2981) == pytest.approx(24.95)
    assert from_quantity(kelvin, 24.95) == 2981
    assert to_quantity(milliamps, None) is None


def test_ascii_letter_in_low_byte() -> None:
    s = spec(type="u16", byte="low", ascii=True)  # Phoenix EV-ETH IR 100
    assert decode_raw(s, [0x0043]) == "C"
    assert decode_raw(s, [0x5543]) == "C"  # the other byte does not matter
    assert decode_raw(s, [0x0000]) is None
    assert encode_raw(s, "B", [0x5500]) == [0x5542]  # keeps the other byte


def test_ascii_letter_in_high_byte() -> None:
    s = spec(type="u16", byte="high", ascii=True)  # Phoenix CHARX +299
    assert decode_raw(s, [0x4300]) == "C"
    assert encode_raw(s, "A", [0x0012]) == [0x4112]


def test_shift_and_mask_cut_a_field_out_of_a_u32() -> None:
    s = spec(type="u32", shift=8, mask=0x7F)  # ABB Terra charging state: byte[2] & 0x7F
    assert decode_raw(s, [0x0000, 0x0400]) == 4
    assert decode_raw(s, [0x1234, 0x84FF]) == 4  # bit 7 and the other bytes are ignored
    assert encode_raw(s, 2, [0x1234, 0x84FF]) == [0x1234, 0x82FF]


def test_mask_without_shift() -> None:
    s = spec(type="u16", mask=0x000F)
    assert decode_raw(s, [0xABC5]) == 5


def test_strings_are_padded_and_trimmed() -> None:
    s = spec(type="string", length=5)
    words = encode_raw(s, "C2")
    assert len(words) == 5
    assert decode_raw(s, words) == "C2"
    assert decode_raw(s, [0, 0, 0, 0, 0]) is None
    with pytest.raises(ValueError, match="does not fit"):
        encode_raw(s, "far too long a text")


def test_bits_decode_to_bool() -> None:
    s = spec(table="coil", type="bool")
    assert decode_raw(s, [True]) is True
    assert decode_raw(s, [0]) is False
    assert encode_raw(s, True) == [1]


def test_encoding_refuses_values_the_register_cannot_hold() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        encode_raw(spec(type="u16"), 70_000)
    with pytest.raises(ValueError, match="does not fit"):
        encode_raw(spec(type="u32"), -1)
    with pytest.raises(ValueError, match="whole numbers"):
        encode_raw(spec(type="i32"), 1.5)


def test_float_round_trip_keeps_single_precision() -> None:
    s = spec(type="f32", word_order="little")
    assert math.isclose(float(decode_raw(s, encode_raw(s, 49.98))), 49.98, rel_tol=1e-6)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("keys", "raw", "sf", "value"),
    [
        ({"type": "i16"}, 3175, -2, 31.75),  # SunSpec A with A_SF = -2: exactly the decimal meant
        ({"type": "u32"}, 12, 3, 12_000.0),
        ({"type": "i16", "exponent": -1}, 2305, 0, 230.5),
        ({"type": "i16", "exponent": -1}, 2305, -1, 23.05),  # fixed exponent and scale factor add up
        ({"type": "i32", "invert": True, "scale": 0.1}, 1000, 0, -100.0),
        ({"type": "u16", "scale": 0.1, "offset": -40}, 650, 0, 25.0),
    ],
)
def test_quantities_with_exponents_scale_factors_and_inversion(
    keys: dict[str, object], raw: int, sf: int, value: float
) -> None:
    s = spec(**keys)
    assert to_quantity(s, raw, sf) == pytest.approx(value, rel=1e-12)
    assert from_quantity(s, value, sf) == raw
