"""Benchmark: a simulated day of site power sharing (issue 16) against a static equal split.

A 63 A grid connection (margin 2 A, fallback 16 A) feeds a building and ten 22 kW chargers
(32 A, three-phase, wired with phase rotation). The building's load per phase varies over the day
(night base, morning ramp, lunch, lifts, kitchen, a compressor, evening), cars arrive with an
energy need, a maximum current (16 or 32 A, some single-phase) and a departure time. Seeded: the
same seed gives the same day.

Simulated time, no sleeping, no sockets, at 0.5 s steps. The gateway side is the real code path:
a ``Site`` fed with snapshots as the device adapters would give them and the ``LimitKeeper``
deciding at each poll (``keeper.apply(now)``, as tests/unit/test_load_management.py drives it). The
grid meter is polled every 5 s, the chargers every 5 s each (spread over the 5 s, as independent
pollers are); a limit the keeper requests takes effect at the charger 0.5 s later and the car
follows 2 s after that, taking min(offer, what it can take); a car whose need is met stops
drawing. The baseline is what installers do today: every charger set once to fuse / number of
chargers, whatever the building draws. Both run the same day, side by side, in one run.

    .venv/bin/python bench/load.py [--hours 24] [--start 0] [--seed 16] [--svg docs/load-day.svg]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.domain.events import CurrentLimitRequested
from gateway.domain.model import ChargerSnapshot, Connector, Meter, MeterSnapshot, Reading, VehicleState
from gateway.domain.phase_limits import Phase
from gateway.domain.transactions import StopTransaction
from gateway.services.charging_limits import LimitKeeper
from gateway.services.load_management import GridConnection, LoadSettings
from gateway.services.site import Site

FUSE_A = 63.0
MARGIN_A = 2.0
FALLBACK_A = 16.0
CHARGERS = 10
CHARGER_MAX_A = 32.0
VOLTAGE_V = 230.0
DT_S = 0.5  # physics step
POLL_S = 5  # grid meter and chargers, each
WRITE_DELAY_S = 0.5  # a requested limit reaches the charger
CAR_DELAY_S = 2.0  # the car follows a new offer
MIN_A = 6.0
ALLOWANCE_S = POLL_S + 2.0  # the goal for the reaction: one poll interval + 2 s
SHORTEST_S = POLL_S + WRITE_DELAY_S + CAR_DELAY_S  # the fastest any sharing could be after a step
STEP_A, STEP_WINDOW = 1.0, 2  # a load step: the building rises by this much within this many steps (1 s)
DAY_S = 24 * 3600
T0 = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
GRID = "grid"
BUILDING_MAX_A = 50.0  # the building alone never overloads the connection (its own breakers)
ROTATION = ((Phase.L1, Phase.L2, Phase.L3), (Phase.L2, Phase.L3, Phase.L1), (Phase.L3, Phase.L1, Phase.L2))


# -- the day ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Visit:
    """A car at a charger: when it comes and goes, what it needs and what it can take."""

    charger: int
    arrive_s: float
    depart_s: float
    need_wh: float
    max_a: float
    phases: int  # 3, or 1 (a single-phase car draws on the charger's first phase)


@dataclass
class Day:
    building: list[list[float]]  # per phase, per step of DT_S over the whole day
    visits: list[Visit]


def _profile(hour: float) -> float:
    """The building's base load per phase over the day, in A (offices with a canteen)."""
    points = ((0, 9), (5.5, 9), (7, 12), (9, 19), (11.5, 20), (13.5, 20), (16, 18), (18, 16), (20, 15), (22.5, 10))
    points = (*points, (24, 9))
    for (h0, a0), (h1, a1) in itertools.pairwise(points):
        if h0 <= hour <= h1:
            return a0 + (a1 - a0) * (hour - h0) / (h1 - h0)
    return points[-1][1]


@functools.lru_cache(maxsize=2)
def make_day(seed: int) -> Day:
    """The whole day's building load and cars, from ``seed`` alone."""
    rng = random.Random(seed)
    steps = int(DAY_S / DT_S)
    balance = (1.08, 0.96, 0.92)  # the phases are not loaded alike
    delta = [[0.0] * (steps + 1) for _ in Phase]  # step changes: added at start, removed at end

    def event(start_s: float, length_s: float, amps: tuple[float, float, float]) -> None:
        a, b = int(start_s / DT_S), min(steps, int((start_s + length_s) / DT_S))
        if a >= steps:
            return
        for p in Phase:
            delta[p][a] += amps[p]
            delta[p][b] -= amps[p]

    def poisson(rate_per_h: Callable[[float], float], make: Callable[[float], None]) -> None:
        t = 0.0
        while t < DAY_S:
            t += rng.expovariate(1.0)  # thinning: at most 1 per second
            if t < DAY_S and rng.random() < rate_per_h(t / 3600) / 3600:
                make(t)

    def lift(t: float) -> None:
        amps = rng.uniform(9, 14)
        event(t, rng.uniform(15, 45), (amps, amps, amps))

    def kitchen(t: float) -> None:  # ovens, fryers, a dishwasher: one phase each
        amps = [0.0, 0.0, 0.0]
        amps[rng.choice((0, 0, 1))] = rng.uniform(5, 10)
        event(t, rng.uniform(120, 900), (amps[0], amps[1], amps[2]))

    def kettle(t: float) -> None:
        amps = [0.0, 0.0, 0.0]
        amps[rng.randrange(3)] = 9.0
        event(t, rng.uniform(60, 180), (amps[0], amps[1], amps[2]))

    poisson(lambda h: 8 if 7 <= h < 19 else 1, lift)
    poisson(lambda h: 4 if 11 <= h < 14 else (1.5 if 6.5 <= h < 10 or 17 <= h < 20 else 0), kitchen)
    poisson(lambda h: 4 if 7 <= h < 17 else 0.5, kettle)
    t = 8 * 3600.0
    while t < 18 * 3600:  # an air-conditioning compressor cycling through the working day
        on = rng.uniform(480, 900)
        event(t, on, (7.5, 7.5, 7.5))
        t += on + rng.uniform(600, 1200)
    t = 0.0
    while t < DAY_S:  # cold rooms: 2 A on L3, on and off all day (a limit that wobbles)
        on = rng.uniform(200, 400)
        event(t, on, (0.0, 0.0, 2.0))
        t += on + rng.uniform(300, 600)
    for _ in range(3):  # evening: water heaters, cleaning machines
        event(rng.uniform(17, 21.5) * 3600, rng.uniform(1200, 3600), (0.0, 0.0, 12.0))
    building: list[list[float]] = []
    for p in Phase:
        values, level, wander = [], 0.0, 0.0
        for k in range(steps):
            level += delta[p][k]
            if k % 2 == 0:  # the load wanders slowly around its profile, once a second
                wander = 0.995 * wander + rng.gauss(0, 0.12)
            amps = _profile(k * DT_S / 3600) * balance[p] + level + wander
            values.append(min(BUILDING_MAX_A, max(0.0, amps)))
        building.append(values)
    return Day(building, _visits(rng))


def _visits(rng: random.Random) -> list[Visit]:
    """Cars over the day: a few from the night before, commuters, visitors, evening arrivals."""
    kinds = ((16.0, 3), (16.0, 3), (16.0, 3), (32.0, 3), (32.0, 3), (32.0, 1), (16.0, 1), (16.0, 1))
    visits: list[Visit] = []

    def car(charger: int, arrive_h: float, stay_h: float, need_kwh: float) -> float:
        max_a, phases = rng.choice(kinds)
        depart_h = arrive_h + stay_h
        visits.append(Visit(charger, arrive_h * 3600, depart_h * 3600, need_kwh * 1000, max_a, phases))
        return depart_h

    for charger in range(1, CHARGERS + 1):
        free_h = 0.0
        if rng.random() < 0.4:  # plugged in last evening, leaves in the morning
            free_h = car(charger, 0.0, rng.uniform(6, 8.5), rng.uniform(5, 20)) + rng.uniform(0.2, 1)
        if rng.random() < 0.8:  # a commuter
            arrive = max(free_h, rng.uniform(7, 9.5))
            free_h = car(charger, arrive, rng.uniform(6.5, 9), rng.uniform(8, 25)) + rng.uniform(0.1, 0.6)
        else:
            free_h = max(free_h, 9.0)
        while free_h < 18:  # visitors
            arrive = free_h + rng.uniform(0, 1.5)
            free_h = car(charger, arrive, rng.uniform(0.75, 3), rng.uniform(3, 12)) + rng.uniform(0.1, 1)
        if rng.random() < 0.6:  # home for the night: leaves tomorrow
            car(charger, max(free_h, rng.uniform(18, 21.5)), 24, rng.uniform(10, 40))
    return visits


# -- physics --------------------------------------------------------------------------------------


@dataclass
class Car:
    visit: Visit
    left_wh: float
    delay_s: float = CAR_DELAY_S
    seen_a: float = 0.0  # the offer the car follows now
    follow: deque[tuple[float, float]] = field(default_factory=deque)  # (at, offer) not yet followed
    full_at: float | None = None

    def can_take_a(self) -> float:
        """What the car can take now: its maximum, tapering over the last 10 % of its need."""
        if self.left_wh <= 0:
            return 0.0
        tail = 0.1 * self.visit.need_wh
        if self.left_wh >= tail:
            return self.visit.max_a
        return max(1.0, self.visit.max_a * (0.3 + 0.7 * self.left_wh / tail))


@dataclass
class Charger:
    cid: int
    wiring: tuple[Phase, ...]
    offer_a: float = 0.0  # the limit in force at the charger
    writes: deque[tuple[float, float]] = field(default_factory=deque)  # (at, limit) on their way
    car: Car | None = None
    current_a: float = 0.0  # per phase the car draws on
    register_wh: float = 0.0
    visits: deque[Visit] = field(default_factory=deque)


@dataclass
class Result:
    label: str
    seconds: float = 0.0
    energy_wh: float = 0.0
    need_wh: float = 0.0
    departed: int = 0
    full: int = 0
    still_plugged: int = 0
    peak_a: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    over_s: float = 0.0
    over_beyond_s: float = 0.0
    over_beyond_shortest_s: float = 0.0  # the same, beyond poll + write + the car following
    reactions_s: list[float] = field(default_factory=list)
    unresolved: int = 0
    switches: int = 0
    writes: int = 0
    used_a_s: float = 0.0
    usable_a_s: float = 0.0  # per phase alone: min(fuse - margin - building, what the cars there can take)
    reachable_a_s: float = 0.0  # the most the cars could draw together within the fuse (see reachable_a)
    used_reachable_a_s: float = 0.0
    fair_a_s: float = 0.0  # what a fair sharing with perfect knowledge would have drawn (see fair_a)
    used_fair_a_s: float = 0.0
    reserved_idle_a_s: float = 0.0  # offered (>= 6 A) to a plugged car that draws nothing
    wall_s: float = 0.0
    # for the picture: per bucket, on one phase
    trace: dict[str, list[float]] = field(default_factory=dict)


def reachable_a(headroom_a: list[float], three_phase_a: float, single_a: list[float]) -> list[float]:
    """Per phase, the most the cars could draw together within ``headroom_a`` (an upper bound).

    A three-phase car draws alike on its three phases, so room on one phase that only three-phase
    cars could use is not available to them. With ``three_phase_a`` what the three-phase cars can
    take together and ``single_a`` what the single-phase ones on each phase can take, the most
    current in all (the sum over the phases) is drawn when the three-phase cars take
    min(their total, the smallest headroom) and the single-phase ones fill what is left on their
    phase: every ampere a three-phase car takes counts three times, and costs each phase at most
    the ampere a single-phase car there would have taken. The 6 A minimum is ignored, so no sharing
    can do better.
    """
    room = [max(0.0, h) for h in headroom_a]
    three = min(three_phase_a, min(room))
    return [three + min(single_a[p], room[p] - three) for p in Phase]


def fair_a(headroom_a: list[float], cars: list[tuple[tuple[Phase, ...], float]]) -> list[float]:
    """Per phase, what the cars draw when the room is shared max-min fairly with perfect knowledge.

    ``cars``: per car that wants current, the grid phases it draws on and what it can take. All
    rise together until one reaches what it can take or one of its phases is full (the rule the
    gateway follows, without its 6 A minimum, delays or holds): the best a fair sharing can do.
    """
    room = [max(0.0, h) for h in headroom_a]
    given = [0.0] * len(cars)
    active = [i for i, (_, can) in enumerate(cars) if can > 0]
    while active:
        on = [sum(1 for i in active if p in cars[i][0]) for p in Phase]
        rise = min(
            min(cars[i][1] - given[i] for i in active),
            min(room[p] / on[p] for p in Phase if on[p]),
        )
        for i in active:
            given[i] += rise
            for p in cars[i][0]:
                room[p] -= rise
        active = [i for i in active if cars[i][1] - given[i] > 1e-9 and all(room[p] > 1e-9 for p in cars[i][0])]
    return [sum(given[i] for i, (phases, _) in enumerate(cars) if p in phases) for p in Phase]


def p99(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


class Simulation:
    """The site's physics over a window of the day; ``control`` is called at every whole second."""

    def __init__(self, day: Day, start_s: float, end_s: float, label: str, plot_phase: Phase, buckets: int) -> None:
        self.day, self.start_s, self.end_s = day, start_s, end_s
        self.result = Result(label)
        self.chargers = [Charger(n, ROTATION[(n - 1) % 3]) for n in range(1, CHARGERS + 1)]
        for visit in sorted(day.visits, key=lambda v: v.arrive_s):
            if visit.depart_s > start_s and visit.arrive_s < end_s:
                self.chargers[visit.charger - 1].visits.append(visit)
        self.grid_a = [0.0, 0.0, 0.0]
        self.plot_phase = plot_phase
        self.bucket_s = (end_s - start_s) / buckets
        self.trace = {name: [0.0] * buckets for name in ("building", "grid_max", *(str(c) for c in range(1, 11)))}

    def write(self, cid: int, limit_a: float, now_s: float) -> None:
        self.chargers[cid - 1].writes.append((now_s + WRITE_DELAY_S, limit_a))
        self.result.writes += 1

    def run(self, control: Callable[[float], None]) -> Result:
        r, day = self.result, self.day
        first, last = int(self.start_s / DT_S), int(self.end_s / DT_S)
        onset: list[int | None] = [None, None, None]
        was_over = [False, False, False]
        stepped_at: list[int | None] = [None, None, None]  # the last step up of the building per phase
        per_step = DT_S / 3600
        samples_per_bucket = self.bucket_s / DT_S
        began = time.perf_counter()
        for k in range(first, last):
            t = k * DT_S
            chargers_a = [0.0, 0.0, 0.0]
            wanted_a = [0.0, 0.0, 0.0]
            three_phase_a, single_a = 0.0, [0.0, 0.0, 0.0]  # what the cars can take, by how they draw
            wanting: list[tuple[tuple[Phase, ...], float]] = []
            bucket = int((t - self.start_s) / self.bucket_s)
            for ch in self.chargers:
                self._cars_come_and_go(ch, t)
                while ch.writes and ch.writes[0][0] <= t + 1e-9:
                    ch.offer_a = ch.writes.popleft()[1]
                    if ch.car is not None:
                        ch.car.follow.append((t + ch.car.delay_s, ch.offer_a))
                car = ch.car
                before = ch.current_a
                if car is None:
                    ch.current_a = 0.0
                else:
                    while car.follow and car.follow[0][0] <= t + 1e-9:
                        car.seen_a = car.follow.popleft()[1]
                    can = car.can_take_a()
                    ch.current_a = min(car.seen_a, can) if car.seen_a >= MIN_A else 0.0
                    phases = car.visit.phases
                    wh = ch.current_a * VOLTAGE_V * phases * per_step
                    car.left_wh -= wh
                    ch.register_wh += wh
                    r.energy_wh += wh
                    if car.left_wh <= 0 and car.full_at is None:
                        car.full_at = t
                    for p in ch.wiring[:phases]:
                        wanted_a[p] += can
                    if can > 0:
                        wanting.append((ch.wiring[:phases], can))
                    if phases == 3:
                        three_phase_a += can
                    else:
                        single_a[ch.wiring[0]] += can
                    if can == 0 and ch.offer_a >= MIN_A:
                        r.reserved_idle_a_s += ch.offer_a * phases * DT_S
                if (before > 0) != (ch.current_a > 0):
                    r.switches += 1
                if ch.current_a:
                    phases = ch.car.visit.phases if ch.car else 3
                    for p in ch.wiring[:phases]:
                        chargers_a[p] += ch.current_a
                    if self.plot_phase in ch.wiring[:phases]:
                        self.trace[str(ch.cid)][bucket] += ch.current_a / samples_per_bucket
            for p in Phase:
                building = day.building[p][k]
                grid = building + chargers_a[p]
                self.grid_a[p] = grid
                r.peak_a[p] = max(r.peak_a[p], grid)
                over = grid > FUSE_A + 1e-9
                if k >= STEP_WINDOW and building - day.building[p][k - STEP_WINDOW] >= STEP_A:
                    stepped_at[p] = k
                if over and not was_over[p] and onset[p] is None:
                    step = stepped_at[p]
                    if step is not None and (k - step) * DT_S <= ALLOWANCE_S:
                        onset[p] = step  # the building stepped up: the reaction is timed from the step
                if not over and onset[p] is not None:
                    r.reactions_s.append((k - onset[p]) * DT_S)
                    onset[p] = None
                was_over[p] = over
                if wanted_a[p] > 0:
                    usable = min(max(0.0, FUSE_A - MARGIN_A - building), wanted_a[p])
                    r.usable_a_s += usable * DT_S
                    r.used_a_s += min(chargers_a[p], usable) * DT_S
            headroom = [FUSE_A - MARGIN_A - day.building[p][k] for p in Phase]
            if wanting:
                fair = fair_a(headroom, wanting)
                r.fair_a_s += sum(fair) * DT_S
                r.used_fair_a_s += sum(min(chargers_a[p], fair[p]) for p in Phase) * DT_S
            reachable = reachable_a([FUSE_A - MARGIN_A - day.building[p][k] for p in Phase], three_phase_a, single_a)
            r.reachable_a_s += sum(reachable) * DT_S
            r.used_reachable_a_s += sum(min(chargers_a[p], reachable[p]) for p in Phase) * DT_S
            if any(was_over):
                r.over_s += DT_S
                if any(was_over[p] and (onset[p] is None or (k - onset[p]) * DT_S > ALLOWANCE_S) for p in Phase):
                    r.over_beyond_s += DT_S
                if any(was_over[p] and (onset[p] is None or (k - onset[p]) * DT_S > SHORTEST_S) for p in Phase):
                    r.over_beyond_shortest_s += DT_S
            self.trace["building"][bucket] += day.building[self.plot_phase][k] / samples_per_bucket
            self.trace["grid_max"][bucket] = max(self.trace["grid_max"][bucket], self.grid_a[self.plot_phase])
            if k % 2 == 0:
                control(t)
        for p in Phase:
            if onset[p] is not None:  # never back under the fuse in the window
                r.reactions_s.append((last - onset[p]) * DT_S)
                r.unresolved += 1
        for ch in self.chargers:
            if ch.car is not None:
                r.still_plugged += 1
        r.seconds = self.end_s - self.start_s
        r.wall_s = time.perf_counter() - began
        r.trace = self.trace
        return r

    def _cars_come_and_go(self, ch: Charger, t: float) -> None:
        car = ch.car
        if car is not None and t >= car.visit.depart_s:
            self.result.departed += 1
            self.result.need_wh += car.visit.need_wh
            self.result.full += car.left_wh <= 0
            ch.car = None
        if ch.car is None and ch.visits and ch.visits[0].arrive_s <= t:
            visit = ch.visits.popleft()
            ch.car = Car(visit, visit.need_wh)
            ch.car.follow.append((t + ch.car.delay_s, ch.offer_a))

    def reading(self, ch: Charger, at: datetime) -> ChargerSnapshot:
        """What a poll of the charger finds now: its current per own phase, offer, the car's state."""
        phases = ch.car.visit.phases if ch.car else 3
        amps = tuple(round(ch.current_a, 2) if i < phases else 0.0 for i in range(3))
        state = VehicleState.A if ch.car is None else (VehicleState.C if ch.current_a > 0 else VehicleState.B)
        reading = Reading(at, energy_wh=int(ch.register_wh), current_a=amps, offered_current_a=ch.offer_a)
        return ChargerSnapshot(f"wb{ch.cid}", 1, reading, vehicle_state=state)


# -- the two ways of running the site -------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.at = T0

    def now(self) -> datetime:
        return self.at


def run_sharing(
    day: Day, start_s: float, end_s: float, plot_phase: Phase, buckets: int, aligned: bool = False
) -> Result:
    """The gateway: a Site fed by polls, the LimitKeeper deciding, its requests written to the chargers.

    ``aligned``: every charger is polled at the same moment as the grid meter (not spread over the
    poll interval), so the chargers' readings and the grid meter's are of the same instant."""
    label = "sharing, polls aligned" if aligned else "sharing (LimitKeeper)"
    sim = Simulation(day, start_s, end_s, label, plot_phase, buckets)
    clock = Clock()
    site = Site([Connector(n, f"wb{n}") for n in range(1, CHARGERS + 1)], [Meter(GRID)], clock=clock)
    settings = LoadSettings(
        GridConnection(GRID, FUSE_A, MARGIN_A, FALLBACK_A),
        wiring={ch.cid: ch.wiring for ch in sim.chargers},
        controllable=frozenset(range(1, CHARGERS + 1)),
    )
    keeper = LimitKeeper(site, site.charging_profiles, dict.fromkeys(range(1, CHARGERS + 1), CHARGER_MAX_A), settings)
    requests = site.subscribe()
    watched = keeper._events  # what the keeper's own watch task reads (its StopTransaction handling)

    def control(t: float) -> None:
        second = int(t)
        clock.at = now = T0 + timedelta(seconds=t)
        if second % POLL_S == 0:
            amps = tuple(round(a, 2) for a in sim.grid_a)
            site.apply(MeterSnapshot(GRID, Reading(now, current_a=amps)))
        for ch in sim.chargers:
            if (0 if aligned else (ch.cid - 1) % POLL_S) == second % POLL_S:
                site.apply(sim.reading(ch, now))
        for event in iter(watched.get_nowait, None):
            if isinstance(event, StopTransaction):
                keeper._stopped(event.connector_id)
        keeper.apply(now)
        for event in iter(requests.get_nowait, None):
            if isinstance(event, CurrentLimitRequested):
                sim.write(event.connector_id, event.limit_a, t)

    return sim.run(control)


def run_static(day: Day, start_s: float, end_s: float, plot_phase: Phase, buckets: int) -> Result:
    """Today's installation: every charger set once to fuse / number of chargers."""
    sim = Simulation(day, start_s, end_s, f"static split ({FUSE_A / CHARGERS:g} A each)", plot_phase, buckets)
    for ch in sim.chargers:
        sim.write(ch.cid, FUSE_A / CHARGERS, start_s - WRITE_DELAY_S)
    return sim.run(lambda t: None)


# -- output ---------------------------------------------------------------------------------------


def table(results: list[Result]) -> str:
    hours = results[0].seconds / 3600

    def row(name: str, cell: Callable[[Result], str]) -> str:
        return f"| {name} | " + " | ".join(cell(r) for r in results) + " |"

    def reaction(r: Result) -> str:
        value = p99(r.reactions_s)
        if value is None:
            return "- (no step over the fuse)"
        tail = f", {r.unresolved} never" if r.unresolved else ""
        return f"{value:.1f} s ({len(r.reactions_s)} steps{tail})"

    def peaks(r: Result) -> str:
        return " / ".join(f"{a:.1f}" for a in r.peak_a) + f" (fuse {FUSE_A:g})"

    lines = [
        "| | " + " | ".join(r.label for r in results) + " |",
        "|---|" + "---:|" * len(results),
        row("energy delivered", lambda r: f"{r.energy_wh / 1000:.1f} kWh"),
        row(
            "cars fully charged by departure",
            lambda r: f"{r.full} / {r.departed} ({100 * r.full / r.departed:.0f} %)" if r.departed else "- (none left)",
        ),
        row("peak grid current L1 / L2 / L3", peaks),
        row("time over the fuse", lambda r: f"{r.over_s:.0f} s"),
        row(f"... beyond the reaction time ({ALLOWANCE_S:g} s)", lambda r: f"{r.over_beyond_s:.0f} s"),
        row(
            f"... beyond poll + write + car following ({SHORTEST_S:g} s)",
            lambda r: f"{r.over_beyond_shortest_s:.0f} s",
        ),
        row("reaction to a load step, p99", reaction),
        row("on/off switches per charger per hour", lambda r: f"{r.switches / CHARGERS / hours:.2f}"),
        row("limit writes per charger per hour", lambda r: f"{r.writes / CHARGERS / hours:.2f}"),
        row(
            "fair share used while cars want it",
            lambda r: f"{100 * r.used_fair_a_s / r.fair_a_s:.1f} %" if r.fair_a_s else "-",
        ),
        row(
            "available current used while cars want it",
            lambda r: f"{100 * r.used_reachable_a_s / r.reachable_a_s:.1f} %" if r.reachable_a_s else "-",
        ),
        row(
            "... counting each phase alone",
            lambda r: f"{100 * r.used_a_s / r.usable_a_s:.1f} %" if r.usable_a_s else "-",
        ),
        row(
            "offered to plugged cars that draw nothing",
            lambda r: f"{r.reserved_idle_a_s / 3600 / hours:.1f} A avg (phase-sum)",
        ),
    ]
    return "\n".join(lines)


PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def svg(results: list[Result], start_s: float, end_s: float, phase: Phase) -> str:
    """The day on ``phase``, one panel per run: building, each charger stacked on it, the grid's
    highest value per bucket, the fuse and the fuse less the margin."""
    width, panel_h, left, top, gap = 900, 230, 46, 28, 46
    plot_w = width - left - 12
    height = top + len(results) * (panel_h + gap) + 10
    y_max = 10 * math.ceil(max(FUSE_A + 7, *(max(r.trace["grid_max"]) for r in results)) / 10)
    hours = (end_s - start_s) / 3600
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="16" font-size="13">bench/load.py: grid current on {phase.name} '
        f"(the busiest phase): building (grey), chargers 1-10 stacked on it, grid maximum (black)</text>",
    ]
    for index, r in enumerate(results):
        y0 = top + index * (panel_h + gap) + 14
        n = len(r.trace["building"])

        def x(i: float, n: int = n) -> float:
            return left + plot_w * i / n

        def y(amps: float, y0: float = y0) -> float:
            return y0 + panel_h * (1 - amps / y_max)

        out.append(f'<text x="{left}" y="{y0 - 4}" font-weight="bold">{r.label}</text>')
        for amps in range(0, y_max + 1, 10):
            out.append(
                f'<line x1="{left}" x2="{left + plot_w}" y1="{y(amps):.1f}" y2="{y(amps):.1f}" stroke="#eee"/>'
                f'<text x="{left - 4}" y="{y(amps) + 4:.1f}" text-anchor="end">{amps}</text>'
            )
        step_h = 2 if hours > 6 else 1 if hours > 2 else 0.25
        h = 0.0
        while h <= hours + 1e-9:
            xh = left + plot_w * h / hours
            label = (start_s / 3600 + h) % 24
            out.append(
                f'<line x1="{xh:.1f}" x2="{xh:.1f}" y1="{y0:.1f}" y2="{y(0):.1f}" stroke="#eee"/>'
                f'<text x="{xh:.1f}" y="{y(0) + 13:.1f}" text-anchor="middle">{label:g}h</text>'
            )
            h += step_h
        stacked = [r.trace["building"]]
        for cid in range(1, CHARGERS + 1):
            stacked.append([a + b for a, b in zip(stacked[-1], r.trace[str(cid)], strict=True)])
        colours = ["#c8c8c8", *PALETTE]
        for level in range(len(stacked) - 1, -1, -1):  # the highest first, the lower painted over it
            points = " ".join(f"{x(i + 0.5):.1f},{y(v):.1f}" for i, v in enumerate(stacked[level]))
            out.append(
                f'<polygon fill="{colours[level]}" points="{x(0):.1f},{y(0):.1f} {points} {x(n):.1f},{y(0):.1f}"/>'
            )
        line = " ".join(f"{x(i + 0.5):.1f},{y(v):.1f}" for i, v in enumerate(r.trace["grid_max"]))
        out.append(f'<polyline fill="none" stroke="black" stroke-width="0.7" points="{line}"/>')
        for amps, dash, name, dy in ((FUSE_A, "", "fuse", -3), (FUSE_A - MARGIN_A, "4 3", "fuse - margin", 11)):
            out.append(
                f'<line x1="{left}" x2="{left + plot_w}" y1="{y(amps):.1f}" y2="{y(amps):.1f}" '
                f'stroke="red" stroke-dasharray="{dash}"/>'
                f'<text x="{left + plot_w - 2}" y="{y(amps) + dy:.1f}" text-anchor="end" fill="red">'
                f"{name} {amps:g} A</text>"
            )
        middle = y0 + panel_h / 2
        out.append(f'<text x="12" y="{middle:.1f}" transform="rotate(-90 12 {middle:.1f})">A</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def bench(
    seed: int, start_h: float, hours: float, svg_path: Path | None, aligned: bool = False
) -> tuple[list[Result], str]:
    logging.disable(logging.INFO)  # the keeper logs every limit it sets
    day = make_day(seed)
    start_s, end_s = start_h * 3600, min(DAY_S, (start_h + hours) * 3600)
    window = slice(int(start_s / DT_S), int(end_s / DT_S))
    phase = max(Phase, key=lambda p: sum(day.building[p][window]))
    buckets = max(1, min(480, int((end_s - start_s) / 60)))
    results = [run_sharing(day, start_s, end_s, phase, buckets)]
    if aligned:
        results.append(run_sharing(day, start_s, end_s, phase, buckets, aligned=True))
    results.append(run_static(day, start_s, end_s, phase, buckets))
    text = table(results)
    if svg_path is not None:
        svg_path.parent.mkdir(parents=True, exist_ok=True)
        svg_path.write_text(svg(results, start_s, end_s, phase))
    return results, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0, help="simulated hours (default: the whole day)")
    parser.add_argument("--start", type=float, default=0.0, help="hour of the day the window starts")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--svg", type=Path, default=Path("docs/load-day.svg"), help="the picture ('' for none)")
    parser.add_argument(
        "--aligned-polls",
        action="store_true",
        help="also run the sharing with every charger polled together with the grid meter",
    )
    args = parser.parse_args()
    began = time.perf_counter()
    svg_path = args.svg if str(args.svg) not in ("", ".") else None
    results, text = bench(args.seed, args.start, args.hours, svg_path, args.aligned_polls)
    day = make_day(args.seed)
    start_s, end_s = args.start * 3600, (args.start + args.hours) * 3600
    cars = sum(1 for v in day.visits if v.depart_s > start_s and v.arrive_s < end_s)
    print(
        f"{CHARGERS} chargers of {CHARGER_MAX_A:g} A three-phase (rotated wiring) behind a {FUSE_A:g} A fuse "
        f"(margin {MARGIN_A:g} A), {cars} cars, {args.hours:g} h from {args.start:g}h, seed {args.seed}; "
        f"polls every {POLL_S} s, writes {WRITE_DELAY_S:g} s, cars follow {CAR_DELAY_S:g} s later"
    )
    print()
    print(text)
    print()
    print(
        "wall time: "
        + ", ".join(f"{r.label} {r.wall_s:.1f} s" for r in results)
        + f"; {time.perf_counter() - began:.1f} s in all"
        + (f"; picture: {svg_path}" if svg_path else "")
    )


if __name__ == "__main__":
    main()
