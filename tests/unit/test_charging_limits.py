"""The LimitKeeper: charging profiles and SoC targets become current limits (no sockets)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from gateway.domain.charging_profiles import (
    ChargingProfile,
    ChargingSchedule,
    ProfileKind,
    ProfilePurpose,
    SchedulePeriod,
)
from gateway.domain.events import ChargingProfilesChanged, CurrentLimitRequested
from gateway.domain.model import ChargerSnapshot, Connector, Reading, VehicleState
from gateway.domain.transactions import AuthPolicy
from gateway.services.charging_limits import LimitKeeper
from gateway.services.event_stream import EventStream
from gateway.services.sessions import ConnectorPolicy
from gateway.services.site import Site

T0 = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)


def snap(state: VehicleState, soc: float | None = None) -> ChargerSnapshot:
    return ChargerSnapshot("wb", 1, Reading(T0, energy_wh=1_000, soc_percent=soc), vehicle_state=state)


async def next_limit(events: EventStream) -> CurrentLimitRequested:
    async with asyncio.timeout(2):
        while True:
            event = await events.get()
            if isinstance(event, CurrentLimitRequested):
                return event


async def test_soc_target_pauses_and_a_profile_limits() -> None:
    site = Site([Connector(1, "wb")], [], policies={1: ConnectorPolicy(AuthPolicy.FREE, "X")}, soc_targets={1: 80.0})
    keeper = LimitKeeper(site, site.charging_profiles, max_a={1: 16.0})
    events = site.subscribe()
    task = asyncio.create_task(keeper.run())
    try:
        site.apply(snap(VehicleState.A))
        site.apply(snap(VehicleState.C, soc=55.0))  # a session starts; no profile: nothing to write
        site.charging_profiles.install(
            ChargingProfile(
                profile_id=1,
                connector_id=0,
                stack_level=0,
                purpose=ProfilePurpose.TX_DEFAULT,
                kind=ProfileKind.ABSOLUTE,
                schedule=ChargingSchedule((SchedulePeriod(0, 10.0),), start_schedule=T0),
            )
        )
        site.request(ChargingProfilesChanged())
        assert await next_limit(events) == CurrentLimitRequested(1, 10.0)
        site.apply(snap(VehicleState.C, soc=80.0))  # the car reached its target
        assert await next_limit(events) == CurrentLimitRequested(1, 0.0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
