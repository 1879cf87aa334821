"""The demo's occasional fault: one simulated charger overheats for a while and recovers.

A new user should see the whole fault path work, not read about it: the charger's own fault
register shows over-temperature in the code its profile maps to it (so the gateway decodes it as
it would a real one), the charger stops delivering current, and a while later all is well again.
The gateway, not the demo, then tells the CSMS (StatusNotification, HighTemperature), MQTT, Home
Assistant, the status page and the history's event log.

A charger overheats while it works hard, so a fault that is due waits until the charger's car
charges: the user sees the current stop, and come back. The schedule runs on the demo script's own
seconds (``DemoSite.step``), not the wall clock: a test that steps the site by hand, or runs the
demo with a short ``FaultSchedule``, sees the same thing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from adapters.modbus.simulator import ModbusSimulator
from gateway.domain.model import FaultKind

log = logging.getLogger(__name__)

OVERHEATING = FaultKind.OVER_TEMPERATURE


@dataclass(frozen=True, slots=True)
class FaultSchedule:
    """When the demo's charger overheats: first ``first_after_s`` into the demo (or as soon after
    as its car charges), for ``lasts_s``; the next is due ``every_s`` after the last began."""

    first_after_s: float
    every_s: float
    lasts_s: float

    def __post_init__(self) -> None:
        if self.first_after_s < 0 or self.lasts_s <= 0 or self.every_s <= self.lasts_s:
            raise ValueError(f"a fault schedule needs first_after_s >= 0 and 0 < lasts_s < every_s: {self}")


# The shipped site's cars first charge together from about 13 s to 45 s into the demo (the script
# is seeded), sharing the fuse; the second car's next charge begins about 76 s in: it overheats
# then, within two minutes of the start, and again every five minutes (at its next charge).
DEMO_FAULT = FaultSchedule(first_after_s=60.0, every_s=300.0, lasts_s=30.0)


def can_overheat(simulator: ModbusSimulator) -> bool:
    """Does the profile have a fault code (or bit) that means over-temperature?"""
    return any(
        OVERHEATING.value in (spec.codes or {}).values() or OVERHEATING.value in (spec.bits or {}).values()
        for spec in simulator.profile.faults.values()
    )


class Overheating:
    """Applies a ``FaultSchedule`` to one socket of one simulated charger."""

    def __init__(self, schedule: FaultSchedule, name: str, simulator: ModbusSimulator, socket: int = 1) -> None:
        self.schedule = schedule
        self.name = name
        self.simulator = simulator
        self.socket = socket
        self.hot = False
        self.due_s = schedule.first_after_s  # (script seconds) when the next may begin
        self.ends_s = 0.0

    def step(self, elapsed_s: float, charging: bool) -> None:
        """``elapsed_s`` into the demo; ``charging``: the charger's car wants current now. Raises
        the fault when it is due and the car charges, clears it ``lasts_s`` later."""
        hot = elapsed_s < self.ends_s if self.hot else (elapsed_s >= self.due_s and charging)
        if hot == self.hot:
            return
        self.hot = hot
        if hot:
            self.ends_s = elapsed_s + self.schedule.lasts_s
            self.due_s = elapsed_s + self.schedule.every_s
            self.simulator.raise_fault(OVERHEATING, socket=self.socket)
            log.info("demo: %s overheats and stops charging for %.0f s", self.name, self.schedule.lasts_s)
        else:
            self.simulator.clear_faults(socket=self.socket)
            log.info("demo: %s has cooled down and charges again", self.name)
        self.simulator.trip(hot, socket=self.socket)


def overheating_charger(
    chargers: list[tuple[str, ModbusSimulator]], schedule: FaultSchedule | None
) -> Overheating | None:
    """The demo's overheating charger: the last of ``chargers`` (name, simulator) whose profile can
    say over-temperature (the shipped site's Webasto Next, whose car comes second); None without
    a schedule or such a charger (a user's own site may have none: it then never overheats)."""
    able = [(name, sim) for name, sim in chargers if can_overheat(sim)]
    if schedule is None or not able:
        return None
    name, simulator = able[-1]
    return Overheating(schedule, name, simulator)
