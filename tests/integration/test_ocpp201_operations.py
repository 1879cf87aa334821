"""Reset of one EVSE and OnIdle resets, ChangeAvailability of a connector, DataTransfer: the 2.0.1
station against the real 2.0.1 CSMS (schemas on both ways)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from ocpp.v201 import call

from adapters.demo_csms.csms201 import DemoCsms201
from adapters.ocpp201_upstream.station import ChargingStation201
from gateway.domain.model import ChargerSnapshot, Connector, Reading, VehicleState
from gateway.domain.transactions import AuthPolicy
from gateway.services.sessions import ConnectorPolicy
from gateway.services.site import Site
from tests.fixtures.memory_outbox import memory_outbox
from tests.fixtures.status_site import until
from tests.integration import test_ocpp201_upstream as upstream_tests
from tests.integration.test_ocpp201_upstream import STATION, at_minute, upstream_at

# the upstream tests' fixtures: a DemoCsms201 on loopback, the short first-status grace
csms, short_status_grace = upstream_tests.csms, upstream_tests.short_status_grace

FREE = ConnectorPolicy(AuthPolicy.FREE, "CARPORT")


def make_site() -> Site:
    return Site([Connector(1, "left"), Connector(2, "right")], [], policies={1: FREE, 2: FREE})


def car(site: Site, device: str, minute: int, state: VehicleState, energy_wh: int = 1_000) -> None:
    site.apply(ChargerSnapshot(device, 1, Reading(at_minute(minute), energy_wh=energy_wh), vehicle_state=state))


@pytest.fixture
async def linked(csms: DemoCsms201) -> AsyncIterator[tuple[Site, ChargingStation201]]:
    """A station with both EVSEs read (no car), Accepted."""
    site = make_site()
    car(site, "left", 0, VehicleState.A)
    car(site, "right", 0, VehicleState.A)
    station = ChargingStation201(site, upstream_at(csms.port), memory_outbox())
    station.aligned_interval_s = 0
    task = asyncio.create_task(station.run())
    await asyncio.wait_for(station.accepted.wait(), 10)
    try:
        yield site, station
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def session_on(site: Site, csms: DemoCsms201, device: str, evse_id: int) -> None:
    car(site, device, 1, VehicleState.C)
    await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Started" and p["evse"]["id"] == evse_id)


def ended(csms: DemoCsms201) -> list[dict]:
    return [p for p in csms.messages("TransactionEvent") if p["eventType"] == "Ended"]


async def reset(csms: DemoCsms201, type_: str, evse_id: int | None = None) -> tuple[str, str | None]:
    answer = await csms.call(STATION, call.Reset(type=type_, evse_id=evse_id))
    return str(answer.status), (answer.status_info or {}).get("reason_code")


async def test_an_immediate_reset_of_an_evse_ends_its_transaction_only(
    csms: DemoCsms201, linked: tuple[Site, ChargingStation201]
) -> None:
    site, _ = linked
    await session_on(site, csms, "left", 1)
    await session_on(site, csms, "right", 2)
    assert await reset(csms, "Immediate", 1) == ("Accepted", None)
    stop = await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Ended")
    assert (stop["transactionInfo"]["stoppedReason"], stop["triggerReason"]) == ("ImmediateReset", "ResetCommand")
    assert site.connectors[2].session_active and not site.connectors[1].session_active
    assert [p["reason"] for p in csms.messages("BootNotification")] == ["PowerUp"]  # the station did not reset
    assert await reset(csms, "Immediate", 1) == ("Accepted", None)  # an idle EVSE: nothing to end
    assert len(ended(csms)) == 1


async def test_an_on_idle_reset_of_an_evse_waits_for_its_transaction(
    csms: DemoCsms201, linked: tuple[Site, ChargingStation201]
) -> None:
    site, station = linked
    assert await reset(csms, "OnIdle", 2) == ("Accepted", None)  # idle already
    await session_on(site, csms, "left", 1)
    assert await reset(csms, "OnIdle", 1) == ("Scheduled", None)
    await asyncio.sleep(0.2)
    assert site.connectors[1].session_active and ended(csms) == []  # the transaction goes on
    assert station.resets.evses_scheduled == {1}
    car(site, "left", 5, VehicleState.A)  # the car leaves
    stop = await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Ended")
    assert stop["transactionInfo"]["stoppedReason"] == "EVDisconnected"
    await until(site, lambda: not station.resets.evses_scheduled)


async def test_an_unknown_evse_is_rejected_with_a_reason(
    csms: DemoCsms201, linked: tuple[Site, ChargingStation201]
) -> None:
    # (a native charger's EVSE gets its charger's own Reset: tests/integration/test_ocpp201_native.py)
    assert await reset(csms, "Immediate", 9) == ("Rejected", "UnknownEvse")


async def test_a_station_reset_on_idle_is_scheduled_until_the_last_transaction_ends(
    csms: DemoCsms201, linked: tuple[Site, ChargingStation201]
) -> None:
    site, station = linked
    await session_on(site, csms, "left", 1)
    assert await reset(csms, "OnIdle") == ("Scheduled", None)
    await asyncio.sleep(0.3)
    assert ended(csms) == [] and [p["reason"] for p in csms.messages("BootNotification")] == ["PowerUp"]
    car(site, "left", 5, VehicleState.A)
    stop = await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Ended")
    assert stop["transactionInfo"]["stoppedReason"] == "EVDisconnected"  # not cut short by the reset
    await csms.wait_for("BootNotification", lambda p: p["reason"] == "RemoteReset")
    await until(site, lambda: station.accepted.is_set())
    assert await reset(csms, "OnIdle") == ("Accepted", None)  # idle: at once
    await csms.wait_for("BootNotification", lambda _: len(csms.messages("BootNotification")) == 3)


async def test_change_availability_of_a_connector_works_like_its_evse(
    csms: DemoCsms201, linked: tuple[Site, ChargingStation201]
) -> None:
    site, _ = linked

    async def change(status: str, evse: dict) -> tuple[str, str | None]:
        answer = await csms.call(STATION, call.ChangeAvailability(operational_status=status, evse=evse))
        return str(answer.status), (answer.status_info or {}).get("reason_code")

    assert await change("Inoperative", {"id": 1, "connector_id": 1}) == ("Accepted", None)
    await csms.wait_for("StatusNotification", lambda p: p["evseId"] == 1 and p["connectorStatus"] == "Unavailable")
    assert not site.connectors[1].available
    assert await change("Operative", {"id": 1, "connector_id": 2}) == ("Rejected", "UnknownConnectorId")
    assert not site.connectors[1].available  # unchanged
    assert await change("Operative", {"id": 1, "connector_id": 1}) == ("Accepted", None)
    await csms.wait_for("StatusNotification", lambda p: p["evseId"] == 1 and p["connectorStatus"] == "Available")
    await session_on(site, csms, "right", 2)
    assert await change("Inoperative", {"id": 2, "connector_id": 1}) == ("Scheduled", None)
    assert site.connectors[2].available  # until the transaction ends
    assert (await change("Inoperative", {"id": 7, "connector_id": 1}))[0] == "Rejected"


async def test_data_transfer_gets_unknown_vendor_id_and_the_station_sends_none(
    csms: DemoCsms201, linked: tuple[Site, ChargingStation201]
) -> None:
    answer = await csms.call(STATION, call.DataTransfer(vendor_id="com.example", message_id="Hello", data={"x": 1}))
    assert answer.status == "UnknownVendorId"
    answer = await csms.call(STATION, call.DataTransfer(vendor_id="x" * 255))
    assert answer.status == "UnknownVendorId"
    assert csms.messages("DataTransfer") == []
