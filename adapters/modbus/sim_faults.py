"""The simulator's fault registers: show a fault the way the profile encodes it, read it back, clear it.

Apart from ``simulator.py`` (the server and the car) because it answers one question for tests
and the demo: which raw words make the engine see fault X on this device. Everything comes from
the profile's fault sources (codes or bits), so a profile that cannot show a fault kind it
claims is found here.
"""

from __future__ import annotations

from adapters.modbus.codec import Raw
from adapters.modbus.layout import DeviceMap, RegisterImage, fault_raw
from adapters.modbus.profile import NO_FAULT, Profile
from gateway.domain.model import Fault, FaultKind


class SimFaults:
    """The fault sources of one simulated device (its ``profile``, laid out by ``map`` over ``image``)."""

    def __init__(self, profile: Profile, map: DeviceMap, image: RegisterImage) -> None:
        self.profile = profile
        self._map = map
        self._image = image

    def shown(self, socket: int) -> list[Fault]:
        """The faults the registers show now."""
        return [f for name in self.profile.faults for f in self._map.read_faults(self._image, name, socket)]

    def show(self, kind_or_code: FaultKind | str | int, socket: int) -> None:
        """Show a fault: a ``FaultKind`` (the first code the profile maps to it) or a raw vendor code."""
        for name, spec in self.profile.faults.items():
            if isinstance(kind_or_code, int):
                if spec.codes is None:
                    continue
                raw: Raw | None = kind_or_code
            else:
                kind = FaultKind(kind_or_code).value
                if spec.bits is not None:
                    bits = [int(b) for b, k in spec.bits.items() if k == kind]
                    if bits:
                        current = int(self._map.read_fault_raw(self._image, name, 0, socket) or 0)
                        self._map.write_fault_raw(self._image, name, 0, current | 1 << bits[0], socket)
                        return
                    continue
                raw = fault_raw(spec, kind)
            if raw is None:
                continue
            self._map.write_fault_raw(self._image, name, self._free_slot(name, socket), raw, socket)
            return
        raise ValueError(f"profile '{self.profile.id}' has no fault source for {kind_or_code!r}")

    def clear(self, socket: int) -> None:
        """Every fault source shows "no fault" (its first ``none`` code, or all bits clear)."""
        for name, spec in self.profile.faults.items():
            none = fault_raw(spec, NO_FAULT) if spec.codes is not None else 0
            for index in range(spec.count):
                self._map.write_fault_raw(self._image, name, index, none if none is not None else 0, socket)

    def _free_slot(self, name: str, socket: int) -> int:
        """The first register of a multi-register fault source that shows no fault (else the last)."""
        spec = self.profile.faults[name]
        none = fault_raw(spec, NO_FAULT)
        for index in range(spec.count):
            if self._map.read_fault_raw(self._image, name, index, socket) in (none, None):
                return index
        return spec.count - 1
