"""Billing-grade energy: a lifetime register only ever counts up.

A reading below the last good one (a meter swapped, a counter rolled over, a garbled frame) is
not a billing value: it is dropped from the reading and reported as a PowerMeterFailure fault
until the register is back at or above the last good value.
"""

from __future__ import annotations

from dataclasses import replace

from gateway.domain.model import Fault, FaultKind, Reading

REGISTER_BACKWARDS = Fault(
    FaultKind.POWER_METER, vendor_code="EnergyBackwards", info="energy register below its last value"
)


def check_register(last_good_wh: int | None, reading: Reading) -> tuple[Reading, Fault | None, int | None]:
    """(the reading to use, a fault or None, the new last good value) for one poll.

    ``last_good_wh`` is the highest register value seen so far (None before the first).
    """
    energy_wh = reading.energy_wh
    if energy_wh is None:
        return reading, None, last_good_wh
    if last_good_wh is not None and energy_wh < last_good_wh:
        return replace(reading, energy_wh=None), REGISTER_BACKWARDS, last_good_wh
    return reading, None, energy_wh
