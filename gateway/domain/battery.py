"""The battery of the car on a connector: the best state of charge known, and the target to stop at.

A SoC comes from one of three places, each kept with the time it was measured:

- the charger's own register (profiles that have one),
- a report from a car integration (the car's app or cloud), which may also carry the battery's
  usable capacity,
- an estimate: the last reported SoC plus the energy delivered since, on the connector's billing
  register, over that capacity. It ignores charging losses, so it runs slightly ahead of the car:
  a target is reached a little early, never overshot.

The newest measured value wins; an estimate is used only while the report it starts from is the
newest measured value, so a fresh measurement always beats it. Everything is forgotten when the
car leaves. Pure: the caller passes every time in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from gateway.domain.errors import CommandRejected

#: How far in the future a report's measurement time may be (clocks differ a little), not more.
MAX_CLOCK_AHEAD = timedelta(minutes=5)
#: An estimate is rounded to this many decimals: more would claim a precision it does not have.
ESTIMATE_DECIMALS = 1
#: The usable capacities a car battery can have, in Wh: a light quadricycle has a few kWh, the
#: largest electric trucks a few hundred. Outside, the report is a mistake (Wh taken for kWh) or
#: an attack: 1e-300 Wh would make every Wh delivered jump the estimate to 100 %.
MIN_CAPACITY_WH = 1_000.0
MAX_CAPACITY_WH = 500_000.0


class SocSource(StrEnum):
    """Where a state of charge comes from."""

    CHARGER = "charger"  # a register of the charger
    REPORT = "report"  # a car integration reported it
    ESTIMATE = "estimate"  # a report plus the energy delivered since (see estimate_soc_percent)


@dataclass(frozen=True, slots=True)
class SocValue:
    """A state of charge in percent (0..100), where it came from and when it was measured."""

    soc_percent: float
    source: SocSource
    measured_at: datetime

    @property
    def estimated(self) -> bool:
        return self.source is SocSource.ESTIMATE


def estimate_soc_percent(start_percent: float, delivered_wh: int, capacity_wh: float) -> float:
    """``start_percent`` plus ``delivered_wh`` as a share of ``capacity_wh``, at most 100."""
    gained = max(0, delivered_wh) / capacity_wh * 100.0
    return min(100.0, round(start_percent + gained, ESTIMATE_DECIMALS))


def _check_percent(name: str, value: float, low: float, low_included: bool = True) -> None:
    """Raise CommandRejected unless ``value`` is in range; written so that NaN is not."""
    in_range = (low <= value if low_included else low < value) and value <= 100
    if not in_range:
        bound = f"{low:g}..100" if low_included else f"above {low:g} and at most 100"
        raise CommandRejected(f"{name} must be {bound}, not {value:g}")


class Battery:
    """What is known about the battery of the car on one connector, from plug-in until it leaves."""

    def __init__(self) -> None:
        self.charger: SocValue | None = None
        self.reported: SocValue | None = None
        self.capacity_wh: float | None = None
        self._register: tuple[int, datetime] | None = None  # billing register (Wh) and when it was read
        self._reported_at_wh: int | None = None  # the billing register when ``reported`` came

    def charger_soc(self, soc_percent: float | None, at: datetime) -> None:
        """The charger's register read ``soc_percent`` at ``at`` (None: it has none now; the last is kept)."""
        if soc_percent is not None:
            self.charger = SocValue(soc_percent, SocSource.CHARGER, at)

    def report(self, soc_percent: float | None, capacity_wh: float | None, at: datetime, now: datetime) -> None:
        """A car integration's report: SoC measured at ``at`` and/or the usable capacity in Wh.

        Raises ``CommandRejected`` (and changes nothing) for values out of range (SoC 0..100,
        capacity MIN_CAPACITY_WH..MAX_CAPACITY_WH, NaN is out of every range) or a time more
        than MAX_CLOCK_AHEAD after ``now``. A SoC older than the last reported one is ignored.
        """
        if soc_percent is None and capacity_wh is None:
            raise CommandRejected("a report needs soc_percent or capacity_wh")
        if soc_percent is not None:
            _check_percent("soc_percent", soc_percent, 0)
        if capacity_wh is not None and not MIN_CAPACITY_WH <= capacity_wh <= MAX_CAPACITY_WH:
            raise CommandRejected(
                f"capacity_wh must be {MIN_CAPACITY_WH:.0f}..{MAX_CAPACITY_WH:.0f} (1 to 500 kWh), not {capacity_wh:g}"
            )
        if at - now > MAX_CLOCK_AHEAD:
            raise CommandRejected(f"measured_at is {(at - now).total_seconds():.0f} s in the future")
        if capacity_wh is not None:
            self.capacity_wh = capacity_wh
        if soc_percent is not None and (self.reported is None or at >= self.reported.measured_at):
            self.reported = SocValue(soc_percent, SocSource.REPORT, min(at, now))
            self._reported_at_wh = self._register[0] if self._register is not None else None

    def register(self, energy_wh: int, at: datetime) -> None:
        """The connector's billing register read ``energy_wh`` at ``at``."""
        self._register = (energy_wh, at)
        if self.reported is not None and self._reported_at_wh is None:
            self._reported_at_wh = energy_wh  # the report came before the first reading

    def best(self) -> SocValue | None:
        """The newest measured SoC, or the estimate from the newest report; None if nothing is known."""
        measured = [value for value in (self.reported, self.charger) if value is not None]
        if not measured:
            return None
        newest = max(measured, key=lambda value: value.measured_at)  # a tie goes to the report
        if newest is self.reported:
            return self._estimate() or newest
        return newest

    def _estimate(self) -> SocValue | None:
        if self.reported is None or self.capacity_wh is None or self._register is None:
            return None
        energy_wh, read_at = self._register
        if self._reported_at_wh is None or energy_wh <= self._reported_at_wh or read_at <= self.reported.measured_at:
            return None  # nothing delivered since the report: the report itself is the best
        percent = estimate_soc_percent(self.reported.soc_percent, energy_wh - self._reported_at_wh, self.capacity_wh)
        return SocValue(percent, SocSource.ESTIMATE, read_at)


class SocTargets:
    """Per-connector SoC targets: the config's defaults, replaced at runtime (None: no target).

    A runtime target is stored with the default it replaced, so that an installer who later
    changes the config sees the change take effect (``load_dict`` drops the stale runtime value).
    """

    def __init__(self, defaults: Mapping[int, float] | None = None) -> None:
        self.defaults: dict[int, float] = dict(defaults or {})
        self._runtime: dict[int, float | None] = {}

    def get(self, connector_id: int) -> float | None:
        """The target in percent now in force on the connector, or None."""
        if connector_id in self._runtime:
            return self._runtime[connector_id]
        return self.defaults.get(connector_id)

    def set(self, connector_id: int, percent: float | None) -> None:
        """Replace the connector's target (None: charge to full); raises CommandRejected if out of range."""
        if percent is not None:
            _check_percent("soc_target_percent", percent, 0, low_included=False)
        self._runtime[connector_id] = percent

    def to_dict(self) -> dict[str, Any]:
        """The runtime targets as JSON-able data: ``{"1": {"percent": 80.0, "default": 90.0}}``."""
        return {
            str(cid): {"percent": percent, "default": self.defaults.get(cid)} for cid, percent in self._runtime.items()
        }

    def load_dict(self, data: Mapping[str, Any], connector_ids: set[int]) -> list[str]:
        """Take back stored runtime targets; returns why any were dropped (one line each)."""
        dropped: list[str] = []
        for key, entry in data.items():
            try:
                cid, percent, default = int(key), entry["percent"], entry["default"]
                if cid not in connector_ids:
                    raise ValueError("no such connector")
                if default != self.defaults.get(cid):
                    dropped.append(f"connector {cid}: the config's soc_target_percent changed; it applies again")
                    continue
                self.set(cid, None if percent is None else float(percent))
            except (KeyError, TypeError, ValueError, CommandRejected) as exc:
                dropped.append(f"connector {key}: stored SoC target {entry!r} not usable ({exc})")
        return dropped
