"""TxCtrlr.TxStartPoint / TxStopPoint set by a real 2.0.1 CSMS (schemas validated both ways): the
transaction begins at the plug-in, at the authorisation or at the first charge, and outlives a
card stop until the cable goes; refused values, persistence, an outage and a kill."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

from ocpp.v201 import call

from adapters.demo_csms.csms201 import DemoCsms201
from adapters.ocpp201_upstream.station import CLEAN_SHUTDOWN, ChargingStation201
from adapters.storage.outbox_store import SegmentedOutboxStore
from adapters.storage.settings import JsonSettingsStore
from gateway.domain.model import ChargerSnapshot, Reading, VehicleState
from gateway.domain.transactions import AuthPolicy
from gateway.services.outbox import Outbox
from gateway.services.sessions import ConnectorPolicy
from gateway.services.site import Site
from tests.fixtures.net import free_port
from tests.fixtures.status_site import until
from tests.integration.test_ocpp201_smart_charging import profile
from tests.integration.test_ocpp201_upstream import (
    FREE,
    STATION,
    assert_gapless,
    at_minute,
    energy,
    make_site,
    short_status_grace,  # noqa: F401 (autouse fixture)
    start_station,
    upstream_at,
)
from tests.integration.test_ocpp201_upstream import csms as csms201  # noqa: F401 (a fixture, by this name)
from tests.integration.test_ocpp201_upstream import running as tasks  # noqa: F401 (a fixture)

CARDS = {1: ConnectorPolicy(AuthPolicy.LOCAL_LIST), 2: ConnectorPolicy(AuthPolicy.LOCAL_LIST)}
CARD = "CARD-0001"


def poll(minute: int, state: VehicleState, energy_wh: int, card: str | None = None) -> ChargerSnapshot:
    reading = Reading(at_minute(minute), energy_wh=energy_wh, power_w=7200.0)
    return ChargerSnapshot("left", 1, reading, vehicle_state=state, id_tag=card)


def at_iso(minute: int) -> str:
    return f"2026-11-29T12:0{minute}:00.000Z"


def sent(csms: DemoCsms201) -> list[dict[str, Any]]:
    """The TransactionEvents received, without the chargingState changes."""
    received = csms.messages("TransactionEvent")
    return [p for p in received if (p["eventType"], p["triggerReason"]) != ("Updated", "ChargingStateChanged")]


def steps(csms: DemoCsms201) -> list[tuple[str, str]]:
    return [(p["eventType"], p["triggerReason"]) for p in sent(csms)]


async def set_points(csms: DemoCsms201, **points: str) -> list[tuple[str, str | None]]:
    """SetVariables of TxCtrlr.<name> = value; the (status, reasonCode) of each."""
    asked = [
        {"component": {"name": "TxCtrlr"}, "variable": {"name": name}, "attribute_value": value}
        for name, value in points.items()
    ]
    answer = await csms.call(STATION, call.SetVariables(set_variable_data=asked))
    return [
        (r["attribute_status"], (r.get("attribute_status_info") or {}).get("reason_code"))
        for r in answer.set_variable_result
    ]


async def linked_station(
    csms: DemoCsms201, running: list, policies: dict[int, ConnectorPolicy] = CARDS, **points: str
) -> tuple[Site, ChargingStation201]:
    site = make_site(policies)
    site.apply(poll(0, VehicleState.A, 1_000))
    station = start_station(site, csms.port, running)
    await station.accepted.wait()
    assert await set_points(csms, **points) == [("Accepted", None)] * len(points)
    return site, station


async def ended(csms: DemoCsms201, station: ChargingStation201) -> dict[str, Any]:
    event = await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Ended")
    await asyncio.wait_for(station.outbox.wait_empty(), 5)
    return event


async def test_start_at_the_plug_in_then_the_card_then_the_unplug(csms201: DemoCsms201, tasks: list) -> None:  # noqa: F811
    site, station = await linked_station(csms201, tasks, TxStartPoint="EVConnected")
    site.apply(poll(1, VehicleState.B, 1_000))
    started = await csms201.wait_for("TransactionEvent", lambda p: p["eventType"] == "Started")
    assert started["triggerReason"] == "CablePluggedIn" and "idToken" not in started
    assert started["timestamp"] == "2026-11-29T12:01:00.000Z"
    assert energy(started) == [("Transaction.Begin", 1_000)]
    assert not site.connectors[1].session_active  # the domain's session waits for a card
    site.apply(poll(2, VehicleState.B, 1_000, CARD))
    authorized = await csms201.wait_for("TransactionEvent", lambda p: p["triggerReason"] == "Authorized")
    assert authorized["eventType"] == "Updated"
    assert authorized["idToken"] == {"idToken": CARD, "type": "ISO14443"}
    assert authorized["transactionInfo"]["chargingState"] == "EVConnected"
    site.apply(poll(3, VehicleState.C, 1_500, CARD))
    await station.take_samples()
    site.apply(poll(4, VehicleState.A, 1_800))
    end = await ended(csms201, station)
    assert steps(csms201) == [
        ("Started", "CablePluggedIn"),
        ("Updated", "Authorized"),
        ("Updated", "MeterValuePeriodic"),
        ("Ended", "EVCommunicationLost"),
    ]
    assert end["transactionInfo"]["stoppedReason"] == "EVDisconnected"
    assert end["idToken"] == {"idToken": CARD, "type": "ISO14443"}
    assert energy(end) == [("Transaction.End", 1_800)]
    assert len({p["transactionInfo"]["transactionId"] for p in csms201.messages("TransactionEvent")}) == 1
    assert_gapless(csms201)
    assert station.ledger.sessions == {}


async def test_a_car_that_leaves_without_a_card_ends_it_without_energy(csms201: DemoCsms201, tasks: list) -> None:  # noqa: F811
    site, station = await linked_station(csms201, tasks, TxStartPoint="EVConnected,Authorized")
    site.apply(poll(1, VehicleState.B, 1_000))
    site.apply(poll(3, VehicleState.A, 1_000))
    end = await ended(csms201, station)
    assert steps(csms201) == [("Started", "CablePluggedIn"), ("Ended", "EVCommunicationLost")]
    assert end["transactionInfo"]["stoppedReason"] == "EVDisconnected"
    assert "idToken" not in end and end["timestamp"] == "2026-11-29T12:03:00.000Z"
    assert energy(end) == [("Transaction.End", 1_000)]
    assert_gapless(csms201)


async def test_stop_point_ev_connected_outlives_the_card_stop(csms201: DemoCsms201, tasks: list) -> None:  # noqa: F811
    site, station = await linked_station(csms201, tasks, TxStopPoint="EVConnected")
    site.apply(poll(1, VehicleState.B, 1_000, CARD))  # plugged, card: the default start
    await csms201.wait_for("TransactionEvent", lambda p: p["eventType"] == "Started")
    site.apply(poll(2, VehicleState.C, 1_400))
    site.apply(poll(3, VehicleState.C, 1_500, CARD))  # the card again: the session ends (Local)
    stop = await csms201.wait_for("TransactionEvent", lambda p: p["triggerReason"] == "StopAuthorized")
    assert stop["eventType"] == "Updated" and stop["transactionInfo"]["chargingState"] == "EVConnected"
    assert stop["idToken"] == {"idToken": CARD, "type": "ISO14443"}
    await asyncio.wait_for(station.outbox.wait_empty(), 5)
    assert not site.connectors[1].session_active  # the domain's session (what is billed) is over
    assert [p for p in csms201.messages("TransactionEvent") if p["eventType"] == "Ended"] == []
    site.apply(poll(5, VehicleState.A, 1_500))
    end = await ended(csms201, station)
    assert steps(csms201) == [
        ("Started", "Authorized"),
        ("Updated", "StopAuthorized"),
        ("Ended", "EVCommunicationLost"),
    ]
    assert end["timestamp"] == "2026-11-29T12:05:00.000Z"
    assert energy(end) == [("Transaction.End", 1_500)]
    assert_gapless(csms201)


async def test_start_point_authorized_before_the_car_and_a_car_that_never_comes(
    csms201: DemoCsms201,  # noqa: F811
    tasks: list,  # noqa: F811
) -> None:
    site, station = await linked_station(csms201, tasks, TxStartPoint="Authorized")
    token = {"id_token": "APP-7", "type": "Central"}
    request = call.RequestStartTransaction(id_token=token, remote_start_id=41, evse_id=1)
    assert (await csms201.call(STATION, request)).status == "Accepted"
    started = await csms201.wait_for("TransactionEvent", lambda p: p["eventType"] == "Started")
    assert started["triggerReason"] == "RemoteStart" and started["idToken"] == {"idToken": "APP-7", "type": "Central"}
    assert started["transactionInfo"]["remoteStartId"] == 41
    assert energy(started) == [("Transaction.Begin", 1_000)]
    now = site.clock.now()  # EVConnectionTimeOut counts from the authorisation, on the Site's clock
    site.apply(ChargerSnapshot("left", 1, Reading(now + timedelta(seconds=61), energy_wh=1_000), VehicleState.A))
    end = await ended(csms201, station)
    assert (end["transactionInfo"]["stoppedReason"], end["triggerReason"]) == ("Timeout", "EVConnectTimeout")
    assert energy(end) == [("Transaction.End", 1_000)]
    assert_gapless(csms201)


async def test_start_point_authorized_then_the_car_comes(csms201: DemoCsms201, tasks: list) -> None:  # noqa: F811
    site, station = await linked_station(csms201, tasks, TxStartPoint="Authorized")
    token = {"id_token": "APP-7", "type": "Central"}
    request = call.RequestStartTransaction(id_token=token, remote_start_id=42, evse_id=1)
    assert (await csms201.call(STATION, request)).status == "Accepted"
    await csms201.wait_for("TransactionEvent", lambda p: p["eventType"] == "Started")
    site.apply(poll(1, VehicleState.B, 1_000))
    site.apply(poll(2, VehicleState.A, 1_300))
    end = await ended(csms201, station)
    assert steps(csms201) == [
        ("Started", "RemoteStart"),
        ("Updated", "CablePluggedIn"),
        ("Ended", "EVCommunicationLost"),
    ]
    assert energy(end) == [("Transaction.End", 1_300)]
    assert_gapless(csms201)


async def test_a_token_refused_before_the_car_ends_the_transaction_deauthorized(
    csms201: DemoCsms201,  # noqa: F811
    tasks: list,  # noqa: F811
) -> None:
    site, station = await linked_station(csms201, tasks, TxStartPoint="Authorized")
    csms201.blocked_id_tags.add("APP-BAD")
    token = {"id_token": "APP-BAD", "type": "Central"}
    request = call.RequestStartTransaction(id_token=token, remote_start_id=43, evse_id=1)
    assert (await csms201.call(STATION, request)).status == "Accepted"
    end = await ended(csms201, station)
    assert steps(csms201) == [("Started", "RemoteStart"), ("Ended", "Deauthorized")]
    assert end["transactionInfo"]["stoppedReason"] == "DeAuthorized"
    assert_gapless(csms201)
    site.apply(poll(1, VehicleState.B, 1_000))  # the car still comes: its session is asked about again
    await csms201.wait_for("TransactionEvent", lambda p: p["eventType"] == "Ended" and p is not end)
    assert steps(csms201)[2:] == [("Started", "RemoteStart"), ("Ended", "Deauthorized")]
    numbers: dict[str, list[int]] = {}
    for p in csms201.messages("TransactionEvent"):
        numbers.setdefault(p["transactionInfo"]["transactionId"], []).append(p["seqNo"])
    assert [n == list(range(len(n))) for n in numbers.values()] == [True, True]  # two transactions, each gapless


async def test_start_point_energy_transfer(csms201: DemoCsms201, tasks: list) -> None:  # noqa: F811
    site, station = await linked_station(csms201, tasks, FREE, TxStartPoint="EnergyTransfer")
    site.apply(poll(1, VehicleState.B, 1_000))  # a session that never charges is no transaction
    site.apply(poll(2, VehicleState.A, 1_000))
    site.apply(poll(3, VehicleState.B, 1_000))
    site.apply(poll(4, VehicleState.C, 1_200))
    site.apply(poll(5, VehicleState.A, 1_900))
    end = await ended(csms201, station)
    assert steps(csms201) == [("Started", "ChargingStateChanged"), ("Ended", "EVCommunicationLost")]
    started = sent(csms201)[0]
    assert started["timestamp"] == "2026-11-29T12:04:00.000Z"
    assert energy(started) == [("Transaction.Begin", 1_200)] and energy(end) == [("Transaction.End", 1_900)]
    assert_gapless(csms201)


async def test_what_no_device_tells_is_rejected(csms201: DemoCsms201, tasks: list) -> None:  # noqa: F811
    await linked_station(csms201, tasks, TxStopPoint="EVConnected,Authorized")
    assert await set_points(csms201, TxStartPoint="ParkingBayOccupancy") == [("Rejected", "UnsupportedParam")]
    assert await set_points(csms201, TxStartPoint="EVConnected,DataSigned") == [("Rejected", "UnsupportedParam")]
    assert await set_points(csms201, TxStopPoint="EnergyTransfer") == [("Rejected", "UnsupportedParam")]
    assert await set_points(csms201, TxStopPoint="EVConnected,EVConnected") == [("Rejected", "InvalidValue")]
    assert await set_points(csms201, TxStartPoint="Coffee") == [("Rejected", "InvalidValue")]
    asked = [{"component": {"name": "TxCtrlr"}, "variable": {"name": n}} for n in ("TxStartPoint", "TxStopPoint")]
    answer = await csms201.call(STATION, call.GetVariables(get_variable_data=asked))
    assert [r["attribute_value"] for r in answer.get_variable_result] == ["PowerPathClosed", "EVConnected,Authorized"]


def kept_on_disk(tmp_path: Path) -> tuple[Site, Outbox]:
    """A card site whose settings and outbox are files (what a restart finds)."""
    site = make_site(CARDS)
    site.settings = JsonSettingsStore(tmp_path / "settings.json")
    return site, Outbox(SegmentedOutboxStore(tmp_path / "outbox"))


async def test_points_kept_across_a_restart_and_a_window_open_at_a_kill_ends_power_loss(tmp_path: Path) -> None:
    csms = DemoCsms201("127.0.0.1", 0)
    await csms.start()
    running: list[asyncio.Task[None]] = []
    try:
        site, outbox = kept_on_disk(tmp_path)
        site.apply(poll(0, VehicleState.A, 1_000))
        first = ChargingStation201(site, upstream_at(csms.port), outbox)
        running.append(asyncio.create_task(first.run()))
        await first.accepted.wait()
        assert await set_points(csms, TxStartPoint="EVConnected") == [("Accepted", None)]
        site.apply(poll(1, VehicleState.B, 1_000))
        await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Started")
        await asyncio.wait_for(first.outbox.wait_empty(), 5)
        killed = running.pop()
        killed.cancel()
        await asyncio.gather(killed, return_exceptions=True)
        JsonSettingsStore(tmp_path / "settings.json").save(CLEAN_SHUTDOWN, False)  # as a kill -9 leaves it

        site, outbox = kept_on_disk(tmp_path)
        second = ChargingStation201(site, upstream_at(csms.port), outbox)
        assert second.device_model.value("TxCtrlr.TxStartPoint") == "EVConnected"
        running.append(asyncio.create_task(second.run()))
        end = await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Ended", timeout=15)
        assert (end["transactionInfo"]["stoppedReason"], end["offline"]) == ("PowerLoss", True)
        assert "idToken" not in end and energy(end) == [("Transaction.End", 1_000)]
        assert_gapless(csms)
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await csms.stop()


async def test_an_outage_during_a_window_delivers_it_in_order_offline(tasks: list) -> None:  # noqa: F811
    port = free_port()
    csms = DemoCsms201("127.0.0.1", port)
    await csms.start()
    try:
        site, station = await linked_station(csms, tasks, FREE, TxStartPoint="EVConnected")
        await csms.stop()
        await until(site, lambda: not station.online(), timeout_s=5)
        site.apply(poll(1, VehicleState.B, 1_000))  # free charging: plugged, then authorised at once
        site.apply(poll(2, VehicleState.C, 1_300))
        await station.take_samples()
        site.apply(poll(4, VehicleState.A, 1_600))
        assert site.settle()
        csms = DemoCsms201("127.0.0.1", port)
        await csms.start()
        end = await ended(csms, station)
        assert steps(csms) == [
            ("Started", "CablePluggedIn"),
            ("Updated", "Authorized"),
            ("Updated", "MeterValuePeriodic"),
            ("Ended", "EVCommunicationLost"),
        ]
        assert sent(csms)[1]["idToken"] == {"idToken": "CARPORT", "type": "Central"}
        assert all(p["offline"] for p in csms.messages("TransactionEvent"))
        stamps = [p["timestamp"] for p in sent(csms)]
        assert stamps == [at_iso(1), at_iso(1), at_iso(2), at_iso(4)]
        assert energy(end) == [("Transaction.End", 1_600)]
        assert_gapless(csms)
    finally:
        await csms.stop()


async def test_a_tx_profile_names_the_transaction_the_csms_was_sent(csms201: DemoCsms201, tasks: list) -> None:  # noqa: F811
    """Found in review: with the transaction begun at the plug-in, a TxProfile for the transactionId
    of its Started was refused TxNotFound (the id of the domain's session was asked for instead)."""
    site, _ = await linked_station(csms201, tasks, TxStartPoint="EVConnected")
    site.apply(poll(1, VehicleState.B, 1_000))
    started = await csms201.wait_for("TransactionEvent", lambda p: p["eventType"] == "Started")
    tx_id = started["transactionInfo"]["transactionId"]
    tx_profile = profile(5, "TxProfile", 10.0, transactionId=tx_id)
    answer = await csms201.call(STATION, call.SetChargingProfile(evse_id=1, charging_profile=tx_profile))
    assert answer.status == "Accepted"  # before any card: the transaction is there, its session not yet
    site.apply(poll(2, VehicleState.B, 1_000, CARD))
    await csms201.wait_for("TransactionEvent", lambda p: p["triggerReason"] == "Authorized")
    asked = call.GetChargingProfiles(
        request_id=3, evse_id=1, charging_profile={"charging_profile_purpose": "TxProfile"}
    )
    assert (await csms201.call(STATION, asked)).status == "Accepted"
    report = await csms201.wait_for("ReportChargingProfiles", lambda p: p["requestId"] == 3)
    assert [p["transactionId"] for p in report["chargingProfile"]] == [tx_id]
    wrong = profile(6, "TxProfile", 10.0, transactionId="not-" + tx_id[:30])
    refused = await csms201.call(STATION, call.SetChargingProfile(evse_id=1, charging_profile=wrong))
    assert (refused.status, refused.status_info["reason_code"]) == ("Rejected", "TxNotFound")
