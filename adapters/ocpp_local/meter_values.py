"""A native charger's MeterValues as a Reading, and the values that cannot be one.

OCPP 1.6 carries every sampled value as a string, so the schema lets anything through: "NaN",
"Infinity", "1e400" (infinite as a float), "12,5", a negative lifetime register. Taken as they
come they would end up in billing, on MQTT and upstream (or, as before, crash the conversion).
A value the gateway reads (a measurand below) must be a finite decimal number, and the energy
register must not be negative; otherwise ``BadMeterValue`` says which sample was wrong, and the
whole message is refused (nothing of it is used: its values were measured together). Samples of
measurands the gateway does not read, and signed data, are skipped as before.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.domain.model import Reading

REGISTER = "Energy.Active.Import.Register"
READ = frozenset(
    {
        REGISTER,
        "Power.Active.Import",
        "Current.Import",
        "Voltage",
        "Current.Offered",
        "SoC",
        "Temperature",
        "Frequency",
    }
)
# OCPP's decimals: digits, an optional fraction and exponent. Python's float() would also take
# "nan", "inf", "1_000" and surrounding blanks.
_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
MAX_QUOTED = 40  # characters of a refused value quoted in the log and the CALLERROR
FUTURE_TOLERANCE = timedelta(seconds=60)  # how far ahead of ours a charger's clock may be


class BadMeterValue(ValueError):
    """A sampled value the gateway cannot use; the message says which, with the value as sent."""


def parse_time(text: object, now: datetime) -> datetime:
    """An ISO 8601 time from a charger (the schema does not check the format: be forgiving); ``now``
    if it cannot be read or lies ahead of the gateway's clock (more than FUTURE_TOLERANCE): a
    reading from the future would widen what the register guard lets through, and freeze the
    register once the true times are behind it."""
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return now
    moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return now if moment > now + FUTURE_TOLERANCE else moment


def quoted(value: object) -> str:
    """A value from a charger for a log line: repr'd (no line breaks get through) and cut short."""
    text = repr(value)
    return text if len(text) <= MAX_QUOTED else text[: MAX_QUOTED - 4] + "...'"


def _number(measurand: str, value: object, scale: float = 1.0) -> float:
    """``value`` times ``scale`` (kWh to Wh), finite (checked after scaling: "1e308" kWh is not)."""
    text = str(value)
    number = float(text) * scale if _DECIMAL.fullmatch(text) else math.nan
    if not math.isfinite(number):
        raise BadMeterValue(f"{measurand} value {quoted(value)} is not a finite number")
    return number


def reading_from_meter_values(meter_values: Iterable[dict[str, Any]], now: datetime) -> Reading | None:
    """The registers a MeterValues carries (the newest timestamp wins), with units made ours.

    Raises ``BadMeterValue`` for a value that cannot be used (see the module docstring)."""
    fields: dict[str, Any] = {}
    phases: dict[str, dict[str, float]] = {"current_a": {}, "voltage_v": {}}
    measured_at: datetime | None = None
    for meter_value in meter_values:
        at = parse_time(meter_value.get("timestamp"), now)
        measured_at = at if measured_at is None or at > measured_at else measured_at
        for sample in meter_value.get("sampled_value", []):
            measurand = str(sample.get("measurand", REGISTER))
            if measurand not in READ or sample.get("format") == "SignedData":
                continue
            kilo = str(sample.get("unit", "")).lower().startswith("k")
            scaled = kilo and measurand in (REGISTER, "Power.Active.Import")  # kWh, kW
            value = _number(measurand, sample.get("value"), 1000.0 if scaled else 1.0)
            phase = str(sample.get("phase", "L1"))[:2]
            if measurand == REGISTER:
                if value < 0:
                    raise BadMeterValue(f"{measurand} value {quoted(sample.get('value'))} is negative")
                fields["energy_wh"] = round(value)
            elif measurand == "Power.Active.Import":
                fields["power_w"] = value
            elif measurand in ("Current.Import", "Voltage"):
                phases["current_a" if measurand == "Current.Import" else "voltage_v"][phase] = value
            elif measurand == "Current.Offered":
                fields["offered_current_a"] = value
            elif measurand == "SoC":
                fields["soc_percent"] = value
            elif measurand == "Temperature":
                fields["temperature_c"] = value
            elif measurand == "Frequency":
                fields["frequency_hz"] = value
    for name, by_phase in phases.items():
        if by_phase:
            fields[name] = tuple(by_phase.get(p) for p in ("L1", "L2", "L3") if p in by_phase or p == "L1")
    if measured_at is None or not fields:
        return None
    return Reading(measured_at, **fields)
