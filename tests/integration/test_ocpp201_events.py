"""NotifyEvent for faults and lost devices, against the real 2.0.1 CSMS (schemas validated both ways)."""

from __future__ import annotations

import asyncio
import contextlib
import unicodedata
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.demo_csms.csms201 import DemoCsms201
from adapters.ocpp201_upstream.problems import EVENT_ID, ProblemEvents, clean_text
from adapters.ocpp201_upstream.station import ChargingStation201
from adapters.storage.settings import JsonSettingsStore
from gateway.domain.events import FaultRaised
from gateway.domain.model import ChargerSnapshot, DeviceFailed, Fault, FaultKind, MeterSnapshot, Reading, VehicleState
from gateway.services.site import Site
from tests.fixtures.net import free_port
from tests.integration.test_ocpp201_upstream import (
    at_minute,
    make_site,
    short_status_grace,  # noqa: F401 (autouse fixture)
    start_station,
)

HOT = Fault(FaultKind.OVER_TEMPERATURE, vendor_code="E42", info="heat sink 92 C")


@contextlib.asynccontextmanager
async def linked(site: Site, port: int = 0) -> AsyncIterator[tuple[DemoCsms201, ChargingStation201]]:
    """A 2.0.1 CSMS on ``port`` (0: any) and the site's station linked to it, both ended on the way out."""
    server = DemoCsms201("127.0.0.1", port)
    await server.start()
    tasks: list[asyncio.Task[None]] = []
    try:
        yield server, start_station(site, server.port, tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.stop()


def snapshot(minute: int, faults: tuple[Fault, ...] = (), device: str = "left") -> ChargerSnapshot:
    return ChargerSnapshot(device, 1, Reading(at_minute(minute), energy_wh=100), VehicleState.A, faults=faults)


def event_data(csms: DemoCsms201) -> list[dict[str, Any]]:
    return [data for p in csms.messages("NotifyEvent") for data in p["eventData"]]


async def nth_event(csms: DemoCsms201, n: int) -> dict[str, Any]:
    await csms.wait_for("NotifyEvent", lambda _: len(event_data(csms)) >= n)
    return event_data(csms)[n - 1]


async def test_a_connector_fault_raised_then_cleared() -> None:
    site = make_site()
    site.apply(snapshot(0))
    async with linked(site) as (csms, _):
        await raise_and_clear(site, csms)


async def raise_and_clear(site: Site, csms: DemoCsms201) -> None:
    await csms.wait_for("StatusNotification", lambda p: p["evseId"] == 1)
    site.apply(snapshot(1, (HOT,)))
    raised = await nth_event(csms, 1)
    assert raised == {
        "eventId": raised["eventId"],
        "timestamp": "2026-11-29T12:01:00.000Z",
        "trigger": "Alerting",
        "actualValue": "true",
        "techCode": "E42",
        "techInfo": "HighTemperature: heat sink 92 C",
        "eventNotificationType": "HardWiredNotification",
        "component": {"name": "Connector", "evse": {"id": 1, "connectorId": 1}},
        "variable": {"name": "Problem"},
    }
    await csms.wait_for("StatusNotification", lambda p: p["connectorStatus"] == "Faulted")  # as before
    site.apply(snapshot(2))
    cleared = await nth_event(csms, 2)
    assert cleared["cleared"] is True and cleared["actualValue"] == "false"
    assert cleared["cause"] == raised["eventId"] and cleared["eventId"] > raised["eventId"]
    assert cleared["component"] == raised["component"] and cleared["techCode"] == "E42"
    notify = csms.messages("NotifyEvent")[0]
    assert notify["seqNo"] == 0 and notify.get("tbc", False) is False


async def test_a_charger_lost_is_a_connector_problem_and_a_meter_lost_its_own() -> None:
    site = make_site()
    site.apply(snapshot(0))
    site.apply(MeterSnapshot("grid", Reading(at_minute(0), energy_wh=5)))
    async with linked(site) as (csms, _):
        await lose_and_find(site, csms)


async def lose_and_find(site: Site, csms: DemoCsms201) -> None:
    await csms.wait_for("StatusNotification", lambda p: p["evseId"] == 1)
    site.apply(DeviceFailed("left", "Modbus timeout", at_minute(1)))
    lost = await nth_event(csms, 1)
    assert lost["component"] == {"name": "Connector", "evse": {"id": 1, "connectorId": 1}}
    assert lost["techCode"] == "CommLost" and lost["actualValue"] == "true"
    site.apply(DeviceFailed("grid", "no route to host", at_minute(2)))
    meter = await nth_event(csms, 2)
    assert meter["component"] == {"name": "ControlMetering", "instance": "grid"}
    assert meter["techCode"] == "CommLost" and "no route to host" in meter["techInfo"]
    site.apply(MeterSnapshot("grid", Reading(at_minute(3), energy_wh=6)))
    back = await nth_event(csms, 3)
    assert back["component"] == meter["component"] and back["cleared"] is True
    assert back["cause"] == meter["eventId"]
    site.apply(snapshot(4))
    charger_back = await nth_event(csms, 4)
    assert charger_back["cleared"] is True and charger_back["cause"] == lost["eventId"]
    assert len({e["eventId"] for e in event_data(csms)}) == 4


async def test_a_hostile_fault_text_still_gives_a_schema_valid_frame() -> None:
    site = make_site()
    site.apply(snapshot(0))
    async with linked(site) as (csms, _):
        await hostile_fault(site, csms)


async def hostile_fault(site: Site, csms: DemoCsms201) -> None:
    await csms.wait_for("StatusNotification", lambda p: p["evseId"] == 1)
    hostile = Fault(FaultKind.OTHER, vendor_code="\x00\x1b[31m" + "C" * 300, info="\x07\ud800bad\r\n" + "x" * 5000)
    site.apply(snapshot(1, (hostile,)))
    data = await nth_event(csms, 1)  # the CSMS validated it against the 2.0.1 schema
    assert len(data["techCode"]) <= 50 and len(data["techInfo"]) <= 500
    for text in (data["techCode"], data["techInfo"]):
        assert not any(unicodedata.category(ch).startswith("C") for ch in text)
    assert data["techInfo"].startswith("OtherError: ?bad x")


async def test_events_while_the_csms_is_away_are_sent_when_it_is_back() -> None:
    port = free_port()
    site = make_site()
    site.apply(snapshot(0))
    tasks: list[asyncio.Task[None]] = []
    station = start_station(site, port, tasks)  # no CSMS there yet
    server = DemoCsms201("127.0.0.1", port)
    try:
        site.apply(snapshot(1, (HOT,)))
        site.apply(snapshot(2))
        station._take_pending()
        assert station.problems.queued() == 2
        await server.start()
        await nth_event(server, 2)
        assert [e["actualValue"] for e in event_data(server)] == ["true", "false"]
        actions = [m.action for m in server.received]
        assert actions.index("BootNotification") < actions.index("NotifyEvent")
    finally:
        tasks[0].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.stop()


def test_the_queue_is_bounded_and_event_ids_grow_across_restarts(tmp_path: Path) -> None:
    site = make_site()
    site.settings = JsonSettingsStore(tmp_path / "settings.json")
    problems = ProblemEvents(site, max_queued=3)
    at = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    for n in range(5):
        problems.take(FaultRaised(1, Fault(FaultKind.OTHER, vendor_code=f"V{n}"), at))
    assert problems.queued() == 3
    assert site.settings.load(EVENT_ID) == {"last": 5}
    again = ProblemEvents(site)
    again.take(FaultRaised(None, HOT, at))  # the gateway's own: the station
    assert site.settings.load(EVENT_ID) == {"last": 6}
    site.settings.save(EVENT_ID, {"last": "damaged"})
    assert ProblemEvents(site)._last_id == 0


def test_clean_text_bounds() -> None:
    assert clean_text("a\tb\nc", 50) == "a b c"
    assert clean_text("y" * 600, 500) == "y" * 497 + "..."
    assert clean_text("", 50) == ""
