"""Per-phase limits of a site's grid connection: what all chargers together may draw, and why.

The grid connection is a fuse per phase (L1, L2, L3) shared by the building and the chargers. What
the chargers may draw on a phase is the fuse less a margin less what the building draws (measured
as the grid meter less the chargers' own current), or a configured fallback while the grid meter
does not answer; the CSMS's ChargePointMaxProfile and a site limit (MQTT) may bound it further.
Each limit keeps the name of what it comes from, so users are told what binds. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import IntEnum, StrEnum


class Phase(IntEnum):
    """A phase of the grid connection; the value indexes per-phase tuples (L1, L2, L3)."""

    L1 = 0
    L2 = 1
    L3 = 2


ALL_PHASES: frozenset[Phase] = frozenset(Phase)


class Reason(StrEnum):
    """What binds a connector's current (or, for a phase limit, what the limit comes from)."""

    FUSE = "fuse"  # the grid connection: fuse - margin - building load
    FALLBACK = "fallback"  # the grid meter is not answering: the configured fallback
    CSMS = "csms"  # the CSMS's ChargePointMaxProfile, shared by all connectors
    SITE_LIMIT = "site_limit"  # the site limit set over MQTT (e.g. a HEMS following solar surplus)
    OWN_LIMIT = "own_limit"  # the connector's own bound (profile, ceiling, SoC target, charger maximum)
    TAKES_LESS = "takes_less"  # the car draws less than offered: its offer follows what it takes
    PRIORITY = "priority"  # higher-priority connectors on the same phase took the current
    ROTATION = "rotation"  # paused: not every car can have 6 A; it waits for its turn
    RAISE_HELD = "raise_held"  # a raise held back so that limits do not oscillate
    SWITCH_HELD = "switch_held"  # kept paused for the minimum off-time (contactor wear)
    SILENT = "silent"  # its charger does not answer: counted at what it was last offered
    IDLE = "idle"  # paused: the car drew nothing when offered current; it gets current when there is room


_LIMIT_SOURCES = frozenset({Reason.FUSE, Reason.FALLBACK, Reason.CSMS, Reason.SITE_LIMIT})


@dataclass(frozen=True, slots=True)
class PhaseLimit:
    """What all chargers together may draw on one phase, in A, and where that limit comes from."""

    limit_a: float
    source: Reason = Reason.FUSE

    def __post_init__(self) -> None:
        if self.source not in _LIMIT_SOURCES:
            raise ValueError(f"a phase limit comes from {sorted(_LIMIT_SOURCES)}, not {self.source}")


def headroom_a(fuse_a: float, margin_a: float, grid_a: float, chargers_a: float) -> float:
    """What the chargers together may draw on one phase, from the grid meter, in A.

    ``grid_a`` is what the grid meter measures on the phase (building and chargers), ``chargers_a``
    what the chargers on that phase measure themselves (a charger that does not answer should be
    counted at what it was last offered). The building's share is never taken as negative: a
    meter that reports current without direction would otherwise turn solar export into room
    above the fuse, and the sun can go at any moment. Never below 0.
    """
    building_a = max(0.0, grid_a - chargers_a)
    return max(0.0, fuse_a - margin_a - building_a)


def phase_limit(
    headroom: float | None,
    *,
    fallback_a: float,
    csms_a: float | None = None,
    site_a: float | None = None,
) -> PhaseLimit:
    """The lowest of the limits on one phase, and which one it is.

    ``headroom`` is ``headroom_a``'s answer, or None while the grid meter is not answering: then
    ``fallback_a`` (configured, meant to be safe whatever the building draws) stands in for it.
    ``csms_a``: the ChargePointMaxProfile's limit, ``site_a``: the MQTT site limit (None: none).
    On a tie the grid side is named, since it is the physical one.
    """
    candidates: list[tuple[float, Reason]] = [
        (headroom, Reason.FUSE) if headroom is not None else (fallback_a, Reason.FALLBACK)
    ]
    if csms_a is not None:
        candidates.append((csms_a, Reason.CSMS))
    if site_a is not None:
        candidates.append((site_a, Reason.SITE_LIMIT))
    limit_a, source = min(candidates, key=lambda c: c[0])  # min keeps the first of equals
    return PhaseLimit(max(0.0, limit_a), source)


@dataclass(frozen=True, slots=True)
class ConnectorShare:
    """One connector's share as decided: ``current_a`` 0 (paused) or at least 6 A, and why."""

    current_a: float
    reason: Reason
    priority: int = 0
    drawn_a: float | None = None  # the highest current it draws over its phases (None: not measured)


@dataclass(frozen=True, slots=True)
class SiteLoad:
    """The site's power sharing at one decision: what the page, MQTT and /metrics show.

    ``limits``: per phase what all chargers together may draw (None: nothing is shared: no
    load management configured and neither the CSMS nor MQTT limit the site). ``grid_a``: the
    grid meter per phase (None while it does not answer, or without load management).
    ``offered_a``: per phase the sum of the shares. ``shares``: per connector in a session.
    """

    decided_at: datetime
    limits: tuple[PhaseLimit, ...] | None
    grid_a: tuple[float, ...] | None
    offered_a: tuple[float, ...]
    shares: Mapping[int, ConnectorShare]
    fuse_a: float | None = None
    site_limit_a: float | None = None

    @property
    def limit_a(self) -> float | None:
        """The lowest phase limit (None: none)."""
        return None if self.limits is None else min(limit.limit_a for limit in self.limits)

    @property
    def reason(self) -> Reason | None:
        """What the lowest phase limit comes from (None: nothing limits the site)."""
        return None if self.limits is None else min(self.limits, key=lambda limit: limit.limit_a).source

    def same_as(self, other: SiteLoad | None) -> bool:
        """Equal but for the time of the decision: nothing to tell anyone."""
        return other is not None and replace(other, decided_at=self.decided_at) == self
