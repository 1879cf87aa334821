"""Site power sharing over a live Site (gateway.services.load_management through the LimitKeeper).

The Site gets snapshots as the device adapters would give them; the keeper decides at a clock the
test moves; what it requests of the chargers is read from the Site's events.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from gateway.domain.charging_profiles import (
    ChargingProfile,
    ChargingSchedule,
    ProfileKind,
    ProfilePurpose,
    SchedulePeriod,
)
from gateway.domain.errors import CommandRejected
from gateway.domain.events import CurrentLimitRequested, SiteLoadChanged
from gateway.domain.model import ChargerSnapshot, Connector, DeviceFailed, Meter, MeterSnapshot, Reading, VehicleState
from gateway.domain.phase_limits import Phase, Reason
from gateway.domain.transactions import StopReason
from gateway.services.charging_limits import LimitKeeper
from gateway.services.event_stream import EventStream
from gateway.services.load_management import GridConnection, LoadSettings
from gateway.services.site import Site

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
GRID = "grid"


class Clock:
    def __init__(self) -> None:
        self.at = T0

    def now(self) -> datetime:
        return self.at


def make(
    chargers: int,
    *,
    grid: GridConnection | None = None,
    wiring: dict[int, tuple[Phase, ...]] | None = None,
    priorities: dict[int, int] | None = None,
    max_a: float = 32.0,
) -> tuple[Site, LimitKeeper, EventStream, Clock]:
    clock = Clock()
    connectors = [Connector(n, f"wb{n}") for n in range(1, chargers + 1)]
    site = Site(connectors, [Meter(GRID, 0)], clock=clock)
    settings = LoadSettings(grid, priorities or {}, wiring or {})
    keeper = LimitKeeper(site, site.charging_profiles, dict.fromkeys(range(1, chargers + 1), max_a), load=settings)
    return site, keeper, site.subscribe(), clock


def charging(site: Site, n: int, amps: tuple[float, ...] = (0.0, 0.0, 0.0), offered: float | None = None) -> None:
    """Charger ``n`` reports a car charging (a session starts: free policy) drawing ``amps`` per phase."""
    reading = Reading(site.clock.now(), energy_wh=1_000, current_a=amps, offered_current_a=offered)
    site.apply(ChargerSnapshot(f"wb{n}", 1, reading, vehicle_state=VehicleState.C))


def grid(site: Site, *amps: float) -> None:
    site.apply(MeterSnapshot(GRID, Reading(site.clock.now(), energy_wh=9_000_000, current_a=tuple(amps))))


def limits(events: EventStream) -> dict[int, float]:
    """The limits requested since the last call, the last one per connector."""
    found: dict[int, float] = {}
    for event in iter(events.get_nowait, None):
        if isinstance(event, CurrentLimitRequested):
            found[event.connector_id] = event.limit_a
    return found


def charge_point_max(limit_a: float) -> ChargingProfile:
    return ChargingProfile(
        profile_id=7,
        connector_id=0,
        stack_level=0,
        purpose=ProfilePurpose.CHARGE_POINT_MAX,
        kind=ProfileKind.ABSOLUTE,
        schedule=ChargingSchedule((SchedulePeriod(0, limit_a),), start_schedule=T0),
    )


def test_without_any_limit_nothing_is_shared_and_an_unlimited_charger_is_left_alone() -> None:
    site, keeper, events, _ = make(2)
    charging(site, 1)
    charging(site, 2)
    keeper.apply(T0)
    assert limits(events) == {}
    assert site.load.state is not None and site.load.state.limits is None


def test_the_charge_point_max_is_shared_by_all_connectors_not_given_to_each() -> None:
    """The issue's finding: ChargePointMaxProfile 12 A let four chargers draw 48 A together."""
    site, keeper, events, _ = make(4)
    for n in range(1, 5):
        charging(site, n)
    site.charging_profiles.install(charge_point_max(12.0))
    keeper.apply(T0)
    requested = limits(events)
    assert sum(requested.values()) <= 12.0
    assert sorted(requested.values()) == [0.0, 0.0, 6.0, 6.0]  # 6 A each or paused: two take turns
    state = site.load.state
    assert state is not None and state.reason is Reason.CSMS and state.limit_a == 12.0


def test_the_fuse_less_the_building_is_shared_equally() -> None:
    """40 A fuse, 2 A margin, the building draws 10 A: four cars get 28 A together."""
    site, keeper, events, _ = make(4, grid=GridConnection(GRID, 40.0, 2.0, 16.0))
    for n in range(1, 5):
        charging(site, n, (0.0, 0.0, 0.0))
    grid(site, 10.0, 10.0, 10.0)
    keeper.apply(T0)
    assert limits(events) == dict.fromkeys(range(1, 5), 7.0)


def test_the_chargers_own_current_is_not_counted_as_building_load() -> None:
    site, keeper, events, _ = make(2, grid=GridConnection(GRID, 40.0, 2.0, 16.0))
    charging(site, 1, (14.0, 14.0, 14.0))
    charging(site, 2, (14.0, 14.0, 14.0))
    grid(site, 38.0, 38.0, 38.0)  # 10 A building + 28 A chargers
    keeper.apply(T0)
    assert limits(events) == {1: 14.0, 2: 14.0}


def test_a_load_step_cuts_at_once_and_cuts_come_before_raises() -> None:
    site, keeper, events, clock = make(2, grid=GridConnection(GRID, 40.0, 2.0, 16.0), priorities={2: 1})
    charging(site, 1, (0.0,) * 3)
    charging(site, 2, (0.0,) * 3)
    grid(site, 6.0, 6.0, 6.0)
    keeper.apply(T0)
    assert limits(events) == {2: 26.0, 1: 6.0}  # priority 2 first: up to 32 A minus what 1 keeps
    charging(site, 1, (6.0,) * 3)
    charging(site, 2, (26.0,) * 3)
    clock.at = T0 + timedelta(seconds=5)
    grid(site, 52.0, 52.0, 52.0)  # the building jumped from 6 A to 20 A
    keeper.apply(clock.at)
    requested = [e for e in iter(events.get_nowait, None) if isinstance(e, CurrentLimitRequested)]
    assert requested == [CurrentLimitRequested(2, 12.0)]  # 38 - 20 = 18 A: 12 + 6


def test_a_lost_grid_meter_shares_the_fallback() -> None:
    site, keeper, events, clock = make(2, grid=GridConnection(GRID, 63.0, 2.0, 16.0))
    charging(site, 1)
    charging(site, 2)
    grid(site, 5.0, 5.0, 5.0)
    keeper.apply(T0)
    assert limits(events) == {1: 28.0, 2: 28.0}  # (63 - 2 - 5) / 2
    site.apply(DeviceFailed(GRID, "timeout", T0))
    clock.at = T0 + timedelta(seconds=5)
    keeper.apply(clock.at)
    assert limits(events) == {1: 8.0, 2: 8.0}
    state = site.load.state
    assert state is not None and state.reason is Reason.FALLBACK and state.grid_a is None


def test_before_the_grid_meters_first_reading_the_fallback_applies_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every start decides before the grid meter's first poll: that is no fault to warn about. A
    meter that stops answering later is (once)."""
    site, keeper, events, clock = make(2, grid=GridConnection(GRID, 63.0, 2.0, 16.0))
    charging(site, 1)
    charging(site, 2)
    keeper.apply(T0)
    assert limits(events) == {1: 8.0, 2: 8.0}  # the fallback, shared
    clock.at = T0 + timedelta(seconds=10)  # the first grid reading, and the chargers' after their cars settled
    charging(site, 1)
    charging(site, 2)
    grid(site, 5.0, 5.0, 5.0)
    keeper.apply(clock.at)
    assert limits(events) == {1: 28.0, 2: 28.0}  # (63 - 2 - 5) / 2
    assert warnings(caplog) == []
    site.apply(DeviceFailed(GRID, "timeout", clock.at))
    clock.at += timedelta(seconds=5)
    keeper.apply(clock.at)
    assert limits(events) == {1: 8.0, 2: 8.0}
    assert warnings(caplog) == [
        "load management: the grid meter grid gives no current per phase; chargers share the fallback"
    ]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What load management warned about so far."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "gateway.services.load_management" and r.levelno >= logging.WARNING
    ]


def test_a_silent_charger_keeps_what_it_was_offered() -> None:
    site, keeper, events, clock = make(3, grid=GridConnection(GRID, 40.0, 0.0, 10.0))
    for n in (1, 2):
        charging(site, n)
    grid(site, 0.0, 0.0, 0.0)
    keeper.apply(T0)
    assert limits(events) == {1: 20.0, 2: 20.0}
    site.apply(DeviceFailed("wb2", "timeout", T0))  # it may go on drawing 20 A
    charging(site, 3)
    clock.at = T0 + timedelta(seconds=5)
    keeper.apply(clock.at)
    assert limits(events) == {1: 10.0, 3: 10.0}
    state = site.load.state
    assert state is not None and state.shares[2].reason is Reason.SILENT and state.shares[2].current_a == 20.0


def test_a_single_phase_charger_of_unknown_wiring_counts_on_every_phase_a_wired_one_on_its_own() -> None:
    fuse = GridConnection(GRID, 20.0, 0.0, 10.0)
    site, keeper, events, _ = make(3, grid=fuse, wiring={2: (Phase.L2,), 3: (Phase.L3,)})
    for n in (1, 2, 3):
        charging(site, n, (0.0,))
    grid(site, 0.0, 0.0, 0.0)
    keeper.apply(T0)
    # connector 1 counts on L1, L2 and L3: 10 A each with 2 on L2 and 3 on L3
    assert limits(events) == {1: 10.0, 2: 10.0, 3: 10.0}
    site2, keeper2, events2, _ = make(2, grid=fuse, wiring={1: (Phase.L2,), 2: (Phase.L3,)})
    for n in (1, 2):
        charging(site2, n, (0.0,))
    grid(site2, 0.0, 0.0, 0.0)
    keeper2.apply(T0)
    assert limits(events2) == {1: 20.0, 2: 20.0}  # each alone on its phase


def test_a_single_phase_car_on_a_three_phase_charger_counts_only_on_its_phase() -> None:
    site, keeper, events, clock = make(2, grid=GridConnection(GRID, 20.0, 0.0, 10.0))
    charging(site, 1, (0.0,) * 3)
    charging(site, 2, (0.0,) * 3)
    grid(site, 0.0, 0.0, 0.0)
    keeper.apply(T0)
    assert limits(events) == {1: 10.0, 2: 10.0}
    charging(site, 1, (10.0, 0.0, 0.0))  # a single-phase car on L1
    charging(site, 2, (0.0, 10.0, 0.0))  # one on L2
    grid(site, 10.0, 10.0, 0.0)
    clock.at = T0 + timedelta(seconds=5)
    keeper.apply(clock.at)
    assert limits(events) == {1: 20.0, 2: 20.0}


def test_the_site_limit_binds_and_is_checked() -> None:
    site, keeper, events, _ = make(2)
    charging(site, 1)
    charging(site, 2)
    stream = site.subscribe()
    site.load.set_site_limit(20.0)
    keeper.apply(T0)
    assert limits(events) == {1: 10.0, 2: 10.0}
    changes = [e for e in iter(stream.get_nowait, None) if isinstance(e, SiteLoadChanged)]
    assert changes and changes[-1].load.reason is Reason.SITE_LIMIT
    for bad in (-1.0, float("nan"), 1e9):
        with pytest.raises(CommandRejected):
            site.load.set_site_limit(bad)


def test_a_stopped_session_leaves_its_charger_paused_while_shared() -> None:
    site, keeper, events, _ = make(1, grid=GridConnection(GRID, 40.0, 2.0, 16.0))
    charging(site, 1)
    grid(site, 0.0, 0.0, 0.0)
    keeper.apply(T0)
    assert limits(events) == {1: 32.0}
    site.commands.stop_all_sessions(StopReason.LOCAL)
    keeper._stopped(1)  # what the keeper's watch does on the StopTransaction event
    assert limits(events) == {1: 0.0}
