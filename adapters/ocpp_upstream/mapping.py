"""Pure translation tables from the domain to OCPP 1.6J: statuses, error codes, sampled values.

Kept free of I/O so the tables can be read and unit-tested on their own.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from ocpp.v16 import datatypes, enums

from adapters.ocpp_measurands import measured_values
from gateway.domain.battery import SocValue
from gateway.domain.model import Reading, iso_utc


def _decimal(value: float) -> str:
    """A decimal string without float noise ("7200", "230.1")."""
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _sample(
    measurand: str, value: float | int, unit: str | None, *, context: str, location: str, phase: str | None = None
) -> datatypes.SampledValue:
    return datatypes.SampledValue(
        value=str(value) if isinstance(value, int) else _decimal(value),
        context=context,
        measurand=measurand,
        phase=phase,
        location=enums.Location.ev if measurand == "SoC" else location,  # the SoC is the car's
        unit=unit,
    )


def sampled_values(
    reading: Reading, measurands: Iterable[str], *, context: str, location: str
) -> list[datatypes.SampledValue]:
    """The configured measurands present in ``reading``, with OCPP units and phases (1.6 has no Hz)."""
    return [
        _sample(m.measurand, m.value, m.unit, context=context, location=location, phase=m.phase)
        for m in measured_values(reading, measurands, frequency_unit=None)
    ]


def meter_value(
    reading: Reading,
    measurands: Iterable[str],
    *,
    context: str = "Sample.Periodic",
    location: str = "Outlet",
    stamp: datetime | None = None,
) -> datatypes.MeterValue | None:
    """One MeterValue stamped with the time the reading was made (or ``stamp``: the interval
    boundary of a clock-aligned value), or None if nothing to send."""
    values = sampled_values(reading, measurands, context=context, location=location)
    if not values:
        return None
    return datatypes.MeterValue(timestamp=iso_utc(stamp or reading.measured_at), sampled_value=values)


def with_soc(
    value: datatypes.MeterValue | None, soc: SocValue, *, context: str, stamp: datetime | None = None
) -> list[datatypes.MeterValue]:
    """``value`` with a SoC sample (unit Percent, location EV) stamped with the time the SoC was
    measured: inside ``value`` when that is its time too (or both carry ``stamp``), else in an
    element of its own. OCPP 1.6 cannot mark an estimate: it goes as SoC like a measured one."""
    sample = _sample("SoC", soc.soc_percent, "Percent", context=context, location=enums.Location.ev)
    timestamp = iso_utc(stamp or soc.measured_at)
    if value is None:
        return [datatypes.MeterValue(timestamp=timestamp, sampled_value=[sample])]
    if value.timestamp == timestamp:
        return [datatypes.MeterValue(timestamp=timestamp, sampled_value=[*value.sampled_value, sample])]
    return [value, datatypes.MeterValue(timestamp=timestamp, sampled_value=[sample])]


def next_boundary(now: datetime, interval_s: int) -> datetime:
    """The next clock-aligned instant: multiples of ``interval_s`` after midnight UTC."""
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    elapsed_s = (now - midnight).total_seconds()
    return midnight + timedelta(seconds=(int(elapsed_s // interval_s) + 1) * interval_s)
