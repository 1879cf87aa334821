"""Billing-grade energy: a lifetime register only ever counts up, and never faster than physics.

A reading below the last good one (a meter swapped, a counter rolled over, a garbled frame) is
not a billing value, and neither is one that rose more than the connector could have delivered
since the last good reading (a register that reads 1,000,000,000 Wh for one poll). Either is
dropped from the reading and reported as a PowerMeterFailure fault; the register recovers by
itself as soon as a reading is plausible again against the last good one. The last good value
is what a connector bills from while its device is away or glitching, so the Site keeps it
across restarts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from gateway.domain.model import Fault, FaultKind, Reading

REGISTER_BACKWARDS = Fault(
    FaultKind.POWER_METER, vendor_code="EnergyBackwards", info="energy register below its last value"
)
REGISTER_JUMP = Fault(
    FaultKind.POWER_METER, vendor_code="EnergyImplausible", info="energy register rose faster than possible"
)

# What a connector can deliver unless its config says otherwise: three phases of 63 A at 230 V
# (43.5 kW) covers every AC charger; DC chargers set ``max_power_kw`` on their connector.
DEFAULT_CONNECTOR_MAX_POWER_W = 44_000.0
# A site or sub-meter not assigned to a connector measures a building: allow far more.
DEFAULT_METER_MAX_POWER_W = 2_000_000.0
# A register may rise by margin x max power x elapsed time, plus a fixed step: registers with a
# resolution of 1 kWh rise in steps of 1000 Wh, and reading times carry some jitter.
PLAUSIBLE_MARGIN = 1.5
PLAUSIBLE_STEP_WH = 1000


@dataclass(frozen=True, slots=True)
class GoodRegister:
    """The last register value accepted for billing, and when it was read."""

    energy_wh: int
    read_at: datetime


def max_rise_wh(max_power_w: float, last: GoodRegister, at: datetime) -> float:
    """The most a register can plausibly have risen between ``last`` and a reading at ``at``."""
    elapsed_h = max((at - last.read_at).total_seconds(), 0.0) / 3600
    return PLAUSIBLE_MARGIN * max_power_w * elapsed_h + PLAUSIBLE_STEP_WH


def check_register(
    last: GoodRegister | None, reading: Reading, max_power_w: float
) -> tuple[Reading, Fault | None, GoodRegister | None]:
    """(the reading to use, a fault or None, the new last good register) for one reading.

    ``last`` is the last good register (None before the first); ``max_power_w`` is the most the
    source can deliver (see ``DEFAULT_CONNECTOR_MAX_POWER_W``).
    """
    energy_wh = reading.energy_wh
    if energy_wh is None:
        return reading, None, last
    if energy_wh < 0:
        return replace(reading, energy_wh=None), REGISTER_BACKWARDS, last
    if last is not None:
        if energy_wh < last.energy_wh:
            return replace(reading, energy_wh=None), REGISTER_BACKWARDS, last
        if energy_wh - last.energy_wh > max_rise_wh(max_power_w, last, reading.measured_at):
            return replace(reading, energy_wh=None), REGISTER_JUMP, last
        if energy_wh == last.energy_wh:
            return reading, None, last  # unchanged: the time of the last change is what bounds the next
    return reading, None, GoodRegister(energy_wh, reading.measured_at)
