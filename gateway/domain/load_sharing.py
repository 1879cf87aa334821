"""Site power sharing: how much current each charging connector may be offered, per decision.

Many chargers share one grid connection with the building. Per grid phase the caller says what
the chargers together may draw now (``headroom_a`` and ``phase_limit`` compute it: the fuse less
a margin less what the building draws, bounded by the CSMS's ChargePointMaxProfile and an
optional site limit); per connector in a session it says what the connector may take at most
(its own bound), on which grid phases it draws, its priority and what it measurably draws.
``LoadSharing.decide`` answers with a current per connector and the reason that binds it.

The rule, in the order it is applied (docs/load-management.md says the same for users):

1. Own bound. A connector's cap is its own bound (profiles, MQTT ceiling, SoC target, the
   charger's maximum: the caller's minimum). A car that, after ``settle_s`` since its offer last
   changed, draws clearly less than offered (more than ``unused_threshold_a`` below) is capped at
   what it draws plus ``unused_headroom_a``, so the rest goes to others and the car can still
   rise: once it draws close to that offer again the cap is lifted. A cap under 6 A means paused.
   A car that has drawn nothing (under ``idle_below_a``) for ``settle_s`` while offered current
   is idle (full, or charging on its own timer): it is admitted last, after every car that draws,
   so it keeps 6 A only where they leave room. It stays idle while paused (a paused car cannot
   show that it wants current) until it draws again, or until it has been paused ``rotation_s``:
   then it queues as a new car and gets a turn to show whether it wants current.
2. Who charges. Each charging connector needs at least 6 A (IEC 61851-1) on each of its phases.
   Connectors are admitted in order while 6 A still fits on all their phases, idle ones last and
   only into what the others leave once filled (step 3). First those within their minimum on-time
   (a contactor is not switched off early unless the limit forces it), then by priority (higher
   first), then by turn: within a priority, a charging connector whose turn has not run out comes
   first, then the queue. The queue is a ticket order: a connector takes a
   ticket when it starts wanting current, and a charging one whose ``rotation_s`` turn has run out
   while another of its priority waits takes a new ticket (to the back). So when not every car can
   have 6 A, the waiting ones take turns and none waits forever. A connector paused less than
   ``min_off_s`` ago stays paused.
3. How much. Admitted connectors start at 6 A; the rest is filled priority level by level (a higher
   level up to its caps before a lower one gets more than 6 A); within a level equally (progressive
   filling: all rise together until one reaches its cap or one of its phases is full).
4. Gentle raises. A cut applies at once. A raise of a charging connector applies at once when it is
   at least ``raise_step_a``, a smaller one only once it has been wanted at every decision for
   ``raise_hold_s``; until then the connector keeps its lower offer (always safe). Switching on is
   not a raise: it is governed by step 2.

Everything is in steps of ``resolution_a`` and rounded down, so per phase the sum of the offers is
never above the limit. Pure: no clock (``now`` is passed in), no protocol, no I/O.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from gateway.domain.charging_schedule import MIN_CURRENT_A
from gateway.domain.phase_limits import ALL_PHASES, Phase, PhaseLimit, Reason

_EPS = 1e-9  # float noise allowed when turning amperes into steps


@dataclass(frozen=True, slots=True)
class Demand:
    """One connector in a session, as the caller sees it at this decision.

    ``max_a``: its own upper bound (the lowest of its profile limits, MQTT ceiling, the charger's
    maximum; 0 when its SoC target is reached). ``phases``: the grid phases it draws on (a
    single-phase charger: the one it is wired to, after phase rotation). ``drawn_a``: what it
    measurably draws now, per grid phase (missing: unknown, then it never counts as taking less).
    ``offered_a``: what the charger says it offers now; used only for a connector this sharing
    has not decided for yet (after a restart), so that a raise from there is still gentle.
    """

    connector_id: int
    max_a: float
    phases: frozenset[Phase] = ALL_PHASES
    priority: int = 0
    drawn_a: Mapping[Phase, float] = field(default_factory=dict)
    offered_a: float | None = None

    def __post_init__(self) -> None:
        if not self.phases:
            raise ValueError(f"connector {self.connector_id}: draws on no phase")

    @property
    def drawn_max_a(self) -> float | None:
        """The highest current it draws over its phases (None when none is measured)."""
        values = [self.drawn_a[p] for p in self.phases if p in self.drawn_a]
        return max(values) if values else None


@dataclass(frozen=True, slots=True)
class Allocation:
    """A connector's share: ``current_a`` 0 (paused) or at least 6 A, and the reason that binds."""

    current_a: float
    reason: Reason


@dataclass(frozen=True, slots=True)
class SharingSettings:
    """How the sharing behaves over time; the defaults suit Modbus polls of a few seconds."""

    min_current_a: float = MIN_CURRENT_A  # IEC 61851-1: below this a car is paused
    resolution_a: float = 0.1  # offers are multiples of this (rounded down)
    settle_s: float = 60.0  # a car needs time to follow a new offer before what it draws means anything
    unused_threshold_a: float = 2.0  # drawing this much below the offer is "clearly less"
    unused_headroom_a: float = 3.0  # a car taking less keeps this above what it draws, to rise
    raise_step_a: float = 2.0  # a raise this large applies at once...
    raise_hold_s: float = 60.0  # ...a smaller one once the offer has stood this long
    rotation_s: float = 900.0  # a turn, while others wait for 6 A
    min_on_s: float = 120.0  # a connector switched on is not paused by the sharing before this
    min_off_s: float = 120.0  # a connector paused is not switched on again before this
    building_hold_s: float = 30.0  # the building load counts at its highest of this long (a fall waits)
    idle_below_a: float = 1.0  # a car drawing less than this on every phase draws nothing
    follow_s: float = 6.0  # a car follows a new offer within this (IEC 61851-1: 5 s, and the write)

    def __post_init__(self) -> None:
        if self.min_current_a <= 0 or self.resolution_a <= 0:
            raise ValueError("min_current_a and resolution_a must be positive")
        if self.unused_headroom_a <= self.unused_threshold_a:
            # otherwise a car capped at what it takes would at once look like it wants more,
            # be raised, take less again and be capped again: the offer would oscillate
            raise ValueError("unused_headroom_a must be above unused_threshold_a")
        names = (
            "settle_s",
            "raise_step_a",
            "raise_hold_s",
            "rotation_s",
            "min_on_s",
            "min_off_s",
            "building_hold_s",
            "follow_s",
        )
        for name in names:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.min_on_s > self.rotation_s:
            raise ValueError("min_on_s above rotation_s would make turns longer than configured")


@dataclass(slots=True)
class _Memory:
    """What the sharing remembers of one connector between decisions."""

    offer_a: float  # the last offer (0 = paused)
    offer_changed_at: datetime  # a seeded offer counts as changed when first seen
    switched_at: datetime | None = None  # last paused <-> charging switch made by this sharing
    turn_started_at: datetime | None = None  # when its current turn began (charging only)
    ticket: int | None = None  # its place in the queue while it wants current
    requeued: bool = False  # its turn ran out and it took a new ticket
    raise_wanted_since: datetime | None = None  # a small raise held back since then, without a break
    nothing_since: datetime | None = None  # offered current and drawing nothing since then
    idle: bool = False  # drew nothing for settle_s while offered: admitted last


class LoadSharing:
    """Decides the connectors' shares, one decision at a time, remembering what it offered."""

    def __init__(self, settings: SharingSettings | None = None) -> None:
        self.settings = settings or SharingSettings()
        self._memory: dict[int, _Memory] = {}
        self._tickets = itertools.count()

    def forget(self) -> None:
        """Forget every connector (nothing is shared any more): the next decision starts afresh."""
        self._memory.clear()

    # -- amperes <-> steps of resolution_a ------------------------------------------------------

    def _floor(self, amps: float) -> int:
        return max(0, math.floor(amps / self.settings.resolution_a + _EPS))

    def _ceil(self, amps: float) -> int:
        return max(0, math.ceil(amps / self.settings.resolution_a - _EPS))

    def _amps(self, steps: int) -> float:
        return round(steps * self.settings.resolution_a, 9)

    # -- the decision ---------------------------------------------------------------------------

    def decide(self, now: datetime, limits: Sequence[PhaseLimit], demands: Iterable[Demand]) -> dict[int, Allocation]:
        """The current of every connector in ``demands`` at ``now``; connectors not given are forgotten.

        ``limits``: per phase (L1, L2, L3) what the chargers together may draw. The offers returned
        sum to at most that on each phase. The caller must write cuts before raises, so that the
        chargers' sum stays under the limit while the writes are under way.
        """
        if len(limits) != len(Phase):
            raise ValueError(f"one limit per phase ({len(Phase)}), got {len(limits)}")
        demands = list(demands)
        ids = [d.connector_id for d in demands]
        if len(set(ids)) != len(ids):
            raise ValueError("a connector appears twice")
        s = self.settings
        for gone in set(self._memory) - set(ids):
            del self._memory[gone]
        for d in demands:
            if d.connector_id not in self._memory:
                seed = d.offered_a if d.offered_a is not None and d.offered_a >= s.min_current_a else 0.0
                self._memory[d.connector_id] = _Memory(seed, now, turn_started_at=now if seed else None)

        min_steps = self._ceil(s.min_current_a)
        room = [self._floor(limit.limit_a) for limit in limits]

        # 1. caps
        caps: dict[int, int] = {}
        cap_reason: dict[int, Reason] = {}
        for d in demands:
            cap, why = self._floor(d.max_a), Reason.OWN_LIMIT
            less = self._takes_less_cap(now, d)
            if less is not None and less < cap:
                cap, why = less, Reason.TAKES_LESS
            caps[d.connector_id] = cap if cap >= min_steps else 0
            cap_reason[d.connector_id] = why
        wanting = [d for d in demands if caps[d.connector_id]]

        # 2. who charges
        for d in demands:
            self._note_idle(now, d)
            memory = self._memory[d.connector_id]
            if not caps[d.connector_id]:
                memory.ticket, memory.requeued = None, False
            elif memory.ticket is None:
                memory.ticket = next(self._tickets)
        waiting_levels = {d.priority for d in wanting if self._waiting(d.connector_id)}
        for d in wanting:
            memory = self._memory[d.connector_id]
            if (
                memory.offer_a
                and d.priority in waiting_levels
                and not memory.requeued
                and memory.turn_started_at is not None
                and (now - memory.turn_started_at).total_seconds() >= s.rotation_s
            ):
                memory.ticket, memory.requeued = next(self._tickets), True
        held_off = {d.connector_id for d in wanting if self._held_off(now, d.connector_id)}
        candidates = sorted((d for d in wanting if d.connector_id not in held_off), key=lambda d: self._rank(now, d))
        free = list(room)
        admitted: list[Demand] = []
        blocked_on: dict[int, Phase] = {}
        for d in candidates:
            if self._memory[d.connector_id].idle:
                continue
            if self._admit(d, min_steps, free, blocked_on):
                admitted.append(d)

        # 3. how much (idle cars only get 6 A where the others left room)
        steps = {d.connector_id: min_steps for d in admitted}
        for level in sorted({d.priority for d in admitted}, reverse=True):
            self._fill(steps, caps, [d for d in admitted if d.priority == level], free)
        for d in candidates:
            if self._memory[d.connector_id].idle and self._admit(d, min_steps, free, blocked_on):
                admitted.append(d)
                steps[d.connector_id] = min_steps

        # 4. gentle raises, reasons, memory
        result: dict[int, Allocation] = {}
        for d in demands:
            cid = d.connector_id
            memory = self._memory[cid]
            if cid in steps:
                current_a = self._amps(steps[cid])
                reason = self._charging_reason(d, steps[cid], caps[cid], cap_reason[cid], admitted, free, limits)
                if self._raise_held(now, memory, current_a):
                    current_a, reason = memory.offer_a, Reason.RAISE_HELD
            else:
                current_a = 0.0
                if not caps[cid]:
                    reason = cap_reason[cid]
                elif cid in held_off:
                    reason = Reason.SWITCH_HELD
                elif memory.idle:
                    reason = Reason.IDLE
                else:
                    reason = self._paused_reason(d, blocked_on[cid], admitted, room, min_steps, limits)
            self._remember(now, memory, current_a)
            result[cid] = Allocation(current_a, reason)
        still_waiting = {d.priority for d in wanting if self._waiting(d.connector_id)}
        for d in wanting:
            memory = self._memory[d.connector_id]
            if memory.offer_a and d.priority not in still_waiting:
                memory.turn_started_at = now  # a turn only runs while someone of its priority waits
        return result

    # -- the steps of the rule --------------------------------------------------------------------

    def _takes_less_cap(self, now: datetime, d: Demand) -> int | None:
        """Rule 1's cap for a car that settled at clearly less than its offer (None: no such cap)."""
        s = self.settings
        memory = self._memory[d.connector_id]
        drawn = d.drawn_max_a
        if not memory.offer_a or drawn is None:
            return None
        if (now - memory.offer_changed_at).total_seconds() < s.settle_s:
            return None
        if drawn >= memory.offer_a - s.unused_threshold_a:
            return None
        cap = self._floor(max(s.min_current_a, drawn + s.unused_headroom_a))
        offer = self._floor(memory.offer_a)
        if offer - cap < self._ceil(s.raise_step_a):
            return offer  # a small trim is not worth a write (and keeps noise from walking the offer down)
        return cap

    def _note_idle(self, now: datetime, d: Demand) -> None:
        """Rule 1's idle car: drew nothing for ``settle_s`` while offered current (see the module)."""
        s = self.settings
        memory = self._memory[d.connector_id]
        drawn = d.drawn_max_a
        if memory.offer_a:
            if drawn is None or drawn >= s.idle_below_a:
                memory.nothing_since, memory.idle = None, False
            elif memory.nothing_since is None:
                memory.nothing_since = now
            elif (now - memory.nothing_since).total_seconds() >= s.settle_s:
                memory.idle = True
        elif (
            memory.idle
            and memory.switched_at is not None
            and (now - memory.switched_at).total_seconds() >= s.rotation_s
        ):
            memory.idle, memory.ticket = False, next(self._tickets)  # its turn to show it wants current

    def _waiting(self, cid: int) -> bool:
        """Paused while it wants current (an idle car does not wait: it is not kept from anything)."""
        memory = self._memory[cid]
        return not memory.offer_a and not memory.idle

    def _held_off(self, now: datetime, cid: int) -> bool:
        memory = self._memory[cid]
        return (
            not memory.offer_a
            and memory.switched_at is not None
            and (now - memory.switched_at).total_seconds() < self.settings.min_off_s
        )

    def _locked_on(self, now: datetime, cid: int) -> bool:
        memory = self._memory[cid]
        return (
            bool(memory.offer_a)
            and memory.switched_at is not None
            and (now - memory.switched_at).total_seconds() < self.settings.min_on_s
        )

    def _rank(self, now: datetime, d: Demand) -> tuple[int, int, int, int, int]:
        """Admission order: within min on-time, priority, a running turn, then the queue's tickets
        (idle cars are admitted in a round of their own, after the others are filled)."""
        memory = self._memory[d.connector_id]
        in_turn = bool(memory.offer_a) and not memory.requeued
        return (
            0 if self._locked_on(now, d.connector_id) else 1,
            -d.priority,
            0 if in_turn else 1,
            0 if in_turn else (memory.ticket or 0),
            d.connector_id,
        )

    @staticmethod
    def _admit(d: Demand, min_steps: int, free: list[int], blocked_on: dict[int, Phase]) -> bool:
        """Switch ``d`` on at the minimum if it fits on all its phases (taking it from ``free``)."""
        full = [p for p in sorted(d.phases) if free[p] < min_steps]
        if full:
            blocked_on[d.connector_id] = full[0]
            return False
        for p in d.phases:
            free[p] -= min_steps
        return True

    @staticmethod
    def _fill(steps: dict[int, int], caps: Mapping[int, int], members: Sequence[Demand], free: list[int]) -> None:
        """Progressive filling of ``members`` (one priority level, in admission order) into ``free``.

        All rise by the same number of steps until one reaches its cap or one of its phases is
        full; when the room on a phase no longer divides among those on it, the single steps left
        go one each in admission order (equal shares within one step).
        """

        def open_(d: Demand) -> bool:
            return steps[d.connector_id] < caps[d.connector_id] and all(free[p] > 0 for p in d.phases)

        active = [d for d in members if open_(d)]
        while active:
            on_phase = [sum(1 for d in active if p in d.phases) for p in Phase]
            rise = min(
                min(caps[d.connector_id] - steps[d.connector_id] for d in active),
                min(free[p] // on_phase[p] for p in Phase if on_phase[p]),
            )
            if rise:
                for d in active:
                    steps[d.connector_id] += rise
                    for p in d.phases:
                        free[p] -= rise
            else:
                for d in active:
                    if all(free[p] > 0 for p in d.phases):
                        steps[d.connector_id] += 1
                        for p in d.phases:
                            free[p] -= 1
            active = [d for d in active if open_(d)]

    def _raise_held(self, now: datetime, memory: _Memory, current_a: float) -> bool:
        """Rule 4: whether a raise of a charging connector waits (its old, lower offer stays).

        A small raise must have been wanted without a break for ``raise_hold_s``: a limit that
        wobbles around the offer (measurement noise, a fridge) never raises it, and so the offer
        is not written up and down at every poll."""
        s = self.settings
        if not memory.offer_a or current_a <= memory.offer_a:
            memory.raise_wanted_since = None
            return False
        if current_a - memory.offer_a >= s.raise_step_a - _EPS:
            return False
        if memory.raise_wanted_since is None:
            memory.raise_wanted_since = now
        return (now - memory.raise_wanted_since).total_seconds() < s.raise_hold_s

    @staticmethod
    def _charging_reason(
        d: Demand,
        steps: int,
        cap: int,
        cap_reason: Reason,
        admitted: Sequence[Demand],
        free: Sequence[int],
        limits: Sequence[PhaseLimit],
    ) -> Reason:
        if steps >= cap:
            return cap_reason
        full = [p for p in sorted(d.phases) if free[p] <= 0] or sorted(d.phases)
        for p in full:
            if any(o.priority > d.priority and p in o.phases for o in admitted):
                return Reason.PRIORITY
        return min((limits[p] for p in full), key=lambda limit: limit.limit_a).source

    @staticmethod
    def _paused_reason(
        d: Demand,
        phase: Phase,
        admitted: Sequence[Demand],
        room: Sequence[int],
        min_steps: int,
        limits: Sequence[PhaseLimit],
    ) -> Reason:
        if room[phase] < min_steps:
            return limits[phase].source  # not even one car fits: the limit itself pauses it
        if any(o.priority <= d.priority and phase in o.phases for o in admitted):
            return Reason.ROTATION  # an equal holds the place: it takes turns with it
        return Reason.PRIORITY

    def _remember(self, now: datetime, memory: _Memory, current_a: float) -> None:
        if current_a != memory.offer_a:
            memory.offer_changed_at, memory.raise_wanted_since = now, None
        if bool(current_a) != bool(memory.offer_a):
            memory.switched_at, memory.nothing_since = now, now if current_a else None
            if current_a:
                memory.turn_started_at, memory.requeued = now, False
            else:
                memory.turn_started_at = None
        memory.offer_a = current_a
