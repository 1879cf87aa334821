"""Property tests of charging-profile evaluation: the composite, the limit and its next change agree."""

from __future__ import annotations

import itertools
import json
from contextlib import suppress
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.charging_profiles import (
    ChargingProfile,
    ChargingSchedule,
    ProfileKind,
    ProfilePurpose,
    RateUnit,
    Recurrence,
    SchedulePeriod,
    profile_from_dict,
    profile_to_dict,
)
from gateway.domain.charging_schedule import SEARCH_HORIZON, CompositePeriod
from gateway.domain.charging_store import ChargingProfileStore
from gateway.domain.errors import CommandRejected

T0 = datetime(2026, 3, 2, tzinfo=UTC)
TX_ID = 7

# Close together (quarter hours over a few days), so that profiles overlap, start and end in the windows tested.
instants = st.integers(min_value=-96, max_value=4 * 96).map(lambda q: T0 + timedelta(minutes=15 * q))
limits = st.sampled_from([0.0, 6.0, 10.0, 13.5, 16.0, 32.0])


@st.composite
def periods(draw: st.DrawFn) -> tuple[SchedulePeriod, ...]:
    starts = draw(st.lists(st.integers(1, 48).map(lambda q: q * 900), max_size=4, unique=True))
    return tuple(
        SchedulePeriod(start, draw(limits), draw(st.sampled_from([None, 1, 3]))) for start in [0, *sorted(starts)]
    )


@st.composite
def profiles(draw: st.DrawFn, profile_id: int = 1) -> ChargingProfile:
    purpose = draw(st.sampled_from(list(ProfilePurpose)))
    connector = {ProfilePurpose.CHARGE_POINT_MAX: 0, ProfilePurpose.TX: 1}.get(purpose) or draw(st.sampled_from([0, 1]))
    kind = draw(st.sampled_from(list(ProfileKind)))
    recurrence = draw(st.sampled_from(list(Recurrence))) if kind is ProfileKind.RECURRING else None
    start = draw(instants) if kind is ProfileKind.RECURRING else draw(st.none() | instants)
    valid_from = draw(st.none() | instants)
    valid_to = draw(st.none() | instants)
    if valid_from and valid_to and valid_to <= valid_from:
        valid_from, valid_to = valid_to - timedelta(hours=1), valid_from
    return ChargingProfile(
        profile_id=profile_id,
        connector_id=connector,
        stack_level=draw(st.integers(0, 3)),
        purpose=purpose,
        kind=kind,
        recurrence=recurrence,
        transaction_id=TX_ID if purpose is ProfilePurpose.TX else None,
        valid_from=valid_from,
        valid_to=valid_to,
        schedule=ChargingSchedule(
            periods=draw(periods()),
            rate_unit=draw(st.sampled_from(list(RateUnit))),
            start_schedule=start,
            duration_s=draw(st.sampled_from([None, 900, 3600, 7200, 43200, 86400, 3 * 86400])),
            min_charging_rate=draw(st.none() | st.sampled_from([0.0, 6.0])),
        ),
    )


@st.composite
def stores(draw: st.DrawFn) -> ChargingProfileStore:
    store = ChargingProfileStore(2)
    for profile_id in range(1, draw(st.integers(1, 5)) + 1):
        with suppress(CommandRejected):  # e.g. a recurring period beyond its cycle, rejected as it should be
            store.install(draw(profiles(profile_id)), active_transaction_id=TX_ID)
    return store


def period_at(composite: list[CompositePeriod], offset_s: int) -> CompositePeriod:
    return [p for p in composite if p.start_period_s <= offset_s][-1]


@settings(max_examples=150, deadline=None)
@given(stores(), instants, st.none() | instants, st.lists(st.integers(0, 86400 - 1), min_size=1, max_size=16))
def test_the_composite_agrees_with_the_limit_at_every_instant(
    store: ChargingProfileStore, start: datetime, tx_start: datetime | None, offsets: list[int]
) -> None:
    for connector in (0, 1):
        composite = store.composite_schedule(connector, start, 86400, transaction_started_at=tx_start)
        assert composite[0].start_period_s == 0
        assert all(a.start_period_s < b.start_period_s for a, b in itertools.pairwise(composite))
        assert all(a.limit != b.limit or a.number_phases != b.number_phases for a, b in itertools.pairwise(composite))
        if tx_start is None:
            continue  # limit_at without a session floats relative schedules; the composite anchors them at start
        for offset in offsets:
            moment = start + timedelta(seconds=offset)
            assert period_at(composite, offset).limit == store.limit_at(connector, moment, tx_start).limit_a


@settings(max_examples=150, deadline=None)
@given(stores(), instants, st.none() | instants, st.lists(st.floats(0.0, 1.0), min_size=1, max_size=8))
def test_the_limit_holds_until_its_next_change_and_changes_there(
    store: ChargingProfileStore, moment: datetime, tx_start: datetime | None, fractions: list[float]
) -> None:
    limit = store.limit_at(1, moment, tx_start)
    if limit.next_change_at is None:  # for ever: look over the next ten days
        for fraction in fractions:
            assert store.limit_at(1, moment + timedelta(days=10) * fraction, tx_start).limit_a == limit.limit_a
        return
    span = limit.next_change_at - moment
    assert span > timedelta(0)
    for fraction in fractions:
        inside = moment + min(span * fraction, span - timedelta(microseconds=1))  # span * 0.99.. may round up
        assert store.limit_at(1, inside, tx_start).limit_a == limit.limit_a
    if span <= SEARCH_HORIZON:
        assert store.limit_at(1, limit.next_change_at, tx_start).limit_a != limit.limit_a


@settings(max_examples=200, deadline=None)
@given(profiles())
def test_every_profile_survives_the_dict_form(profile: ChargingProfile) -> None:
    assert profile_from_dict(json.loads(json.dumps(profile_to_dict(profile)))) == profile
