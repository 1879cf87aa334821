"""The Site's battery state per connector, SoC targets at runtime, and the LimitKeeper following both."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.domain.battery import SocSource, SocValue
from gateway.domain.errors import CommandRejected
from gateway.domain.events import BatteryStateChanged, CurrentLimitRequested
from gateway.domain.model import ChargerSnapshot, Connector, Meter, MeterSnapshot, Reading, VehicleState
from gateway.domain.transactions import AuthPolicy
from gateway.services.charging_limits import LimitKeeper
from gateway.services.event_stream import EventStream
from gateway.services.sessions import ConnectorPolicy
from gateway.services.site import Site
from tests.fixtures.settings import DictSettings

T0 = datetime(2026, 5, 1, 18, 0, tzinfo=UTC)
FREE = ConnectorPolicy(AuthPolicy.FREE, "HOME")


class StepClock:
    def __init__(self) -> None:
        self.moment = T0

    def now(self) -> datetime:
        return self.moment

    def advance(self, minutes: float) -> datetime:
        self.moment += timedelta(minutes=minutes)
        return self.moment


def battery_events(stream: EventStream) -> list[BatteryStateChanged]:
    events = []
    while (event := stream.get_nowait()) is not None:
        if isinstance(event, BatteryStateChanged):
            events.append(event)
    return events


def make(**kwargs: Any) -> tuple[Site, StepClock, EventStream]:
    clock = StepClock()
    site = Site([Connector(1, "wb"), Connector(2, "wb", socket=2)], [], clock=clock, policies={1: FREE}, **kwargs)
    return site, clock, site.subscribe()


def poll(site: Site, at: datetime, state: VehicleState, energy_wh: int, soc: float | None = None) -> None:
    reading = Reading(at, energy_wh=energy_wh, soc_percent=soc)
    site.apply(ChargerSnapshot("wb", 1, reading, vehicle_state=state))


def test_a_report_is_the_connectors_soc_and_an_event() -> None:
    site, _, events = make()
    poll(site, T0, VehicleState.B, 10_000)
    site.report_battery(1, 42.0, None, T0 - timedelta(minutes=2))
    expected = SocValue(42.0, SocSource.REPORT, T0 - timedelta(minutes=2))
    assert site.connectors[1].soc == expected
    assert battery_events(events) == [BatteryStateChanged(1, expected, None)]
    site.report_battery(1, 42.0, None)  # the same value again, measured now: still told (its time is news)
    assert battery_events(events) == [BatteryStateChanged(1, SocValue(42.0, SocSource.REPORT, T0), None)]


def test_bad_reports_and_unknown_connectors_are_rejected_without_a_change() -> None:
    site, clock, events = make()
    with pytest.raises(CommandRejected, match="no connector 7"):
        site.report_battery(7, 50.0, None)
    with pytest.raises(CommandRejected, match="in the future"):
        site.report_battery(1, 50.0, None, clock.now() + timedelta(minutes=6))
    with pytest.raises(CommandRejected, match="no connector 0"):
        site.commands.set_soc_target(0, 80.0)
    with pytest.raises(CommandRejected, match="soc_target_percent"):
        site.commands.set_soc_target(1, 120.0)
    assert site.connectors[1].soc is None and site.connectors[1].soc_target_percent is None
    assert battery_events(events) == []


def test_energy_on_the_billing_register_moves_the_estimate() -> None:
    site, clock, events = make()
    poll(site, T0, VehicleState.C, 10_000)
    site.report_battery(1, 40.0, 50_000)
    battery_events(events)
    later = clock.advance(30)
    poll(site, later, VehicleState.C, 15_000)
    assert site.connectors[1].soc == SocValue(50.0, SocSource.ESTIMATE, later)
    assert battery_events(events) == [BatteryStateChanged(1, SocValue(50.0, SocSource.ESTIMATE, later), None)]
    poll(site, clock.advance(1), VehicleState.C, 15_000)  # nothing delivered: no news
    assert battery_events(events) == []


def test_an_assigned_meter_is_the_register_the_estimate_follows() -> None:
    clock = StepClock()
    site = Site([Connector(1, "wb")], [Meter("m1", connector_id=1)], clock=clock, policies={1: FREE})
    site.apply(MeterSnapshot("m1", Reading(T0, energy_wh=2_000)))
    poll(site, T0, VehicleState.C, 999_999)  # the charger's own counter is never the billing register
    site.report_battery(1, 10.0, 20_000)
    site.apply(MeterSnapshot("m1", Reading(clock.advance(10), energy_wh=4_000)))
    assert site.connectors[1].soc == SocValue(20.0, SocSource.ESTIMATE, clock.now())


def test_the_chargers_soc_is_taken_while_a_car_is_plugged_in_and_all_is_forgotten_when_it_leaves() -> None:
    site, clock, events = make()
    poll(site, T0, VehicleState.C, 1_000, soc=61.0)
    assert site.connectors[1].soc == SocValue(61.0, SocSource.CHARGER, T0)
    poll(site, clock.advance(1), VehicleState.C, 1_000, soc=61.0)  # confirmed: newer time, no event
    assert site.connectors[1].soc == SocValue(61.0, SocSource.CHARGER, clock.now())
    assert battery_events(events) == [BatteryStateChanged(1, SocValue(61.0, SocSource.CHARGER, T0), None)]
    poll(site, clock.advance(1), VehicleState.A, 1_000, soc=61.0)  # a stale register after the car left
    assert site.connectors[1].soc is None
    assert battery_events(events) == [BatteryStateChanged(1, None, None)]
    site.report_battery(1, 35.0, 60_000)  # the next car's integration may report before it is plugged in
    poll(site, clock.advance(1), VehicleState.A, 1_000)
    assert site.connectors[1].soc is not None and site.connectors[1].soc.soc_percent == 35.0


def test_runtime_targets_are_events_persisted_and_restored() -> None:
    settings = DictSettings()
    site, _, events = make(settings=settings, soc_targets={1: 90.0})
    assert site.connectors[1].soc_target_percent == 90.0
    site.commands.set_soc_target(1, 70.0)
    site.commands.set_soc_target(2, None)
    assert battery_events(events) == [BatteryStateChanged(1, None, 70.0)]  # connector 2 had none already
    restarted = Site([Connector(1, "wb"), Connector(2, "wb", socket=2)], [], settings=settings, soc_targets={1: 90.0})
    restarted.restore()
    assert restarted.connectors[1].soc_target_percent == 70.0
    changed_config = Site([Connector(1, "wb")], [], settings=settings, soc_targets={1: 85.0})
    changed_config.restore()
    assert changed_config.connectors[1].soc_target_percent == 85.0  # the installer's new value wins
    assert "1" not in settings.sections["soc_targets"]


async def next_limit(events: EventStream) -> CurrentLimitRequested:
    async with asyncio.timeout(2):
        while not isinstance(event := await events.get(), CurrentLimitRequested):
            pass
        return event


async def test_the_limit_keeper_follows_the_runtime_target_and_the_estimate() -> None:
    site, clock, _ = make(soc_targets={1: 95.0})
    keeper = LimitKeeper(site, site.charging_profiles, max_a={1: 16.0})
    events = site.subscribe()
    task = asyncio.create_task(keeper.run())
    try:
        poll(site, T0, VehicleState.A, 10_000)
        poll(site, T0, VehicleState.C, 10_000)  # a free session starts
        site.report_battery(1, 70.0, 50_000)
        site.commands.set_soc_target(1, 60.0)  # already above it: pause
        assert await next_limit(events) == CurrentLimitRequested(1, 0.0)
        site.commands.set_soc_target(1, None)  # charge to full: the charger gets its maximum back
        assert await next_limit(events) == CurrentLimitRequested(1, 16.0)
        site.commands.set_soc_target(1, 80.0)
        poll(site, clock.advance(60), VehicleState.C, 15_000)  # 70 % + 5 kWh of 50 = 80 % (estimated)
        assert site.connectors[1].soc == SocValue(80.0, SocSource.ESTIMATE, clock.now())
        assert await next_limit(events) == CurrentLimitRequested(1, 0.0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
