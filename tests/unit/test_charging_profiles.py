"""Charging profiles: install and clear rules, stacking, purposes, recurrence, composite, persistence."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from gateway.domain.charging_profiles import (
    ChargingProfile,
    ChargingSchedule,
    ProfileKind,
    ProfilePurpose,
    RateUnit,
    Recurrence,
    SchedulePeriod,
    Supply,
    profile_from_dict,
    profile_to_dict,
)
from gateway.domain.charging_schedule import MAX_SKIPPED, CompositePeriod, charger_setpoint_a
from gateway.domain.charging_store import ChargingProfileStore, LimitAt, StoreLimits
from gateway.domain.errors import CommandRejected

T0 = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday, 00:00 UTC
MAX = ProfilePurpose.CHARGE_POINT_MAX
DEFAULT = ProfilePurpose.TX_DEFAULT
TX = ProfilePurpose.TX


def at(hours: float = 0, days: float = 0) -> datetime:
    return T0 + timedelta(days=days, hours=hours)


def profile(
    profile_id: int = 1,
    *,
    connector: int = 0,
    stack: int = 0,
    purpose: ProfilePurpose = DEFAULT,
    kind: ProfileKind = ProfileKind.ABSOLUTE,
    periods: tuple[tuple[int, float], ...] = ((0, 16.0),),
    start: datetime | None = T0,
    duration_s: int | None = None,
    unit: RateUnit = RateUnit.AMPERE,
    recurrence: Recurrence | None = None,
    transaction_id: int | None = None,
    valid_from: datetime | None = None,
    valid_to: datetime | None = None,
) -> ChargingProfile:
    return ChargingProfile(
        profile_id=profile_id,
        connector_id=connector,
        stack_level=stack,
        purpose=purpose,
        kind=kind,
        transaction_id=transaction_id,
        recurrence=recurrence,
        valid_from=valid_from,
        valid_to=valid_to,
        schedule=ChargingSchedule(
            periods=tuple(SchedulePeriod(s, limit) for s, limit in periods),
            rate_unit=unit,
            start_schedule=start,
            duration_s=duration_s,
        ),
    )


def store_with(
    *profiles: ChargingProfile, connectors: int = 2, supply: Supply | None = None, limits: StoreLimits | None = None
) -> ChargingProfileStore:
    store = ChargingProfileStore(connectors, supply=supply, limits=limits)
    for p in profiles:
        store.install(p, active_transaction_id=p.transaction_id)
    return store


# -- stacking and purposes ----------------------------------------------------------------------
def test_no_profile_means_no_limit_and_no_change() -> None:
    assert ChargingProfileStore(2).limit_at(1, at(5)) == LimitAt(None, None)


def test_the_highest_stack_level_in_effect_wins_and_the_lower_one_returns_when_it_ends() -> None:
    store = store_with(
        profile(1, stack=0, periods=((0, 16.0),)),
        profile(2, stack=3, periods=((0, 10.0),), start=at(1), duration_s=3600),
    )
    assert store.limit_at(1, at(0)) == LimitAt(16.0, at(1))
    assert store.limit_at(1, at(1)) == LimitAt(10.0, at(2))
    assert store.limit_at(1, at(2)) == LimitAt(16.0, None)


def test_charge_point_max_caps_every_purpose() -> None:
    store = store_with(profile(1, purpose=MAX, periods=((0, 20.0),)), profile(2, periods=((0, 16.0),)))
    assert store.limit_at(1, at(1)).limit_a == 16.0
    store.install(profile(3, connector=1, stack=0, purpose=TX, periods=((0, 32.0),)), active_transaction_id=7)
    assert store.limit_at(1, at(1), transaction_started_at=at(0)).limit_a == 20.0  # TX 32, capped by max 20
    assert store.limit_at(2, at(1), transaction_started_at=at(0)).limit_a == 16.0  # the TX is connector 1's


def test_tx_profile_overrules_tx_default_whatever_the_stack_levels() -> None:
    store = store_with(profile(1, stack=9, periods=((0, 16.0),)))
    store.install(profile(2, connector=1, purpose=TX, periods=((0, 25.0),)), active_transaction_id=7)
    assert store.limit_at(1, at(1), transaction_started_at=at(0)).limit_a == 25.0
    assert store.limit_at(1, at(1)).limit_a == 16.0  # no transaction: TX profiles take no part


def test_an_expired_tx_profile_falls_back_to_tx_default() -> None:
    store = store_with(profile(1, periods=((0, 16.0),)))
    store.install(profile(2, connector=1, purpose=TX, periods=((0, 8.0),), duration_s=1800), active_transaction_id=7)
    assert store.limit_at(1, at(0), transaction_started_at=at(0)) == LimitAt(8.0, at(0.5))
    assert store.limit_at(1, at(0.5), transaction_started_at=at(0)) == LimitAt(16.0, None)


def test_connector_zero_is_the_charge_point_max_alone() -> None:
    store = store_with(profile(1, purpose=MAX, periods=((0, 40.0),)), profile(2, periods=((0, 16.0),)))
    assert store.limit_at(0, at(1)).limit_a == 40.0


def test_a_connector_tx_default_beats_connector_zero_at_the_same_stack_level_only() -> None:
    store = store_with(
        profile(1, connector=0, stack=1, periods=((0, 16.0),)), profile(2, connector=1, stack=1, periods=((0, 10.0),))
    )
    assert store.limit_at(1, at(1)).limit_a == 10.0
    assert store.limit_at(2, at(1)).limit_a == 16.0
    store.install(profile(3, connector=0, stack=2, periods=((0, 13.0),)))
    assert store.limit_at(1, at(1)).limit_a == 13.0  # a higher stack level on connector 0 still wins


def test_limits_in_watts_become_amperes_per_phase() -> None:
    three_phase = profile(1, unit=RateUnit.WATT, periods=((0, 11040.0),))
    assert store_with(three_phase).limit_at(1, at(1)).limit_a == pytest.approx(16.0)
    single_phase_site = store_with(profile(1, unit=RateUnit.WATT, periods=((0, 3680.0),)), supply=Supply(230.0, 1))
    assert single_phase_site.limit_at(1, at(1)).limit_a == pytest.approx(16.0)
    one_phase_period = with_periods(profile(1, unit=RateUnit.WATT), SchedulePeriod(0, 3680.0, number_phases=1))
    assert store_with(one_phase_period).limit_at(1, at(1)).limit_a == pytest.approx(16.0)


def with_periods(p: ChargingProfile, *periods: SchedulePeriod) -> ChargingProfile:
    return replace(p, schedule=replace(p.schedule, periods=periods))


# -- when schedules run -------------------------------------------------------------------------
def test_daily_recurrence_across_midnight() -> None:
    # From Monday 22:00 every day: 32 A overnight, 10 A from 06:00 (8 h in) until 22:00.
    night = profile(
        1, kind=ProfileKind.RECURRING, recurrence=Recurrence.DAILY, start=at(22), periods=((0, 32.0), (8 * 3600, 10.0))
    )
    store = store_with(night)
    assert store.limit_at(1, at(21)) == LimitAt(None, at(22))  # not in effect before its first run
    assert store.limit_at(1, at(23.5, days=1)) == LimitAt(32.0, at(6, days=2))
    assert store.limit_at(1, at(5.99, days=2)).limit_a == 32.0
    assert store.limit_at(1, at(6, days=2)) == LimitAt(10.0, at(22, days=2))


def test_daily_recurrence_with_a_duration_leaves_gaps() -> None:
    store = store_with(
        profile(1, periods=((0, 16.0),)),
        profile(
            2,
            stack=1,
            kind=ProfileKind.RECURRING,
            recurrence=Recurrence.DAILY,
            start=at(12),
            duration_s=7200,
            periods=((0, 6.0),),
        ),
    )
    assert store.limit_at(1, at(13, days=3)) == LimitAt(6.0, at(14, days=3))
    assert store.limit_at(1, at(14, days=3)) == LimitAt(16.0, at(12, days=4))


def test_weekly_recurrence_across_the_week_boundary() -> None:
    # From Saturday 00:00 every week: 10 A over the weekend, 32 A from Monday 00:00 (48 h in).
    weekend = profile(
        1,
        kind=ProfileKind.RECURRING,
        recurrence=Recurrence.WEEKLY,
        start=at(days=5),
        periods=((0, 10.0), (172800, 32.0)),
    )
    store = store_with(weekend)
    assert store.limit_at(1, at(23.99, days=13)) == LimitAt(10.0, at(days=14))  # Sunday night, second week
    assert store.limit_at(1, at(days=14)) == LimitAt(32.0, at(days=19))  # Monday until Saturday


def test_a_recurrence_that_never_changes_reports_no_change_within_the_horizon() -> None:
    flat = profile(1, kind=ProfileKind.RECURRING, recurrence=Recurrence.DAILY, start=at(0), periods=((0, 16.0),))
    limit = store_with(flat).limit_at(1, at(3))
    assert limit.limit_a == 16.0
    assert limit.next_change_at is not None and limit.next_change_at - at(3) > timedelta(days=8)


def test_boundaries_where_nothing_changes_are_skipped_a_bounded_number_of_times() -> None:
    """100 periods a day at one limit: the next change is looked for over MAX_SKIPPED boundaries, not
    8 days of them (50 such profiles took seconds of the event loop at every decision)."""
    flat = tuple((start_s, 16.0) for start_s in range(0, 86400, 864))
    busy = profile(1, kind=ProfileKind.RECURRING, recurrence=Recurrence.DAILY, start=at(0), periods=flat)
    limit = store_with(busy).limit_at(1, at(0))
    assert limit == LimitAt(16.0, at(0) + timedelta(seconds=MAX_SKIPPED * 864))


def test_relative_profiles_start_with_the_transaction() -> None:
    ramp = profile(1, kind=ProfileKind.RELATIVE, start=None, periods=((0, 6.0), (1800, 16.0)))
    store = store_with(ramp)
    assert store.limit_at(1, at(10 + 1 / 6), transaction_started_at=at(10)) == LimitAt(6.0, at(10.5))
    assert store.limit_at(1, at(11), transaction_started_at=at(10)) == LimitAt(16.0, None)
    assert store.limit_at(1, at(11)) == LimitAt(6.0, None)  # no session yet: what a session starts with


def test_absolute_without_start_schedule_is_relative_to_the_transaction() -> None:
    store = store_with(profile(1, start=None, periods=((0, 8.0), (600, 16.0))))
    assert store.limit_at(1, at(9.05), transaction_started_at=at(9)) == LimitAt(8.0, at(9) + timedelta(seconds=600))


def test_valid_from_and_valid_to_bound_a_profile() -> None:
    store = store_with(
        profile(1, periods=((0, 16.0),)),
        profile(2, stack=1, periods=((0, 10.0),), valid_from=at(1), valid_to=at(2)),
    )
    assert store.limit_at(1, at(0)) == LimitAt(16.0, at(1))
    assert store.limit_at(1, at(1)) == LimitAt(10.0, at(2))
    assert store.limit_at(1, at(2)) == LimitAt(16.0, None)


def test_an_absolute_schedule_in_the_future_is_not_yet_in_effect() -> None:
    store = store_with(profile(1, start=at(3), periods=((0, 10.0),)))
    assert store.limit_at(1, at(1)) == LimitAt(None, at(3))


# -- transactions --------------------------------------------------------------------------------
def test_a_tx_profile_is_bound_to_the_transaction_and_ends_with_it() -> None:
    store = store_with(profile(1, periods=((0, 16.0),)))
    stored = store.install(profile(5, connector=1, purpose=TX, periods=((0, 8.0),)), active_transaction_id=42)
    assert stored.transaction_id == 42
    assert store.limit_at(1, at(1), transaction_started_at=at(0)).limit_a == 8.0
    assert store.end_transaction(1) == [5]
    assert store.limit_at(1, at(1), transaction_started_at=at(0)).limit_a == 16.0
    assert store.end_transaction(1) == []


def test_tx_profiles_need_their_transaction() -> None:
    store = ChargingProfileStore(2)
    tx = profile(5, connector=1, purpose=TX)
    with pytest.raises(CommandRejected, match="no transaction is active on connector 1"):
        store.install(tx)
    with pytest.raises(CommandRejected, match="transaction 41 is not the one active"):
        store.install(replace(tx, transaction_id=41), active_transaction_id=42)
    with pytest.raises(CommandRejected, match="not 0"):
        store.install(replace(tx, connector_id=0), active_transaction_id=42)
    assert len(store) == 0


def test_a_remote_start_profile_waits_for_its_transaction() -> None:
    store = ChargingProfileStore(2)
    stored = store.install(profile(5, connector=1, purpose=TX, periods=((0, 10.0),)), remote_start=True)
    assert stored.transaction_id is None
    assert store.limit_at(1, at(1)).limit_a is None  # no transaction yet
    assert store.limit_at(1, at(1), transaction_started_at=at(0.5)).limit_a == 10.0
    with pytest.raises(CommandRejected, match="must be a TX profile"):
        store.install(profile(6, connector=1), remote_start=True)
    with pytest.raises(CommandRejected, match="must not carry a transaction_id"):
        store.install(profile(6, connector=1, purpose=TX, transaction_id=3), remote_start=True)


# -- replacing and clearing ---------------------------------------------------------------------
def test_replacement_by_id_or_by_stack_level_and_purpose_on_the_same_connector() -> None:
    store = store_with(profile(1, connector=1, stack=2), profile(2, connector=2, stack=2), profile(3, connector=1))
    store.install(profile(1, connector=2, stack=5))  # same id, elsewhere: the old one goes
    assert sorted(p.profile_id for p in store) == [1, 2, 3]
    assert store.get(1) == profile(1, connector=2, stack=5)
    store.install(profile(9, connector=2, stack=2))  # same connector, purpose and stack level as 2
    assert sorted(p.profile_id for p in store) == [1, 3, 9]
    store.install(profile(10, connector=0, stack=2, purpose=MAX))  # same stack level, other purpose
    store.install(profile(11, connector=1, stack=5))  # same stack level and purpose as 1, other connector
    assert sorted(p.profile_id for p in store) == [1, 3, 9, 10, 11]


def test_clear_by_id_ignores_the_other_criteria() -> None:
    store = store_with(profile(1, connector=0), profile(2, connector=1))
    assert store.clear(profile_id=1, connector_id=2, purpose=TX) == [1]
    assert store.clear(profile_id=1) == []
    assert [p.profile_id for p in store] == [2]


def test_clear_by_criteria_matches_all_of_them() -> None:
    def fresh() -> ChargingProfileStore:
        return store_with(
            profile(1, connector=0, stack=1, purpose=MAX),
            profile(2, connector=0, stack=1),
            profile(3, connector=1, stack=1),
            profile(4, connector=1, stack=2),
        )

    assert fresh().clear(connector_id=0) == [1, 2]  # connector 0 means profiles on 0, not every connector
    assert fresh().clear(purpose=DEFAULT) == [2, 3, 4]
    assert fresh().clear(stack_level=1) == [1, 2, 3]
    assert fresh().clear(connector_id=1, stack_level=2) == [4]
    assert fresh().clear(connector_id=2) == []
    assert fresh().clear() == [1, 2, 3, 4]


# -- validation ---------------------------------------------------------------------------------
NAIVE = datetime(2026, 3, 2)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (profile(connector=1, purpose=MAX), "charge point max profile belongs on connector 0"),
        (profile(connector=3), "connector 3 does not exist"),
        (profile(periods=((60, 16.0),)), "first period starts at 60 s, not 0"),
        (profile(periods=((0, 16.0), (600, 10.0), (600, 8.0))), "period 2 starts at 600 s, not after 600 s"),
        (profile(periods=((0, 16.0), (600, -1.0))), "period 1 has a negative limit"),
        (profile(periods=()), "no periods"),
        (profile(stack=-1), "stack_level -1 is negative"),
        (profile(stack=101), "above the maximum 100"),
        (profile(periods=tuple((i * 60, 16.0) for i in range(101))), "more than the maximum 100"),
        (profile(kind=ProfileKind.RECURRING, recurrence=None), "needs a recurrence"),
        (profile(kind=ProfileKind.RECURRING, recurrence=Recurrence.DAILY, start=None), "needs start_schedule"),
        (
            profile(kind=ProfileKind.RECURRING, recurrence=Recurrence.DAILY, periods=((0, 6.0), (86400, 16.0))),
            "beyond the daily recurrence",
        ),
        (profile(valid_from=at(2), valid_to=at(1)), "valid_to is not after valid_from"),
        (profile(start=NAIVE), "start_schedule has no time zone"),
        (profile(valid_to=NAIVE), "valid_to has no time zone"),
        (profile(duration_s=0), "duration_s 0 is not positive"),
        (profile(transaction_id=4), "only allowed on a TX profile"),
        (with_periods(profile(), SchedulePeriod(0, 16.0, number_phases=4)), "number_phases 4"),
    ],
)
def test_invalid_profiles_are_rejected_with_a_reason(bad: ChargingProfile, reason: str) -> None:
    store = ChargingProfileStore(2)
    found = store.rejection_reason(bad)
    assert found is not None and reason in found
    with pytest.raises(CommandRejected, match=f"charging profile {bad.profile_id}: "):
        store.install(bad)
    assert len(store) == 0


def test_watts_are_rejected_without_a_supply_voltage() -> None:
    store = ChargingProfileStore(1, supply=Supply(voltage_v=None))
    assert store.rejection_reason(profile(unit=RateUnit.WATT)) == (
        "limits in W are not supported (no supply voltage configured)"
    )


def test_the_number_of_profiles_is_bounded_but_a_replacement_always_fits() -> None:
    store = store_with(profile(1, stack=0), profile(2, stack=1), limits=StoreLimits(max_profiles=2))
    assert store.rejection_reason(profile(3, stack=2)) == "2 profiles are installed already"
    assert store.rejection_reason(profile(3, stack=1)) is None  # replaces profile 2


# -- composite schedule -------------------------------------------------------------------------
def test_composite_merges_equal_neighbours() -> None:
    store = store_with(
        profile(1, periods=((0, 16.0),)),
        profile(2, stack=1, start=at(1), duration_s=7200, periods=((0, 10.0), (1800, 10.0), (3600, 16.0))),
    )
    assert store.composite_schedule(1, at(0), 4 * 3600) == [
        CompositePeriod(0, 16.0),
        CompositePeriod(3600, 10.0),
        CompositePeriod(7200, 16.0),
    ]


def test_composite_is_the_minimum_over_purposes_in_the_requested_unit() -> None:
    store = store_with(
        profile(1, purpose=MAX, start=at(1), periods=((0, 10.0),), duration_s=3600),
        profile(2, periods=((0, 16.0),)),
    )
    assert store.composite_schedule(1, at(0.5), 7200, unit=RateUnit.WATT) == [
        CompositePeriod(0, 16.0 * 690),
        CompositePeriod(1800, 10.0 * 690),
        CompositePeriod(5400, 16.0 * 690),
    ]
    assert store.composite_schedule(0, at(0.5), 7200) == [
        CompositePeriod(0, None),
        CompositePeriod(1800, 10.0),
        CompositePeriod(5400, None),
    ]


def test_composite_without_profiles_is_one_unlimited_period() -> None:
    assert ChargingProfileStore(1).composite_schedule(1, at(0), 600) == [CompositePeriod(0, None)]


def test_composite_of_an_unknown_connector_is_rejected() -> None:
    with pytest.raises(CommandRejected, match="connector 3 does not exist"):
        ChargingProfileStore(2).composite_schedule(3, at(0), 600)


def test_composite_without_a_transaction_shows_relative_schedules_from_its_start() -> None:
    store = store_with(profile(1, kind=ProfileKind.RELATIVE, start=None, periods=((0, 6.0), (1800, 16.0))))
    store.install(profile(2, connector=1, purpose=TX, periods=((0, 8.0),)), active_transaction_id=1)
    assert store.composite_schedule(1, at(3), 3600) == [CompositePeriod(0, 6.0), CompositePeriod(1800, 16.0)]
    with_session = store.composite_schedule(1, at(3), 3600, transaction_started_at=at(2.75))
    assert with_session == [CompositePeriod(0, 8.0)]


# -- persistence ---------------------------------------------------------------------------------
def test_the_store_survives_a_round_trip_through_json() -> None:
    store = store_with(
        profile(1, purpose=MAX, periods=((0, 32.0), (3600, 20.0)), duration_s=7200),
        profile(2, connector=1, kind=ProfileKind.RECURRING, recurrence=Recurrence.WEEKLY, valid_to=at(days=30)),
        profile(3, unit=RateUnit.WATT, kind=ProfileKind.RELATIVE, start=None, valid_from=at(1), stack=4),
    )
    store.install(
        with_periods(profile(4, connector=2, purpose=TX), SchedulePeriod(0, 7.5, number_phases=1)),
        active_transaction_id=99,
    )
    restored = ChargingProfileStore(2)
    assert restored.load_dict(json.loads(json.dumps(store.to_dict()))) == []
    assert list(restored) == list(store)
    assert restored.limit_at(2, at(1.5), at(1)) == store.limit_at(2, at(1.5), at(1))


def test_loading_skips_what_no_longer_fits_and_says_why() -> None:
    data = store_with(profile(1), profile(2, connector=2)).to_dict()
    data["profiles"].append({"profile_id": 7})
    smaller = ChargingProfileStore(1)
    problems = smaller.load_dict(data)
    assert problems == [
        "profiles[1] (id 2): connector 2 does not exist (0..1)",
        "profiles[2]: missing key 'schedule'",
    ]
    assert [p.profile_id for p in smaller] == [1]
    assert smaller.load_dict({"format": 99}) == ["unknown charging profile store format 99: nothing loaded"]
    assert [p.profile_id for p in smaller] == [1]


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        ({"stack_level": "3"}, "'3' is not an integer"),
        ({"purpose": "bogus"}, "'bogus' is not a valid ProfilePurpose"),
        ({"valid_from": "2026-03-02T00:00:00"}, "has no time zone"),
        ({"schedule": None}, "malformed profile"),
    ],
)
def test_malformed_stored_profiles_raise_value_error(patch: dict[str, object], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        profile_from_dict({**profile_to_dict(profile()), **patch})


# -- charger setpoint ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("limit_a", "max_a", "expected"),
    [
        (None, 32.0, 32.0),
        (16.0, 32.0, 16.0),
        (40.0, 32.0, 32.0),
        (6.0, 32.0, 6.0),
        (5.9, 32.0, None),
        (0.0, 32.0, None),
        (None, 4.0, None),
    ],
)
def test_below_six_amperes_the_charger_is_paused(limit_a: float | None, max_a: float, expected: float | None) -> None:
    assert charger_setpoint_a(limit_a, max_a=max_a) == expected
