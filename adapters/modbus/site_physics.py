"""The electrics of a simulated site: cars that follow their chargers' offers, and the grid meter.

For load-management tests and the demo. A ``ModbusSimulator`` of a charger on its own lets its car
follow every new offer at once; a real car takes a second or two, may take less than offered (its
own maximum) and may draw on one phase only. ``SitePhysics`` moves each car's current towards
what its charger offers after such a delay, makes the charger simulators show it (current per
phase, power, energy), and sets the grid meter simulator's current per phase to what the building
draws (set by the caller, e.g. a step from 10 A to 30 A) plus the chargers' currents on the grid
phases they are wired to (a single-phase charger on L2 adds to L2 only).

Call ``step(now_s)`` yourself (deterministic), or ``run()`` it as a task: it steps every
``step_s`` seconds of the event loop's time. A charger simulator that was stopped (a charger
lost on the network) goes on as before: its car keeps following the last offer it got.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from adapters.modbus.simulator import ModbusSimulator
from gateway.domain.phase_limits import ALL_PHASES, Phase

STRAIGHT = (Phase.L1, Phase.L2, Phase.L3)  # a three-phase charger wired L1-L1, L2-L2, L3-L3
NOMINAL_VOLTAGE_V = 230.0


@dataclass(frozen=True, slots=True)
class Car:
    """A vehicle: it draws up to ``max_a`` per phase on its first ``phases`` phases (1: a single-phase
    car, on its charger's first phase), following its charger's offer ``delay_s`` seconds late."""

    max_a: float = 32.0
    phases: int = 3
    delay_s: float = 1.5

    def __post_init__(self) -> None:
        if not 1 <= self.phases <= 3 or self.max_a < 0 or self.delay_s < 0:
            raise ValueError(f"not a car: {self}")


@dataclass(slots=True)
class _Slot:
    """One charger socket on the site, its wiring and the car plugged in (if any)."""

    sim: ModbusSimulator
    socket: int
    grid_phases: tuple[Phase, ...]
    car: Car | None = None
    targets: deque[tuple[float, float]] = field(default_factory=deque)  # (since, what the car aims at)
    current_a: float = 0.0  # what the car draws now on each of its phases


class SitePhysics:
    """Cars that follow their chargers with a delay, and a grid meter that adds them to the building."""

    def __init__(self, grid: ModbusSimulator, *, step_s: float = 0.2, building_a: Sequence[float] = (0, 0, 0)) -> None:
        self.grid = grid
        self.step_s = step_s
        self.building_a: tuple[float, float, float] = _three(building_a)
        self._slots: dict[str, _Slot] = {}
        self._last_s: float | None = None
        self.peak_a: tuple[float, float, float] = self.grid_a()  # the most per phase since reset_peak()

    # --- the site ---

    def add_charger(
        self, name: str, sim: ModbusSimulator, *, socket: int = 1, grid_phases: Sequence[Phase] = STRAIGHT
    ) -> None:
        """A charger socket whose phases (L1 first) are wired to ``grid_phases``: ``(Phase.L2,)`` for a
        single-phase charger on L2, ``(L2, L3, L1)`` for a rotated three-phase one."""
        if not grid_phases or len(set(grid_phases)) != len(grid_phases):
            raise ValueError(f"{name}: grid phases {grid_phases} are not distinct phases")
        self._slots[name] = _Slot(sim, socket, tuple(grid_phases))

    def set_building(self, building_a: Sequence[float] | float) -> None:
        """What the building draws per phase from now on (one number: the same on every phase)."""
        self.building_a = _three([building_a] * 3 if isinstance(building_a, int | float) else building_a)
        self._show_grid()

    def arrive(self, name: str, car: Car) -> None:
        """``car`` plugs into charger ``name`` and wants to charge (it draws once it is offered current)."""
        slot = self._slots[name]
        slot.car, slot.current_a = car, 0.0
        slot.targets.clear()
        slot.sim.plug_in(slot.socket)
        slot.sim.start_charging(car.max_a * car.phases * NOMINAL_VOLTAGE_V, slot.socket)
        slot.sim.draw([0.0] * car.phases, slot.socket)

    def change_car(self, name: str, car: Car) -> None:
        """The car on ``name`` changes what it takes (e.g. its battery warmed up: it takes more)."""
        slot = self._slots[name]
        if slot.car is None:
            raise ValueError(f"no car on {name}")
        slot.car = car

    def leave(self, name: str) -> None:
        slot = self._slots[name]
        slot.car, slot.current_a = None, 0.0
        slot.targets.clear()
        slot.sim.draw(None, slot.socket)
        slot.sim.unplug(slot.socket)
        self._show_grid()

    # --- what it measures ---

    def car_a(self, name: str) -> float:
        """What the car on charger ``name`` draws on each of its phases now (0 without a car)."""
        return self._slots[name].current_a

    def grid_a(self) -> tuple[float, float, float]:
        """What flows through the grid connection per phase: the building plus every car on its phases."""
        totals = list(self.building_a)
        for slot in self._slots.values():
            if slot.car is None:
                continue
            for phase in slot.grid_phases[: slot.car.phases]:
                totals[phase] += slot.current_a
        return _three(totals)

    def reset_peak(self) -> None:
        """``peak_a`` starts again from what flows now."""
        self.peak_a = self.grid_a()

    # --- time ---

    def step(self, now_s: float) -> None:
        """Advance to ``now_s`` (seconds on any monotonic clock): cars follow, registers show it."""
        elapsed = 0.0 if self._last_s is None else max(0.0, now_s - self._last_s)
        self._last_s = now_s
        for slot in self._slots.values():
            if slot.car is not None:
                self._follow(slot, slot.car, now_s)
            if elapsed:
                slot.sim.tick(elapsed)  # the charger's energy counter grows by what its car draws
        self._show_grid()
        if elapsed:
            self.grid.tick(elapsed)

    async def run(self) -> None:
        """Step every ``step_s`` of the event loop's time, until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            self.step(loop.time())
            await asyncio.sleep(self.step_s)

    def _follow(self, slot: _Slot, car: Car, now_s: float) -> None:
        """The car aims at what it is offered (within its maximum) and gets there ``delay_s`` later."""
        offered = slot.sim.offered_current_a(slot.socket)
        aim = min(car.max_a, offered or 0.0) if slot.sim.may_charge(slot.socket) else 0.0
        if not slot.targets or slot.targets[-1][1] != aim:
            slot.targets.append((now_s, aim))
        while len(slot.targets) > 1 and slot.targets[1][0] <= now_s - car.delay_s:
            slot.targets.popleft()  # the next aim is due: the older one no longer matters
        since, first = slot.targets[0]
        if since <= now_s - car.delay_s:
            slot.current_a = first
        slot.sim.draw([slot.current_a] * car.phases, slot.socket)

    def _show_grid(self) -> None:
        grid_a = self.grid_a()
        self.peak_a = _three([max(a, b) for a, b in zip(self.peak_a, grid_a, strict=True)])
        self.grid.set("current_a", grid_a)
        if "power_w" in self.grid.profile.values:
            self.grid.set("power_w", sum(grid_a) * NOMINAL_VOLTAGE_V)


def _three(values: Sequence[float]) -> tuple[float, float, float]:
    if len(values) != len(ALL_PHASES):
        raise ValueError(f"one value per phase (3), got {values}")
    return float(values[0]), float(values[1]), float(values[2])
