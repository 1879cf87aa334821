"""What a register must hold: the ``equals`` / ``one_of`` / ``min`` / ``max`` test of a condition.

Two profile features ask the same question of a register. ``[[identify.match]]`` asks it to tell
a device family from others; ``valid_when`` on a value asks it to tell a meaningful reading from
a placeholder (Bender's SoC register means something only while "smart vehicle detected" reads 1).
Both live here so the loader, the engine, probe and the simulator agree on the answer.

``satisfied_by_zeros`` is the loader's test for *evidence*: a device that answers every read
with zeros (a bridge with nothing behind it, a device of another family) must not look like
a fit, so an identification needs at least one condition that zeros cannot satisfy.
"""

from __future__ import annotations

import math

from adapters.modbus.codec import Raw, decode_raw, encode_raw, from_quantity, to_quantity, width
from adapters.modbus.profile_schema import Condition


def holds(cond: Condition, raw: Raw | None) -> bool:
    """Does ``raw`` (the device's own value, None = not available) satisfy the condition?"""
    if raw is None:
        return False
    if cond.equals is not None and not _same(raw, cond.equals):
        return False
    if cond.one_of is not None and not any(_same(raw, option) for option in cond.one_of):
        return False
    if cond.min is not None or cond.max is not None:
        if isinstance(raw, str):
            return False
        value = to_quantity(cond, raw)
        assert value is not None
        if (cond.min is not None and value < cond.min) or (cond.max is not None and value > cond.max):
            return False
    return True


def holds_in(cond: Condition, words: list[int]) -> bool:
    """The condition applied to the words (or bits) read at its address; undecodable text fails."""
    try:
        return holds(cond, decode_raw(cond, words))
    except ValueError:
        return False


def satisfied_by_zeros(cond: Condition) -> bool:
    """Would a device answering 0 in every register (or bit) pass this condition?"""
    return holds_in(cond, [0] * max(width(cond), 1))


def satisfying_raw(cond: Condition) -> Raw:
    """A raw value that passes: ``equals``, the first of ``one_of``, or ``min`` (else ``max``, else 0)."""
    if cond.equals is not None:
        return cond.equals
    if cond.one_of:
        return cond.one_of[0]
    return from_quantity(cond, cond.min if cond.min is not None else cond.max or 0.0)


def failing_words(cond: Condition, current: list[int]) -> list[int]:
    """Words that fail the condition (the simulator's "no value" for a gated reading).

    Tries 0, 1, 2, ... and one past each bound, keeping the bits a field does not cover.
    """
    candidates: list[int | float] = list(range(4))
    for bound in (cond.min, cond.max):
        if bound is not None:
            raw = from_quantity(cond, bound)
            candidates += [raw - 1, raw + 1]
    for raw in candidates:
        try:
            words = encode_raw(cond, raw, current)
        except ValueError:
            continue
        if not holds_in(cond, words):
            return words
    raise ValueError(f"no raw value fails the condition on register {cond.address}")


def _same(raw: Raw, expected: object) -> bool:
    if isinstance(raw, str) or isinstance(expected, str):
        return raw == expected
    assert isinstance(expected, int | float)
    return math.isclose(float(raw), float(expected), rel_tol=1e-6, abs_tol=1e-9)
