"""The overlap rule of profiles: every register has one meaning.

Two entries may read the very same register with the same type (a state register that is also a
fault source, a current-limit register read back as the offered current). Registers that overlap
partly, the same register decoded as different types, or one entry's registers reused by another
socket are mistakes, reported with both keys and the addresses.
"""

from __future__ import annotations

from dataclasses import dataclass

from adapters.modbus.codec import width
from adapters.modbus.profile_schema import TABLE_NAMES, ModbusSettings, RegisterSpec


@dataclass(frozen=True, slots=True)
class _Span:
    """Addresses one entry occupies."""

    key: str
    socket: int | None  # None: station scope
    unit_id: int
    table: str
    first: int
    last: int
    signature: tuple[object, ...]  # width, type, word order: equal spans with equal signatures may share


class RegisterMap:
    """Where every entry of a profile sits, for every socket; ``overlaps()`` lists the conflicts."""

    def __init__(self, modbus: ModbusSettings) -> None:
        self._modbus = modbus
        self._spans: list[_Span] = []

    def socket_reach(self, scope: str) -> int:
        """How far the last socket's addresses lie beyond socket 1's."""
        m = self._modbus
        return 0 if scope == "station" else (m.sockets - 1) * m.socket_address_stride

    def add(self, key: str, spec: RegisterSpec, count: int, stride: int | None) -> None:
        """Remember where ``spec`` (``count`` items ``stride`` apart) sits for every socket."""
        m = self._modbus
        size = width(spec)
        signature = (size, spec.type, spec.word_order)
        sockets: list[int | None] = [None] if spec.scope == "station" else list(range(1, m.sockets + 1))
        for socket in sockets:
            unit_id = m.unit_id
            base = spec.address
            if socket is not None:
                unit_id = m.socket_unit_ids[socket - 1] if len(m.socket_unit_ids) >= socket else m.unit_id
                base += (socket - 1) * m.socket_address_stride
            for item in range(count):
                first = base + item * (stride or size)
                self._spans.append(_Span(key, socket, unit_id, spec.table, first, first + size - 1, signature))

    def overlaps(self) -> list[tuple[str, str]]:
        """``(key, reason)`` for each pair of entries that share registers in a way that cannot be right."""
        problems: list[tuple[str, str]] = []
        reported: set[tuple[str, str]] = set()
        spans = sorted(self._spans, key=lambda s: (s.unit_id, s.table, s.first, s.last))
        for index, span in enumerate(spans):
            for other in spans[index + 1 :]:
                if (other.unit_id, other.table) != (span.unit_id, span.table) or other.first > span.last:
                    break
                same_key = other.key == span.key
                if same_key and other.socket == span.socket:
                    continue
                same_span = (other.first, other.last) == (span.first, span.last)
                if same_span and other.signature == span.signature and not same_key:  # one register, two meanings
                    continue
                first, second = sorted((span, other), key=lambda s: s.key)
                if (first.key, second.key) in reported:
                    continue
                reported.add((first.key, second.key))
                where = f" for socket {second.socket}" if second.socket and second.socket > 1 else ""
                reason = (
                    f"{TABLE_NAMES[second.table]} {_range(second)}{where} overlap {first.key} "
                    f"({_range(first)}); give each register one meaning, or read it with the same type and address"
                )
                problems.append((second.key, reason))
        return problems


def _range(span: _Span) -> str:
    return str(span.first) if span.first == span.last else f"{span.first}..{span.last}"
