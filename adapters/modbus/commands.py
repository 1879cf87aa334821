"""Commands as register writes: "limit socket 1 to 10 A", "stop charging", "feed the watchdog".

Pure: ``CommandPlanner`` turns a command into the ``RegisterWrite`` list the profile's
``[writes]`` and ``[watchdog]`` sections describe, and ``device.py`` sends them. Keeping this apart
from the I/O lets the rules be read (and tested) in one place:

- a limit below ``min_a`` means "no charging" (IEC 61851 has no pilot signal below 6 A): the
  register gets ``off_value``, or the enable register is switched off (``off = "disable"``);
- a limit is rounded *down* to the register's resolution, so the charger never exceeds it;
- the planner remembers the last limit and enable per socket, because enabling through the
  current limit, Alfen's validity-time watchdog and a reconnect all need to write them again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from adapters.modbus.codec import TYPES, encode_raw
from adapters.modbus.layout import DeviceMap
from adapters.modbus.profile import TABLE_NAMES, Table, WriteTarget
from gateway.domain.errors import CommandRejected

_EPSILON = 1e-9  # 9.9999999 A from float arithmetic still rounds down to 10 A, not 9 A


@dataclass(frozen=True, slots=True)
class RegisterWrite:
    """One write request: ``values`` are register words, or 0/1 for coils; ``function`` is the FC."""

    unit_id: int
    table: Table
    address: int
    values: tuple[int, ...]
    function: int
    purpose: str  # "current limit 10 A", for logs and error messages

    def __str__(self) -> str:
        shown = self.values[0] if len(self.values) == 1 else list(self.values)
        return f"{self.purpose}: {TABLE_NAMES[self.table]} {self.address} of unit {self.unit_id} = {shown}"


@dataclass(slots=True)
class _Wanted:
    """The last command per socket; None = never commanded (the charger keeps its own setting)."""

    limit_a: float | None = None
    enabled: bool | None = None


class CommandPlanner:
    """The register writes for current limit, enable and watchdog of one device, per its profile."""

    def __init__(self, device_map: DeviceMap, name: str) -> None:
        self._map = device_map
        self._profile = device_map.profile
        self._name = name
        self._wanted = {socket: _Wanted() for socket in range(1, device_map.sockets + 1)}
        self._counter = 0

    def wanted_limit_a(self, socket: int = 1) -> float | None:
        """The last current limit asked for on ``socket`` (A), None if never."""
        return self._socket(socket).limit_a

    def current_limit(self, amps: float, socket: int = 1) -> list[RegisterWrite]:
        """Writes that limit ``socket`` to ``amps`` amperes; below ``min_a`` charging pauses.

        Raises ``CommandRejected`` if the profile cannot limit the current or ``amps`` is not a
        number from 0 to ``max_a``.
        """
        limit = self._profile.writes.current_limit
        if limit is None:
            raise CommandRejected(f"{self._name}: profile '{self._profile.id}' cannot set a current limit")
        wanted = self._socket(socket)
        if not math.isfinite(amps) or amps < 0:
            raise CommandRejected(f"{self._name}: a current limit is 0 A or more, not {amps!r}")
        if amps > limit.max_a:
            raise CommandRejected(f"{self._name}: {amps:g} A is above the charger's maximum of {limit.max_a:g} A")
        wanted.limit_a = float(amps)
        return self._limit_writes(socket)

    def enable(self, on: bool, socket: int = 1) -> list[RegisterWrite]:
        """Writes that allow (``on``) or stop charging on ``socket``; raises ``CommandRejected`` if it cannot."""
        enable = self._profile.writes.enable
        if enable is None:
            raise CommandRejected(f"{self._name}: profile '{self._profile.id}' cannot switch charging on or off")
        self._socket(socket).enabled = on
        if enable.via == "current_limit":
            return self._limit_writes(socket)
        return [self._enable_write(on and not self._paused(socket), socket)]

    def watchdog_writes(self) -> list[RegisterWrite]:
        """What to write now to keep the charger's watchdog from expiring (may be empty)."""
        dog = self._profile.watchdog
        if dog is None:
            return []
        if dog.value == "current_limit":  # Alfen: the limit is only valid for a while; rewrite it
            return [w for s in self._wanted if self._commanded(s) for w in self._limit_writes(s)]
        if dog.value == "increment":
            bits = TYPES[dog.type or "u16"].registers * 16
            self._counter = (self._counter + 1) % (1 << bits)
            raw = self._counter
        else:
            raw = dog.value
        sockets = [1] if dog.scope == "station" else list(self._wanted)
        return [self._write(dog, s, raw, f"watchdog {raw}") for s in sockets]

    def restore_writes(self) -> list[RegisterWrite]:
        """Every command given so far, again: after the device was away it may have forgotten them."""
        writes: list[RegisterWrite] = []
        enable = self._profile.writes.enable
        for socket, wanted in self._wanted.items():
            if wanted.limit_a is not None or (enable is not None and enable.via == "current_limit" and wanted.enabled):
                writes += self._limit_writes(socket)
            if enable is not None and enable.via == "register" and wanted.enabled is not None:
                writes.append(self._enable_write(wanted.enabled and not self._paused(socket), socket))
        return list(dict.fromkeys(writes))  # off = "disable" may repeat an enable write

    # --- internals ---

    def _socket(self, socket: int) -> _Wanted:
        wanted = self._wanted.get(socket)
        if wanted is None:
            raise CommandRejected(f"{self._name}: no socket {socket} (sockets 1..{len(self._wanted)})")
        return wanted

    def _commanded(self, socket: int) -> bool:
        wanted = self._wanted[socket]
        return wanted.limit_a is not None or wanted.enabled is not None

    def _paused(self, socket: int) -> bool:
        limit = self._profile.writes.current_limit
        amps = self._wanted[socket].limit_a
        return limit is not None and limit.off == "disable" and amps is not None and amps < limit.min_a

    def _limit_writes(self, socket: int) -> list[RegisterWrite]:
        limit = self._profile.writes.current_limit
        assert limit is not None and limit.resolution_a is not None  # the loader fills resolution_a
        enable = self._profile.writes.enable
        wanted = self._wanted[socket]
        allowed = wanted.enabled is not False
        amps = wanted.limit_a
        if enable is not None and enable.via == "current_limit":
            if not allowed:
                return [self._write(limit, socket, limit.off_value, "charging off (current limit)")]
            if amps is None:
                amps = limit.max_a  # enabled before any limit was set: the charger's own maximum
        if amps is None:
            return []
        if amps < limit.min_a:
            if limit.off == "zero":
                return [self._write(limit, socket, limit.off_value, f"current limit {amps:g} A: pause")]
            return [self._enable_write(False, socket, f"current limit {amps:g} A: pause")]
        steps = math.floor(amps / limit.resolution_a + _EPSILON)
        float_register = TYPES[limit.type or "u16"].kind == "float"
        raw: int | float = round(steps * limit.resolution_a, 6) if float_register else steps
        applied = steps * limit.resolution_a
        writes = [self._write(limit, socket, raw, f"current limit {applied:g} A")]
        if limit.off == "disable":
            writes.append(self._enable_write(allowed, socket))
        return writes

    def _enable_write(self, on: bool, socket: int, purpose: str = "") -> RegisterWrite:
        enable = self._profile.writes.enable
        assert enable is not None
        return self._write(
            enable, socket, enable.on if on else enable.off, purpose or f"charging {'on' if on else 'off'}"
        )

    def _write(self, target: WriteTarget, socket: int, raw: int | float, purpose: str) -> RegisterWrite:
        spec = target.register()
        loc = self._map.locations(spec, socket)[0]
        try:
            words = encode_raw(spec, raw)
        except ValueError as exc:  # a value the register cannot hold: the device could not take it either
            raise CommandRejected(f"{self._name}: {purpose}: {exc}") from exc
        if target.function is not None:
            function = target.function
        elif spec.table == "coil":
            function = 5
        else:
            function = 6 if len(words) == 1 else 16
        return RegisterWrite(loc.unit_id, spec.table, loc.address, tuple(int(w) for w in words), function, purpose)
