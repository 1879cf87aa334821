"""Site power sharing (gateway.domain.load_sharing): the allocation rule, its properties and scenarios in time."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.load_sharing import Allocation, Demand, LoadSharing, SharingSettings
from gateway.domain.phase_limits import (
    ALL_PHASES,
    Phase,
    PhaseLimit,
    Reason,
    headroom_a,
    phase_limit,
)

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
STEP = 0.1  # the default resolution_a
TOL = 1e-6
L1, L2, L3 = Phase.L1, Phase.L2, Phase.L3


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def limits(a: float, b: float | None = None, c: float | None = None, source: Reason = Reason.FUSE) -> list[PhaseLimit]:
    return [PhaseLimit(a, source), PhaseLimit(a if b is None else b, source), PhaseLimit(a if c is None else c, source)]


def currents(result: dict[int, Allocation]) -> dict[int, float]:
    return {cid: allocation.current_a for cid, allocation in result.items()}


def phase_sums(result: dict[int, Allocation], demands: list[Demand]) -> list[float]:
    sums = [0.0, 0.0, 0.0]
    for d in demands:
        for p in d.phases:
            sums[p] += result[d.connector_id].current_a
    return sums


# -- the per-phase limit -------------------------------------------------------------------------


def test_headroom_is_the_fuse_less_margin_less_the_building() -> None:
    # 63 A fuse, 2 A margin, the meter sees 40 A of which the chargers draw 30 A: the building takes 10 A
    assert headroom_a(63, 2, 40, 30) == 51


def test_headroom_never_counts_on_export_nor_goes_negative() -> None:
    # the chargers measure more than the grid meter (solar on site): the building counts as 0, not -20
    assert headroom_a(40, 2, 10, 30) == 38
    # the building alone is over the fuse: nothing for the chargers, not a negative limit
    assert headroom_a(40, 2, 50, 0) == 0


def test_phase_limit_takes_the_lowest_and_names_it() -> None:
    assert phase_limit(30, fallback_a=16) == PhaseLimit(30, Reason.FUSE)
    assert phase_limit(30, fallback_a=16, csms_a=12) == PhaseLimit(12, Reason.CSMS)
    assert phase_limit(30, fallback_a=16, csms_a=20, site_a=10) == PhaseLimit(10, Reason.SITE_LIMIT)
    assert phase_limit(None, fallback_a=16, csms_a=20) == PhaseLimit(16, Reason.FALLBACK)
    assert phase_limit(None, fallback_a=16, csms_a=8) == PhaseLimit(8, Reason.CSMS)
    assert phase_limit(12, fallback_a=16, csms_a=12) == PhaseLimit(12, Reason.FUSE)  # a tie names the grid


def test_settings_refuse_a_headroom_that_would_oscillate() -> None:
    with pytest.raises(ValueError, match="unused_headroom_a"):
        SharingSettings(unused_threshold_a=3.0, unused_headroom_a=3.0)


# -- properties of one decision --------------------------------------------------------------------

phase_sets = st.sampled_from([ALL_PHASES, frozenset({L1}), frozenset({L2}), frozenset({L3}), frozenset({L1, L2})])


@st.composite
def demand_lists(draw: st.DrawFn) -> list[Demand]:
    count = draw(st.integers(0, 8))
    return [
        Demand(
            connector_id=cid,
            max_a=draw(st.sampled_from([0.0, 5.0, 6.0, 8.5, 10.0, 16.0, 32.0])),
            phases=draw(phase_sets),
            priority=draw(st.integers(0, 2)),
        )
        for cid in range(1, count + 1)
    ]


phase_limits = st.lists(st.floats(0, 80, allow_nan=False).map(lambda a: round(a, 2)), min_size=3, max_size=3)


@given(demand_lists(), phase_limits)
@settings(max_examples=400, deadline=None)
def test_one_decision_is_safe_legal_fair_and_uses_the_room(demands: list[Demand], amps: list[float]) -> None:
    result = LoadSharing().decide(T0, [PhaseLimit(a) for a in amps], demands)
    assert set(result) == {d.connector_id for d in demands}
    by_id = {d.connector_id: d for d in demands}

    # never above the limit on any phase
    for p, total in enumerate(phase_sums(result, demands)):
        assert total <= amps[p] + TOL

    # every offer is 0 or within [6 A, its own bound]
    for cid, allocation in result.items():
        current = allocation.current_a
        assert current == 0 or 6.0 - TOL <= current <= by_id[cid].max_a + TOL

    free = [amps[p] - total for p, total in enumerate(phase_sums(result, demands))]
    for d in demands:
        current = result[d.connector_id].current_a
        if d.max_a < 6.0:
            assert current == 0 and result[d.connector_id].reason is Reason.OWN_LIMIT
            continue
        # no idle current a car could use: one below its bound has a full phase; a paused one lacks 6 A
        if current == 0:
            assert any(free[p] < 6.0 for p in d.phases)
        elif current < d.max_a - STEP + TOL:
            assert any(free[p] < STEP - TOL for p in d.phases)

    charging = [d for d in demands if result[d.connector_id].current_a > 0]
    for a in charging:
        for b in charging:
            ca, cb = result[a.connector_id].current_a, result[b.connector_id].current_a
            # equals (same priority, same phases) get equal shares within one step unless bound by their own limit
            if a.priority == b.priority and a.phases == b.phases and ca < cb - STEP - TOL:
                assert ca >= a.max_a - STEP - TOL, (a, b, result)
            # a higher priority is served first: while it is short, one of lower priority that could
            # have given it current (it draws on all the same phases) gets no more than 6 A
            if a.priority > b.priority and b.phases >= a.phases and ca < a.max_a - STEP - TOL:
                assert cb <= 6.0 + TOL, (a, b, result)
    # a higher-priority car is never paused while a lower one on all of its phases charges
    for high in demands:
        if high.max_a >= 6.0 and result[high.connector_id].current_a == 0:
            for low in charging:
                assert not (low.priority < high.priority and low.phases >= high.phases), (high, low, result)


@st.composite
def timelines(draw: st.DrawFn) -> list[tuple[float, list[float], list[Demand]]]:
    """Decisions 1..120 s apart, each with its own limits and demands (cars come, go, change)."""
    moments: list[tuple[float, list[float], list[Demand]]] = []
    now = 0.0
    for _ in range(draw(st.integers(1, 15))):
        now += draw(st.sampled_from([1.0, 5.0, 30.0, 61.0, 120.0, 901.0]))
        demands = draw(demand_lists())
        demands = [
            Demand(
                d.connector_id,
                d.max_a,
                d.phases,
                d.priority,
                drawn_a={p: draw(st.sampled_from([0.0, 3.0, 6.0, 12.0, 30.0])) for p in d.phases},
                offered_a=draw(st.none() | st.sampled_from([0.0, 6.0, 13.0, 40.0])),
            )
            for d in demands
        ]
        moments.append((now, draw(phase_limits), demands))
    return moments


@given(timelines())
@settings(max_examples=300, deadline=None)
def test_over_time_memory_never_breaks_the_limit_or_the_legal_range(
    moments: list[tuple[float, list[float], list[Demand]]],
) -> None:
    """Hysteresis, minimum on-time, rotation and what cars take: none of them may cost safety."""
    sharing = LoadSharing()
    for now, amps, demands in moments:
        result = sharing.decide(at(now), [PhaseLimit(a) for a in amps], demands)
        for p, total in enumerate(phase_sums(result, demands)):
            assert total <= amps[p] + TOL
        for d in demands:
            current = result[d.connector_id].current_a
            assert current == 0 or 6.0 - TOL <= current <= d.max_a + TOL


# -- scenarios in time ---------------------------------------------------------------------------


def three_phase(cid: int, max_a: float = 32.0, priority: int = 0, drawn: float | None = None) -> Demand:
    return Demand(cid, max_a, priority=priority, drawn_a={} if drawn is None else dict.fromkeys(Phase, drawn))


def test_equal_split_and_priority_first() -> None:
    sharing = LoadSharing()
    result = sharing.decide(T0, limits(40), [three_phase(1, priority=1), three_phase(2), three_phase(3)])
    # 6 A for every car that fits, then the rest to the higher priority first: 28 A, the others keep 6 A
    assert currents(result) == {1: 28.0, 2: 6.0, 3: 6.0}
    assert result[1].reason is Reason.FUSE
    assert result[2].reason is Reason.PRIORITY
    # 14 A: only two fit at 6 A; the high-priority car is one of them and takes the spare 2 A
    result = LoadSharing().decide(T0, limits(14), [three_phase(1, priority=1), three_phase(2), three_phase(3)])
    assert currents(result) == {1: 8.0, 2: 6.0, 3: 0.0}
    assert result[3].reason is Reason.ROTATION
    result = LoadSharing().decide(T0, limits(40), [three_phase(1), three_phase(2), three_phase(3)])
    assert currents(result) == {1: 13.4, 2: 13.3, 3: 13.3}  # equal, within one 0.1 A step, sum 40
    assert {a.reason for a in result.values()} == {Reason.FUSE}


def test_a_load_step_down_cuts_at_once() -> None:
    sharing = LoadSharing()
    cars = [three_phase(1), three_phase(2)]
    assert currents(sharing.decide(at(0), limits(40), cars)) == {1: 20.0, 2: 20.0}
    # the building switches on 15 A: the very next decision cuts, however recent the last change
    result = sharing.decide(at(1), limits(25, source=Reason.FUSE), cars)
    assert currents(result) == {1: 12.5, 2: 12.5}
    assert result[1].reason is Reason.FUSE


def test_a_small_step_up_waits_for_the_hold_time_a_large_one_does_not() -> None:
    sharing = LoadSharing(SharingSettings(raise_step_a=2.0, raise_hold_s=60.0))
    cars = [three_phase(1), three_phase(2)]
    sharing.decide(at(0), limits(20), cars)  # 10 A each
    # 2 A more on the phase: 1 A each, below the raise step: held
    result = sharing.decide(at(10), limits(22), cars)
    assert currents(result) == {1: 10.0, 2: 10.0}
    assert result[1].reason is Reason.RAISE_HELD
    assert currents(sharing.decide(at(69), limits(22), cars)) == {1: 10.0, 2: 10.0}
    # the raise has been wanted for 60 s: now it applies
    assert currents(sharing.decide(at(70), limits(22), cars)) == {1: 11.0, 2: 11.0}
    # a step of 3 A each is at least the raise step: applied at once
    assert currents(sharing.decide(at(71), limits(28), cars)) == {1: 14.0, 2: 14.0}


def test_noise_does_not_make_the_limit_oscillate() -> None:
    """The building's load wobbles by +-0.5 A: offers go down with it at once but up only every hold time."""
    sharing = LoadSharing(SharingSettings(raise_step_a=2.0, raise_hold_s=60.0))
    cars = [three_phase(1)]
    offers = []
    for k in range(60):  # 5 minutes of 5-second polls
        offers.append(sharing.decide(at(5 * k), limits(20.0 if k % 2 else 19.5), cars)[1].current_a)
    changes = sum(1 for a, b in itertools.pairwise(offers) if a != b)
    assert changes == 0, offers  # it starts at 19.5 A and stays; following each poll would be 59 writes


def test_a_car_taking_less_gives_the_rest_to_the_others_after_settling() -> None:
    sharing = LoadSharing(SharingSettings(settle_s=60.0, unused_threshold_a=2.0, unused_headroom_a=3.0))
    assert currents(sharing.decide(at(0), limits(32), [three_phase(1), three_phase(2)])) == {1: 16.0, 2: 16.0}
    # car 1 only takes 8 A (its battery is warm, or it charges slowly): not yet settled, nothing moves
    taking_less = [three_phase(1, drawn=8.0), three_phase(2, drawn=16.0)]
    assert currents(sharing.decide(at(30), limits(32), taking_less)) == {1: 16.0, 2: 16.0}
    # settled: car 1 is offered what it takes plus 3 A, car 2 gets the rest at once
    result = sharing.decide(at(60), limits(32), taking_less)
    assert currents(result) == {1: 11.0, 2: 21.0}
    assert result[1].reason is Reason.TAKES_LESS
    # it keeps taking 8 A (and car 2 its 21 A): its offer stays (no walk down, no oscillation)
    steady = [three_phase(1, drawn=8.0), three_phase(2, drawn=21.0)]
    assert currents(sharing.decide(at(200), limits(32), steady)) == {1: 11.0, 2: 21.0}
    assert currents(sharing.decide(at(205), limits(32), [three_phase(1, drawn=7.8), steady[1]])) == {1: 11.0, 2: 21.0}
    # it rises to 10.5 A, close to its offer: the cap is lifted and the two share equally again
    rising = [three_phase(1, drawn=10.5), three_phase(2, drawn=21.0)]
    assert currents(sharing.decide(at(210), limits(32), rising)) == {1: 16.0, 2: 16.0}


def test_rotation_when_four_cars_want_6_a_and_12_a_is_there() -> None:
    rotation_s, poll_s = 900.0, 10.0
    sharing = LoadSharing(SharingSettings(rotation_s=rotation_s))
    cars = [three_phase(cid) for cid in (1, 2, 3, 4)]
    charged_s = dict.fromkeys((1, 2, 3, 4), 0.0)
    longest_wait_s = dict.fromkeys((1, 2, 3, 4), 0.0)
    waiting_since = dict.fromkeys((1, 2, 3, 4), 0.0)
    switches = dict.fromkeys((1, 2, 3, 4), 0)
    previous: dict[int, float] = {}
    for k in range(int(4 * rotation_s / poll_s)):
        now = k * poll_s
        result = currents(sharing.decide(at(now), limits(12), cars))
        assert sum(result.values()) <= 12.0 + TOL
        assert sorted(result.values()) == [0.0, 0.0, 6.0, 6.0]  # never idle, never more than fits
        for cid, current in result.items():
            if current:
                charged_s[cid] += poll_s
                waiting_since[cid] = now + poll_s
            longest_wait_s[cid] = max(longest_wait_s[cid], now + poll_s - waiting_since[cid])
            if previous and bool(previous[cid]) != bool(current):
                switches[cid] += 1
        previous = result
    # over four turns every car charged half the time, none waited longer than one turn
    assert all(seconds == 2 * rotation_s for seconds in charged_s.values()), charged_s
    assert all(wait <= rotation_s + poll_s for wait in longest_wait_s.values()), longest_wait_s
    assert all(count <= 4 for count in switches.values()), switches  # switched at turn ends only


def test_a_car_arriving_at_a_full_site_waits_one_turn_not_forever() -> None:
    sharing = LoadSharing(SharingSettings(rotation_s=600.0))
    first = [three_phase(1), three_phase(2)]
    for k in range(0, 3000, 10):
        sharing.decide(at(k), limits(12), first)
    # the two have charged long before car 3 arrives: their turns only run while someone waits
    result = sharing.decide(at(3000), limits(12), [*first, three_phase(3)])
    assert currents(result) == {1: 6.0, 2: 6.0, 3: 0.0}
    assert result[3].reason is Reason.ROTATION
    # their turns count from the last decision at which nobody waited (2990 s): car 3 waits 600 s at most
    for k in range(3010, 3590, 10):
        assert currents(sharing.decide(at(k), limits(12), [*first, three_phase(3)]))[3] == 0.0
    result = currents(sharing.decide(at(3590), limits(12), [*first, three_phase(3)]))
    assert result[3] == 6.0 and sorted(result.values()) == [0.0, 6.0, 6.0]


def test_priority_is_not_rotated_away() -> None:
    sharing = LoadSharing(SharingSettings(rotation_s=600.0))
    cars = [three_phase(1, priority=1), three_phase(2), three_phase(3)]
    for k in range(0, 3600, 10):
        result = sharing.decide(at(k), limits(12), cars)
        assert result[1].current_a >= 6.0  # the high-priority car charges throughout
    assert result[2].current_a + result[3].current_a == 6.0  # the two others take turns with the rest


def test_single_phase_cars_on_different_phases_do_not_take_from_each_other() -> None:
    sharing = LoadSharing()
    on_l1 = Demand(1, 32.0, frozenset({L1}))
    on_l2 = Demand(2, 32.0, frozenset({L2}))
    also_l1 = Demand(3, 32.0, frozenset({L1}))
    result = currents(sharing.decide(T0, limits(20, 20, 20), [on_l1, on_l2, also_l1]))
    # the two on L1 share L1; the one on L2 has L2 to itself
    assert result == {1: 10.0, 2: 20.0, 3: 10.0}
    # L2 fills with building load: only the car on L2 is cut
    result = currents(sharing.decide(at(1), limits(20, 7, 20), [on_l1, on_l2, also_l1]))
    assert result == {1: 10.0, 2: 7.0, 3: 10.0}
    # a three-phase car takes from every phase: it and the single-phase cars share per phase
    three = three_phase(4)
    result = currents(LoadSharing().decide(T0, limits(20, 20, 20), [on_l1, on_l2, three]))
    assert result == {1: 10.0, 2: 10.0, 4: 10.0}
    # a single-phase car is paused only by its own phase: L3 empty pauses nobody on L1/L2
    result = currents(LoadSharing().decide(T0, limits(20, 20, 0), [on_l1, on_l2, Demand(5, 32.0, frozenset({L3}))]))
    assert result == {1: 20.0, 2: 20.0, 5: 0.0}


def test_minimum_on_time_gives_way_when_the_limit_forces_a_cut() -> None:
    sharing = LoadSharing(SharingSettings(min_on_s=120.0, min_off_s=120.0))
    low, high = three_phase(1), three_phase(2, priority=1)
    assert currents(sharing.decide(at(0), limits(12), [low, high])) == {1: 6.0, 2: 6.0}
    # both just switched on; 10 A is not enough for two: one must go at once, the lower priority
    result = sharing.decide(at(20), limits(10), [low, high])
    assert currents(result) == {1: 0.0, 2: 10.0}
    assert result[1].reason is Reason.PRIORITY
    # under 6 A nobody may charge, on-time or not
    result = sharing.decide(at(30), limits(5), [low, high])
    assert currents(result) == {1: 0.0, 2: 0.0}
    assert result[2].reason is Reason.FUSE


def test_minimum_on_time_delays_a_pause_for_priority_but_not_for_ever() -> None:
    sharing = LoadSharing(SharingSettings(min_on_s=120.0, min_off_s=120.0))
    low, high = three_phase(1), three_phase(2, priority=1)
    sharing.decide(at(0), limits(10), [low])  # low switches on at 0 s
    # high arrives at 60 s, 10 A is only enough for one: low is kept on for its minimum on-time
    result = sharing.decide(at(60), limits(10), [low, high])
    assert currents(result) == {1: 10.0, 2: 0.0}
    # at 120 s low's on-time is over: priority wins
    assert currents(sharing.decide(at(120), limits(10), [low, high])) == {1: 0.0, 2: 10.0}


def test_minimum_off_time_keeps_a_paused_car_paused() -> None:
    sharing = LoadSharing(SharingSettings(min_on_s=0.0, min_off_s=120.0))
    car = [three_phase(1)]
    sharing.decide(at(0), limits(10), car)
    assert currents(sharing.decide(at(10), limits(4), car)) == {1: 0.0}  # paused at 10 s by the limit
    result = sharing.decide(at(20), limits(10), car)  # room again, 10 s later
    assert currents(result) == {1: 0.0}
    assert result[1].reason is Reason.SWITCH_HELD
    assert currents(sharing.decide(at(130), limits(10), car)) == {1: 10.0}


def test_own_limit_pauses_at_once_whatever_the_on_time() -> None:
    sharing = LoadSharing(SharingSettings(min_on_s=600.0))
    sharing.decide(at(0), limits(32), [three_phase(1)])
    result = sharing.decide(at(1), limits(32), [three_phase(1, max_a=0.0)])  # e.g. its SoC target reached
    assert result[1] == Allocation(0.0, Reason.OWN_LIMIT)


def test_after_a_restart_a_raise_from_what_the_charger_offers_is_still_gentle() -> None:
    sharing = LoadSharing(SharingSettings(raise_step_a=2.0, raise_hold_s=60.0))
    car = [Demand(1, 32.0, offered_a=15.0)]
    result = sharing.decide(at(0), limits(16), car)
    assert result[1] == Allocation(15.0, Reason.RAISE_HELD)
    assert currents(sharing.decide(at(60), limits(16), car)) == {1: 16.0}


def test_connectors_that_leave_are_forgotten_and_come_back_fresh() -> None:
    sharing = LoadSharing(SharingSettings(min_off_s=600.0))
    sharing.decide(at(0), limits(10), [three_phase(1)])
    sharing.decide(at(1), limits(0), [three_phase(1)])  # paused: min off-time starts
    sharing.decide(at(2), limits(10), [])  # the session ended
    assert currents(sharing.decide(at(3), limits(10), [three_phase(1)])) == {1: 10.0}  # a new session starts


def test_limits_must_be_per_phase_and_connectors_unique() -> None:
    with pytest.raises(ValueError, match="one limit per phase"):
        LoadSharing().decide(T0, [PhaseLimit(10)], [])
    with pytest.raises(ValueError, match="twice"):
        LoadSharing().decide(T0, limits(10), [three_phase(1), three_phase(1)])


def test_a_full_car_is_served_last_and_only_from_what_the_others_leave() -> None:
    """A car that draws nothing when offered current (full) stops holding 6 A that others need."""
    s = SharingSettings(settle_s=60.0, rotation_s=900.0, min_off_s=120.0)
    sharing = LoadSharing(s)
    # three cars, 12 A: two fit at 6 A; car 1 is full (draws nothing), car 3 waits for a turn
    cars = [three_phase(1, drawn=0.0), three_phase(2, drawn=6.0), three_phase(3)]
    assert currents(sharing.decide(at(0), limits(12), cars)) == {1: 6.0, 2: 6.0, 3: 0.0}
    # once settled, car 1 is idle: paused for car 3 at once, although its turn has 14 minutes to run
    sharing.decide(at(59), limits(12), cars)
    result = sharing.decide(at(60), limits(12), cars)
    assert result[1] == Allocation(0.0, Reason.IDLE)
    assert currents(result) == {1: 0.0, 2: 6.0, 3: 6.0}
    # with room to spare an idle car gets its 6 A back, but never from what the others can take
    spare = [three_phase(1, drawn=0.0), three_phase(2, max_a=8.0, drawn=8.0), three_phase(3, max_a=6.0, drawn=6.0)]
    result = sharing.decide(at(300), limits(20), spare)
    assert currents(result) == {1: 6.0, 2: 8.0, 3: 6.0}
    result = sharing.decide(at(301), limits(19), spare)  # 5 A left over: not enough for the idle car
    assert currents(result) == {1: 0.0, 2: 8.0, 3: 6.0}
    assert result[1].reason is Reason.IDLE


def test_an_idle_car_gets_a_turn_to_show_it_wants_current_again() -> None:
    """A car charging on its own timer looks full; after a turn paused it is asked again, and charges."""
    s = SharingSettings(settle_s=60.0, rotation_s=900.0, min_on_s=120.0, min_off_s=120.0)
    sharing = LoadSharing(s)
    idle_then_wanting = three_phase(1, drawn=0.0)
    others = [three_phase(2, drawn=6.0), three_phase(3, drawn=6.0)]
    for k in range(0, 200, 10):  # 12 A: two fit; car 1 draws nothing and becomes idle
        result = sharing.decide(at(k), limits(12), [idle_then_wanting, *others])
    assert result[1] == Allocation(0.0, Reason.IDLE)
    paused_at = next(k for k in range(0, 200, 10) if k >= 60)  # idle once settled, paused at that decision
    # now its timer starts: while paused it cannot show it; a turn after its pause it queues as new
    wanting = three_phase(1, drawn=0.0)
    k = 200
    while currents(sharing.decide(at(k), limits(12), [wanting, *others]))[1] == 0.0:
        k += 10
        assert k <= paused_at + 900 + 900 + 20, "an idle car must get a turn within two rotations"
    # switched on again: it draws now, so it stays in the ordinary rotation
    result = sharing.decide(at(k + 70), limits(12), [three_phase(1, drawn=6.0), *others])
    assert result[1].current_a == 6.0
    assert sharing.decide(at(k + 200), limits(12), [three_phase(1, drawn=6.0), *others])[1].reason is not Reason.IDLE
