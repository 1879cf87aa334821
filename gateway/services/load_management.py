"""Site power sharing over the live site: per phase what the chargers may draw, and each one's share.

At each decision this reads, from the Site, the grid meter per phase, what every charger measures,
the CSMS's ChargePointMaxProfile (connector 0: the limit of the whole charge point, shared by its
connectors, as OCPP 1.6 defines it) and the MQTT site limit; the caller gives each connector's own
bound (its Tx/TxDefault profile, MQTT ceiling, SoC target, the charger's maximum). The rule itself
is ``gateway.domain.load_sharing``; this module only turns the site into its inputs:

* **Headroom** per phase: fuse - margin - (grid - the chargers' own measured current). A charger
  that does not answer cannot be measured or told anything: what it draws stays in the "building"
  part, and the last current it was offered is kept free for it on its phases as well (it may
  rise to that at any moment). While the grid meter does not answer, ``fallback_a`` stands in
  for the headroom (less the same reserve).
* **Phases** of a connector: the grid phases its charger is wired to (``grid_phases``); a
  single-phase charger whose wiring is not configured counts on all three, which is safe whatever
  its wiring (it is given room on every phase, and its current is subtracted from every phase). A
  car that draws on fewer phases than its charger has (a single-phase car on a three-phase
  charger) counts only on those while it draws.
* Connectors whose charger cannot be told a current (no current-limit register, not a native
  charger) take no share: what they draw counts as building load.

Nothing is shared when there is nothing to share: no ``[load_management]``, no ChargePointMaxProfile
and no site limit; the caller then applies each connector's own bound as it always did.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gateway.domain.load_sharing import Demand, LoadSharing, SharingSettings
from gateway.domain.model import Connector, Reading
from gateway.domain.phase_limits import (
    ALL_PHASES,
    ConnectorShare,
    Phase,
    PhaseLimit,
    Reason,
    SiteLoad,
    headroom_a,
    phase_limit,
)

log = logging.getLogger(__name__)

NOMINAL_VOLTAGE_V = 230.0  # turns a charger's power into current when it measures no current
DRAWING_A = 1.0  # a phase carries the car's current when it draws at least this on it
CHARGING_A = 2.0  # ...and the car is charging (not just noise) when it draws this on some phase


@dataclass(frozen=True, slots=True)
class GridConnection:
    """``[load_management]``: the grid meter and the fuse it protects."""

    grid_meter: str
    fuse_a: float
    margin_a: float
    fallback_a: float


@dataclass(frozen=True, slots=True)
class LoadSettings:
    """How the site's connectors share; ``grid`` None: no load management (only CSMS/MQTT limits)."""

    grid: GridConnection | None = None
    priorities: Mapping[int, int] = field(default_factory=dict)
    # per connector: the grid phase each of its charger's phases is wired to (L1 first); missing:
    # a three-phase charger wired straight, a single-phase charger counted on every phase
    wiring: Mapping[int, tuple[Phase, ...]] = field(default_factory=dict)
    sharing: SharingSettings = field(default_factory=SharingSettings)
    controllable: frozenset[int] = frozenset()  # connectors whose charger can be told a current


class LoadManager:
    """Turns the Site into the sharing rule's inputs and remembers what each connector was offered."""

    def __init__(self, connectors: Mapping[int, Connector], settings: LoadSettings | None = None) -> None:
        self.connectors = connectors
        self.settings = settings or LoadSettings()
        self._sharing = LoadSharing(self.settings.sharing)
        self._offered: dict[int, float] = {}  # connector -> what it was last offered by this sharing
        self._changed_at: dict[int, datetime] = {}  # connector -> when its offer last changed
        self._building_window: deque[tuple[datetime, tuple[float, ...]]] = deque()
        self._grid_lost_told = False

    def decide(
        self,
        now: datetime,
        own_a: Mapping[int, float],
        *,
        grid: tuple[Reading | None, bool | None] = (None, None),
        csms_a: float | None = None,
        site_a: float | None = None,
    ) -> SiteLoad:
        """Each connector's share at ``now``.

        ``own_a``: every connector in a session whose charger can be told a current, with its own
        bound in A (0: it may not charge). ``grid``: the grid meter's reading and whether it
        answers. ``csms_a``: the ChargePointMaxProfile's limit per phase, ``site_a`` the MQTT site
        limit (None: none). ``SiteLoad.limits`` is None when nothing is shared: the shares are then
        the own bounds, untouched.
        """
        drawn = {cid: self._drawn(c) for cid, c in self.connectors.items()}
        silent = [cid for cid in own_a if self.connectors[cid].device_online is False]
        if self.settings.grid is None and csms_a is None and site_a is None:
            self._offered.clear()
            self._sharing.forget()  # sharing starts afresh when a limit appears
            shares = {cid: self._share(cid, a, Reason.OWN_LIMIT, drawn[cid]) for cid, a in own_a.items()}
            return SiteLoad(now, None, None, _sum_per_phase(own_a, self._phases_of), shares)
        grid_a = self._grid_per_phase(*grid)
        grid_at = grid[0].measured_at if grid[0] is not None else None
        phases = {cid: self._demand_phases(cid, per_phase) for cid, per_phase in drawn.items()}
        chargers = [0.0, 0.0, 0.0]  # what the chargers the sharing can tell draw at grid_at (at most)
        reserve = [0.0, 0.0, 0.0]  # kept for silent ones: they may draw what they were last offered
        settled = True  # no car was still following a new offer when the grid meter was read
        for cid, per_phase in drawn.items():
            if per_phase and cid not in silent and (cid in own_a or cid in self.settings.controllable):
                at_most = self._at_most(cid, grid_at)
                settled = settled and not self._following(cid, grid_at)
                for p in Phase:
                    here = per_phase.get(p, 0.0)
                    chargers[p] += max(here, at_most) if at_most is not None and p in phases[cid] else here
        for cid in silent:
            for p in self._phases_of(cid):
                reserve[p] += self._offered.get(cid, 0.0)
        building = self._building(grid_at, grid_a, chargers, settled)
        limits = [self._phase_limit(building, p, reserve[p], csms_a, site_a) for p in Phase]
        demands = [
            Demand(
                cid,
                bound,
                phases=phases[cid],
                priority=self._priority(cid),
                drawn_a=drawn[cid] or {},
                offered_a=self._offered.get(cid, self._reading_offer(cid)),
            )
            for cid, bound in own_a.items()
            if cid not in silent
        ]
        allocations = self._sharing.decide(now, limits, demands)
        shares = {cid: self._share(cid, a.current_a, a.reason, drawn[cid]) for cid, a in allocations.items()}
        for cid in silent:
            shares[cid] = self._share(cid, self._offered.get(cid, 0.0), Reason.SILENT, None)
        for cid, allocation in allocations.items():
            if allocation.current_a != self._offered.get(cid):
                self._changed_at[cid] = now
        self._offered = {cid: self._offered.get(cid, 0.0) for cid in silent}
        self._offered.update({cid: a.current_a for cid, a in allocations.items()})
        self._changed_at = {cid: at for cid, at in self._changed_at.items() if cid in self._offered}
        offered = {cid: share.current_a for cid, share in shares.items()}
        fuse_a = self.settings.grid.fuse_a if self.settings.grid is not None else None
        return SiteLoad(now, tuple(limits), grid_a, _sum_per_phase(offered, self._phases_of), shares, fuse_a, site_a)

    def _phase_limit(
        self,
        building_a: Sequence[float] | None,
        phase: Phase,
        reserve_a: float,
        csms_a: float | None,
        site_a: float | None,
    ) -> PhaseLimit:
        """What the chargers the sharing can tell may draw together on ``phase``, and why."""
        grid = self.settings.grid
        if grid is None:
            limit = phase_limit(math.inf, fallback_a=math.inf, csms_a=csms_a, site_a=site_a)
        else:
            headroom = None if building_a is None else headroom_a(grid.fuse_a, grid.margin_a, building_a[phase], 0.0)
            limit = phase_limit(headroom, fallback_a=grid.fallback_a, csms_a=csms_a, site_a=site_a)
        return PhaseLimit(max(0.0, limit.limit_a - reserve_a), limit.source)

    def _at_most(self, cid: int, grid_at: datetime | None) -> float | None:
        """The offer a connector's car may already draw at ``grid_at`` although its (older) reading
        does not show it: its last new offer, when the car could have followed it by then but its
        reading was taken before; None when its reading is good for ``grid_at``."""
        changed_at = self._changed_at.get(cid)
        reading = self.connectors[cid].reading
        if changed_at is None or grid_at is None or grid_at < changed_at:
            return None  # the grid meter was read before the change: the charger's reading stands
        followed_at = changed_at + timedelta(seconds=self.settings.sharing.follow_s)
        if reading is not None and reading.measured_at >= followed_at:
            return None  # read after its car followed
        return self._offered.get(cid, 0.0)

    def _following(self, cid: int, grid_at: datetime | None) -> bool:
        """Whether the connector's car may have been part way to its new offer at ``grid_at``."""
        changed_at = self._changed_at.get(cid)
        if changed_at is None or grid_at is None:
            return False
        return changed_at <= grid_at < changed_at + timedelta(seconds=self.settings.sharing.follow_s)

    def _building(
        self, grid_at: datetime | None, grid_a: Sequence[float] | None, chargers_a: Sequence[float], settled: bool
    ) -> tuple[float, ...] | None:
        """The building's current per phase: the highest estimate of the last ``building_hold_s``.

        Each estimate is the grid meter less what the chargers draw at most (a charger whose car is
        still following a new offer counts at the higher of its reading and that offer), so it is
        never above the truth while the readings are in step. Holding the highest for a while makes
        a rise count at once and a fall only once it lasts: the limit does not follow a fridge or a
        reading taken between two changes, and the offers are not cut and raised again and again.

        While a car was still following a new offer when the grid meter was read (not ``settled``),
        where it was is not known. Counted at its new offer, the building may look smaller than it
        is, and a raise made on that feeds itself: the next reading counts the raised offers again
        (found by tests/integration/test_load_management_sim.py: 48 A offered of 38 A free). So
        until the cars have settled the window is not let go of: such a reading only counts where
        it shows more building than the window holds, which it then certainly is.
        """
        if grid_a is None or grid_at is None:
            return None
        window = self._building_window
        sample = tuple(max(0.0, g - c) for g, c in zip(grid_a, chargers_a, strict=True))
        if not settled and window:
            held = tuple(max(s[p] for _, s in window) for p in Phase)
            if all(a <= h for a, h in zip(sample, held, strict=True)):
                return held
        if window and window[-1][0] == grid_at:  # the same grid reading: the newest estimate of it
            window[-1] = (grid_at, tuple(max(a, b) for a, b in zip(window[-1][1], sample, strict=True)))
        else:
            window.append((grid_at, sample))
        if settled:
            while window and (grid_at - window[0][0]).total_seconds() > self.settings.sharing.building_hold_s:
                window.popleft()
        return tuple(max(sample[p] for _, sample in window) for p in Phase)

    def _share(self, cid: int, current_a: float, reason: Reason, drawn: Mapping[Phase, float] | None) -> ConnectorShare:
        return ConnectorShare(current_a, reason, self._priority(cid), max(drawn.values()) if drawn else None)

    # -- inputs ------------------------------------------------------------------------------------

    def _grid_per_phase(self, reading: Reading | None, online: bool | None) -> tuple[float, ...] | None:
        """The grid meter's current per phase, or None (fallback) when it is away or has none.

        One WARNING when it stops answering or gives no current per phase, not before its first
        reading: at every start the chargers are decided on before the grid meter's first poll,
        and a warning there would be one on every start of every site."""
        if self.settings.grid is None:
            return None
        currents = reading.current_a if reading is not None else ()
        usable = online is not False and reading is not None and len(currents) == len(Phase)
        values = [c for c in currents if c is not None and math.isfinite(c)] if usable else []
        if len(values) != len(Phase):
            if reading is None and online is not False:
                return None  # not read yet (the gateway has just started): the fallback, but nothing is wrong
            if not self._grid_lost_told:
                log.warning(
                    "load management: the grid meter %s gives no current per phase; chargers share the fallback",
                    self.settings.grid.grid_meter,
                )
                self._grid_lost_told = True
            return None
        if self._grid_lost_told:
            log.info("load management: the grid meter %s answers again", self.settings.grid.grid_meter)
            self._grid_lost_told = False
        return tuple(abs(v) for v in values)  # a meter may sign the direction; the fuse carries either

    def _wired(self, cid: int) -> tuple[Phase, ...] | None:
        return self.settings.wiring.get(cid)

    def _drawn(self, connector: Connector) -> dict[Phase, float] | None:
        """What a connector draws per grid phase (None: not measured, or its device is away)."""
        reading = connector.reading
        if reading is None or connector.device_online is False:
            return None
        wired = self._wired(connector.connector_id)
        per_charger_phase: list[float | None] = list(reading.current_a)
        if not per_charger_phase or any(c is None for c in per_charger_phase):
            if reading.power_w is None:
                return None
            phases = len(wired) if wired else 3
            per_charger_phase = [max(0.0, reading.power_w) / NOMINAL_VOLTAGE_V / phases] * phases
        values = [abs(float(c)) for c in per_charger_phase if c is not None]
        if wired:
            return {wired[i]: v for i, v in enumerate(values[: len(wired)])}
        if len(values) == 1:  # a single-phase charger, wiring unknown: on every phase (safe)
            return dict.fromkeys(Phase, values[0])
        return {Phase(i): v for i, v in enumerate(values[: len(Phase)])}

    def _phases_of(self, cid: int) -> frozenset[Phase]:
        """The grid phases a connector's charger can draw on (all three when not known)."""
        wired = self._wired(cid)
        return frozenset(wired) if wired else ALL_PHASES

    def _demand_phases(self, cid: int, drawn: Mapping[Phase, float] | None) -> frozenset[Phase]:
        """Its charger's phases, or only those its car draws on while it charges on fewer."""
        phases = self._phases_of(cid)
        unknown_single = (
            self._wired(cid) is None and drawn is not None and len(set(drawn.values())) == 1 and len(drawn) == 3
        )
        if drawn is None or unknown_single or max(drawn.values(), default=0.0) < CHARGING_A:
            return phases
        used = frozenset(p for p in phases if drawn.get(p, 0.0) >= DRAWING_A)
        return used or phases

    def _priority(self, cid: int) -> int:
        return self.settings.priorities.get(cid, 0)

    def _reading_offer(self, cid: int) -> float | None:
        reading = self.connectors[cid].reading
        return reading.offered_current_a if reading is not None else None


def _sum_per_phase(offers: Mapping[int, float], phases_of: Callable[[int], frozenset[Phase]]) -> tuple[float, ...]:
    totals = [0.0, 0.0, 0.0]
    for cid, current_a in offers.items():
        for p in phases_of(cid):
            totals[p] += current_a
    return tuple(round(t, 3) for t in totals)
