"""Which measurands a reading holds, in OCPP's names, units and phases: the same for 1.6 and 2.0.1.

Both upstream adapters (which may not import each other) turn a domain ``Reading`` into sampled
values; what a measurand is called, which field of the reading it comes from, its phases and its
unit are shared, only the frame around a value differs (a 1.6 ``SampledValue`` with string
values, a 2.0.1 object with numbers and ``unitOfMeasure``). One difference in units: OCPP 1.6 has
no unit for frequency, 2.0.1 has ``Hz`` (each adapter passes its own ``frequency_unit``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

from gateway.domain.model import Reading

ENERGY_REGISTER = "Energy.Active.Import.Register"


class Measured(NamedTuple):
    """One value of a reading as OCPP names it."""

    measurand: str
    value: float | int
    unit: str | None
    phase: str | None = None


def measured_values(reading: Reading, measurands: Iterable[str], *, frequency_unit: str | None) -> Iterator[Measured]:
    """The ``measurands`` present in ``reading``, in the order asked, a phase at a time."""
    for measurand in measurands:
        if measurand == ENERGY_REGISTER and reading.energy_wh is not None:
            yield Measured(measurand, int(reading.energy_wh), "Wh")
        elif measurand == "Power.Active.Import" and reading.power_w is not None:
            yield Measured(measurand, reading.power_w, "W")
        elif measurand == "Current.Import":
            for phase, value in _per_phase(reading.current_a, ("L1", "L2", "L3")):
                yield Measured(measurand, value, "A", phase)
        elif measurand == "Voltage":
            for phase, value in _per_phase(reading.voltage_v, ("L1-N", "L2-N", "L3-N")):
                yield Measured(measurand, value, "V", phase)
        elif measurand == "Current.Offered" and reading.offered_current_a is not None:
            yield Measured(measurand, reading.offered_current_a, "A")
        elif measurand == "Frequency" and reading.frequency_hz is not None:
            yield Measured(measurand, reading.frequency_hz, frequency_unit)
        elif measurand == "Temperature" and reading.temperature_c is not None:
            yield Measured(measurand, reading.temperature_c, "Celsius")
        elif measurand == "SoC" and reading.soc_percent is not None:
            yield Measured(measurand, reading.soc_percent, "Percent")


def _per_phase(values: tuple[float | None, ...], phases: tuple[str, ...]) -> Iterator[tuple[str, float]]:
    for phase, value in zip(phases, values, strict=False):
        if value is not None:
            yield phase, value
