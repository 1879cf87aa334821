"""Evaluating charging profiles: the effective limit at an instant, when it changes, the composite.

Pure functions over a collection of profiles, with time always passed in (no clock here).

Rules (OCPP 1.6 section 3.13 and its errata; where the text leaves room, the choice is noted):

* A profile is *in effect* at ``t`` when ``valid_from <= t < valid_to`` and ``t`` falls inside its
  schedule: at or after the schedule start and, with a duration, before start + duration.
* Within a purpose, the in-effect profile with the highest stack level wins. When it is not in
  effect (its duration has run out, it is not yet valid), the next one down applies. On a tie
  between a TX_DEFAULT on connector 0 and one on the connector itself, the connector's own wins.
* Across purposes: the session limit is the TX profile if one is in effect, else TX_DEFAULT; the
  result is the lower of that and CHARGE_POINT_MAX. Connector 0 is CHARGE_POINT_MAX alone.
  CHARGE_POINT_MAX caps each connector on its own here; the LimitKeeper
  (``gateway.services.charging_limits``) shares it between the connectors that charge at the same
  time, as OCPP 1.6 defines it (``effective_limit`` for connector 0 gives the cap it shares).
* Schedule start: ABSOLUTE at ``start_schedule``; RECURRING at the latest daily/weekly repetition of
  ``start_schedule`` (not in effect before the first one); RELATIVE at the transaction start. An
  ABSOLUTE profile without ``start_schedule`` is "relative to the start of charging" (the 1.6 text)
  and so is treated as RELATIVE. Without a transaction, relative schedules are *floating*: a session
  starting now would begin at their first period, so that period applies and they add no boundaries.
* Limits in W become A with the ``Supply`` (the period's ``number_phases``, else the configured phases).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.domain.charging_profiles import (
    CYCLE,
    ChargingProfile,
    ProfileKind,
    ProfilePurpose,
    RateUnit,
    SchedulePeriod,
    Supply,
)

MIN_CURRENT_A = 6.0  # IEC 61851-1: the lowest current a control pilot may offer
SEARCH_HORIZON = timedelta(days=8)  # a weekly recurrence and a day: how far next_change skips non-changes
MAX_SKIPPED = 200  # and how many boundaries at the most


@dataclass(frozen=True, slots=True)
class Limit:
    """The effective limit: ``limit_a`` per phase (None = no profile limits it) and its phases."""

    limit_a: float | None
    number_phases: int | None = None


@dataclass(frozen=True, slots=True)
class CompositePeriod:
    """One period of a composite schedule; ``limit`` is in the requested unit, None = unlimited."""

    start_period_s: int
    limit: float | None
    number_phases: int | None = None


@dataclass(frozen=True, slots=True)
class Session:
    """What evaluation needs to know of a connector's transaction.

    ``anchor`` is where relative schedules start (None = floating); ``active`` says whether TX
    profiles take part. A composite without a transaction anchors at its start but has no TX.
    """

    anchor: datetime | None
    active: bool


def schedule_start(profile: ChargingProfile, at: datetime, anchor: datetime | None) -> datetime | None:
    """Where ``profile``'s schedule starts for the instant ``at`` (None = floating, see module doc)."""
    start = profile.schedule.start_schedule
    if profile.kind is ProfileKind.RECURRING and start is not None and profile.recurrence is not None:
        cycle = CYCLE[profile.recurrence]
        return start + max(0, (at - start) // cycle) * cycle
    if profile.kind is ProfileKind.ABSOLUTE and start is not None:
        return start
    return anchor


def _length_s(profile: ChargingProfile) -> float | None:
    """How long one run of the schedule lasts (a recurrence cuts it at the cycle length)."""
    duration = profile.schedule.duration_s
    if profile.kind is ProfileKind.RECURRING and profile.recurrence is not None:
        cycle_s = CYCLE[profile.recurrence].total_seconds()
        return cycle_s if duration is None else min(duration, cycle_s)
    return duration


def _valid(profile: ChargingProfile, at: datetime) -> bool:
    return (profile.valid_from is None or profile.valid_from <= at) and (
        profile.valid_to is None or at < profile.valid_to
    )


def period_at(profile: ChargingProfile, at: datetime, anchor: datetime | None) -> SchedulePeriod | None:
    """The period of ``profile`` in force at ``at``, or None when the profile is not in effect."""
    if not _valid(profile, at):
        return None
    start = schedule_start(profile, at, anchor)
    offset_s = 0.0 if start is None else (at - start).total_seconds()
    length_s = _length_s(profile)
    if offset_s < 0 or (length_s is not None and offset_s >= length_s):
        return None
    periods = profile.schedule.periods  # in order of start (profile_problem checks it): a binary search
    index = bisect_right(periods, offset_s, key=_period_start)
    return periods[index - 1] if index else None


def _period_start(period: SchedulePeriod) -> float:
    return period.start_period_s


def boundary_after(profile: ChargingProfile, at: datetime, anchor: datetime | None) -> datetime | None:
    """The first instant after ``at`` at which ``profile`` may change what it says (or None)."""
    found = [moment for moment in (profile.valid_from, profile.valid_to) if moment is not None and moment > at]
    start = schedule_start(profile, at, anchor)
    if start is not None:
        runs = [start]
        if profile.kind is ProfileKind.RECURRING and profile.recurrence is not None:
            runs.append(start + CYCLE[profile.recurrence])
        length_s = _length_s(profile)
        periods = profile.schedule.periods
        for run in runs:
            # The first period start after ``at`` by a binary search, not every start made a datetime:
            # a composite or the next change crosses thousands of boundaries of up to 50 profiles.
            elapsed_s = (at - run).total_seconds()
            index = bisect_right(periods, elapsed_s, key=_period_start)
            if index < len(periods):
                found.append(run + timedelta(seconds=periods[index].start_period_s))
            if length_s is not None and length_s > elapsed_s:
                found.append(run + timedelta(seconds=length_s))
    return min(found, default=None)


def relevant(profiles: Iterable[ChargingProfile], connector_id: int, session: Session) -> list[ChargingProfile]:
    """The profiles that take part in ``connector_id``'s limit for ``session``."""
    return [
        p for p in profiles if p.applies_to(connector_id) and (p.purpose is not ProfilePurpose.TX or session.active)
    ]


def _winner(
    profiles: Sequence[ChargingProfile], purpose: ProfilePurpose, at: datetime, anchor: datetime | None
) -> tuple[ChargingProfile, SchedulePeriod] | None:
    best: tuple[tuple[int, bool], ChargingProfile, SchedulePeriod] | None = None
    for profile in profiles:
        if profile.purpose is not purpose:
            continue
        period = period_at(profile, at, anchor)
        if period is None:
            continue
        rank = (profile.stack_level, profile.connector_id != 0)
        if best is None or rank > best[0]:
            best = (rank, profile, period)
    return None if best is None else (best[1], best[2])


def effective_limit(profiles: Sequence[ChargingProfile], at: datetime, session: Session, supply: Supply) -> Limit:
    """The limit at ``at`` from already ``relevant`` profiles, in amperes per phase."""
    anchor = session.anchor
    session_winner = _winner(profiles, ProfilePurpose.TX, at, anchor) if session.active else None
    if session_winner is None:
        session_winner = _winner(profiles, ProfilePurpose.TX_DEFAULT, at, anchor)
    limits = []
    for found in (_winner(profiles, ProfilePurpose.CHARGE_POINT_MAX, at, anchor), session_winner):
        if found is not None:
            profile, period = found
            limit_a = supply.to_amps(period.limit, profile.schedule.rate_unit, period.number_phases)
            limits.append(Limit(limit_a, period.number_phases))
    return min(limits, key=lambda limit: limit.limit_a or 0.0, default=Limit(None))


def next_boundary(profiles: Sequence[ChargingProfile], at: datetime, anchor: datetime | None) -> datetime | None:
    """The first instant after ``at`` at which any of ``profiles`` may change."""
    return min(
        (moment for p in profiles if (moment := boundary_after(p, at, anchor)) is not None),
        default=None,
    )


def next_change(profiles: Sequence[ChargingProfile], at: datetime, session: Session, supply: Supply) -> datetime | None:
    """When the limit in amperes next differs from the one at ``at`` (None = never).

    Boundaries where nothing changes (a daily recurrence restarting at the same limit) are skipped
    for up to ``SEARCH_HORIZON`` ahead and ``MAX_SKIPPED`` boundaries; past either the boundary
    reached is returned even if nothing changes there, which only costs the caller one needless
    re-evaluation (50 profiles of 100 periods each at the same limit would otherwise cost 40,000
    evaluations, seconds of a single event loop, at every decision).
    """
    current = effective_limit(profiles, at, session, supply).limit_a
    moment = at
    for _ in range(MAX_SKIPPED):
        following = next_boundary(profiles, moment, session.anchor)
        if following is None or following - at > SEARCH_HORIZON:
            return following
        if effective_limit(profiles, following, session, supply).limit_a != current:
            return following
        moment = following
    return moment


def composite(
    profiles: Sequence[ChargingProfile],
    start: datetime,
    duration_s: int,
    session: Session,
    supply: Supply,
    unit: RateUnit,
) -> list[CompositePeriod]:
    """The limit from ``start`` for ``duration_s`` seconds as periods, equal neighbours merged."""
    end = start + timedelta(seconds=duration_s)
    periods: list[CompositePeriod] = []
    moment = start
    while moment < end:
        limit = effective_limit(profiles, moment, session, supply)
        value = None if limit.limit_a is None else supply.from_amps(limit.limit_a, unit, limit.number_phases)
        offset_s = int((moment - start).total_seconds())
        if periods and periods[-1].start_period_s == offset_s:  # two boundaries within one second
            periods.pop()
        if not periods or (periods[-1].limit, periods[-1].number_phases) != (value, limit.number_phases):
            periods.append(CompositePeriod(offset_s, value, limit.number_phases))
        following = next_boundary(profiles, moment, session.anchor)
        if following is None:
            break
        moment = following
    return periods


def charger_setpoint_a(limit_a: float | None, *, max_a: float, min_a: float = MIN_CURRENT_A) -> float | None:
    """The current to write to a charger for ``limit_a``, or None: pause the charger.

    A charger cannot offer less than ``min_a`` (6 A for IEC 61851-1), so a lower limit (0 A
    included) means "stop drawing", never a setpoint the charger would reject or round up.
    ``limit_a`` None (no profile) gives the charger's own maximum ``max_a``.
    """
    setpoint = max_a if limit_a is None else min(limit_a, max_a)
    return None if setpoint < min_a else setpoint


def tenths_down(limit: float) -> float:
    """A limit as a schedule shows it (one decimal), never above what it is: a composite must not
    promise more than the profiles allow. The epsilon keeps 21.4 (stored as 21.3999...) at 21.4."""
    return math.floor(limit * 10 + 1e-6) / 10
