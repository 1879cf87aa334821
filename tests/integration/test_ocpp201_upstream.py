"""The site as one OCPP 2.0.1 Charging Station against a real 2.0.1 CSMS (the ``ocpp`` library,
schemas validated both ways): boot, statuses per EVSE, sessions as TransactionEvents, an outage."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ocpp.v201 import call
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from adapters.demo_csms.csms201 import DemoCsms201
from adapters.ocpp201_upstream import statuses
from adapters.ocpp201_upstream.ledger import record_key
from adapters.ocpp201_upstream.station import CLEAN_SHUTDOWN, ChargingStation201
from adapters.storage.outbox_store import SegmentedOutboxStore
from adapters.storage.settings import JsonSettingsStore
from gateway.config import UpstreamConfig
from gateway.domain.events import UpstreamStateChanged
from gateway.domain.model import ChargerSnapshot, Connector, Meter, MeterSnapshot, Reading, VehicleState
from gateway.domain.transactions import AuthPolicy
from gateway.services.outbox import Outbox
from gateway.services.sessions import ConnectorPolicy
from gateway.services.site import Site
from tests.fixtures.memory_outbox import memory_outbox
from tests.fixtures.modbus import StepClock
from tests.fixtures.net import free_port
from tests.fixtures.status_site import until
from tests.integration.test_upstream_hostile import HOSTILE_FRAMES

MEASURED_AT = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
REMOTE = ConnectorPolicy(AuthPolicy.REMOTE)
FREE = {1: ConnectorPolicy(AuthPolicy.FREE, "CARPORT"), 2: REMOTE}
STATION = "GW-201"


def make_site(policies: dict[int, ConnectorPolicy] | None = None) -> Site:
    return Site(
        [Connector(1, "left"), Connector(2, "right")],
        [Meter("grid", connector_id=0)],
        policies=policies or {1: REMOTE, 2: REMOTE},
    )


def upstream_at(port: int, **overrides: object) -> UpstreamConfig:
    settings: dict[str, object] = {
        "url": f"ws://127.0.0.1:{port}/ocpp",
        "charge_point_id": STATION,
        "heartbeat_interval_s": 60,
        "meter_value_sample_interval_s": 0,
        "reconnect_max_s": 0.3,
        "response_timeout_s": 5,
    }
    settings.update(overrides)
    return UpstreamConfig.model_validate(settings)


def at_minute(minute: int) -> datetime:
    return MEASURED_AT + timedelta(minutes=minute)


def charger_at(minute: int, state: VehicleState, energy_wh: int, device: str = "left") -> ChargerSnapshot:
    reading = Reading(at_minute(minute), energy_wh=energy_wh, power_w=7200.0, current_a=(10.0, 10.5, 11.0))
    return ChargerSnapshot(device, 1, reading, vehicle_state=state)


@pytest.fixture(autouse=True)
def short_status_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statuses, "FIRST_STATUS_GRACE_S", 0.2)


@pytest.fixture
def csms(csms201: DemoCsms201) -> DemoCsms201:
    return csms201  # (tests/fixtures/ocpp.py)


@pytest.fixture
async def running() -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def start_station(site: Site, port: int, running: list, outbox: Outbox | None = None, **kw: Any) -> ChargingStation201:
    station = ChargingStation201(site, upstream_at(port, **kw), outbox or memory_outbox())
    station.aligned_interval_s = 0
    running.append(asyncio.create_task(station.run()))
    return station


def events(csms: DemoCsms201, *, states: bool = False) -> list[dict[str, Any]]:
    """The TransactionEvents received; without ``states``, those of a chargingState change left out."""
    received = csms.messages("TransactionEvent")
    return received if states else [p for p in received if p["triggerReason"] != "ChargingStateChanged"]


def assert_gapless(csms: DemoCsms201) -> None:
    """Every TransactionEvent of the one session numbered 0, 1, 2... (each once)."""
    received = events(csms, states=True)
    assert [p["seqNo"] for p in received] == list(range(len(received)))


def energy(event: dict[str, Any]) -> list[tuple[str, float]]:
    return [
        (s["context"], s["value"])
        for v in event.get("meterValue", [])
        for s in v["sampledValue"]
        if s.get("measurand") == "Energy.Active.Import.Register"
    ]


async def test_boot_accepted_then_a_status_for_every_evse(csms: DemoCsms201, running: list) -> None:
    site = make_site()
    site.apply(charger_at(0, VehicleState.A, 100))
    start_station(site, csms.port, running)
    await csms.wait_for("StatusNotification", lambda p: p["evseId"] == 2)
    boot = csms.messages("BootNotification")[0]
    assert boot == {"chargingStation": {"model": "site-gateway", "vendorName": "ocpp-gateway"}, "reason": "PowerUp"}
    sent = {p["evseId"]: p for p in csms.messages("StatusNotification")}
    assert sent[1] == {
        "timestamp": sent[1]["timestamp"],
        "connectorStatus": "Available",
        "evseId": 1,
        "connectorId": 1,
    }
    assert sent[2]["connectorStatus"] == "Unavailable"  # never read: after the grace, as it is
    assert site.upstream.registration == "Accepted"
    site.apply(charger_at(1, VehicleState.B, 100))
    occupied = await csms.wait_for("StatusNotification", lambda p: p["connectorStatus"] == "Occupied")
    assert occupied["evseId"] == 1 and occupied["timestamp"] == "2026-11-29T12:01:00.000Z"


async def test_boot_pending_is_retried_and_nothing_else_goes_before_accepted(running: list) -> None:
    csms = DemoCsms201("127.0.0.1", 0, boot_answers=[("Pending", 1), ("Accepted", 60)])
    await csms.start()
    try:
        site = make_site()
        site.apply(charger_at(0, VehicleState.A, 100))
        start_station(site, csms.port, running)
        await csms.wait_for("StatusNotification", lambda p: p["evseId"] == 1)
        actions = [m.action for m in csms.received]
        assert actions[:2] == ["BootNotification", "BootNotification"], actions
        boots = [m.received_at for m in csms.received if m.action == "BootNotification"]
        assert (boots[1] - boots[0]).total_seconds() >= 0.9
    finally:
        await csms.stop()


async def free_session(site: Site, station: ChargingStation201) -> None:
    """Plug in (free charging starts), charge with two samples, unplug."""
    site.apply(charger_at(0, VehicleState.A, 1_000))
    site.apply(charger_at(1, VehicleState.B, 1_000))
    for minute, energy_wh in ((2, 1_200), (3, 1_700)):
        site.apply(charger_at(minute, VehicleState.C, energy_wh))
        await station.take_samples()
    site.apply(charger_at(4, VehicleState.A, 1_900))


async def test_a_session_is_started_updated_ended_with_gapless_seq_no(csms: DemoCsms201, running: list) -> None:
    site = make_site(FREE)
    station = start_station(site, csms.port, running, meter_values_per_request=1)  # batches: test_ocpp201_replay
    await station.accepted.wait()
    await free_session(site, station)
    await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Ended")
    assert_gapless(csms)
    sent = events(csms)
    assert [p["eventType"] for p in sent] == ["Started", "Updated", "Updated", "Ended"]
    changes = [p["transactionInfo"]["chargingState"] for p in events(csms, states=True) if p not in sent]
    assert changes == ["SuspendedEV", "Charging"]  # enabled before the car draws (B), then charging (C)
    assert len({p["transactionInfo"]["transactionId"] for p in sent}) == 1
    started, ended = sent[0], sent[-1]
    assert started["triggerReason"] == "CablePluggedIn"
    assert started["idToken"] == {"idToken": "CARPORT", "type": "Central"}
    assert started["evse"] == {"id": 1, "connectorId": 1}
    assert started["timestamp"] == "2026-11-29T12:01:00.000Z"
    assert energy(started) == [("Transaction.Begin", 1_000)]
    assert [energy(p) for p in sent[1:3]] == [[("Sample.Periodic", 1_200)], [("Sample.Periodic", 1_700)]]
    assert sent[1]["triggerReason"] == "MeterValuePeriodic"
    assert sent[1]["transactionInfo"]["chargingState"] == "Charging"
    units = {s["measurand"]: s["unitOfMeasure"]["unit"] for s in sent[1]["meterValue"][0]["sampledValue"]}
    assert units == {"Energy.Active.Import.Register": "Wh", "Power.Active.Import": "W", "Current.Import": "A"}
    assert ended["transactionInfo"]["stoppedReason"] == "EVDisconnected"
    assert ended["triggerReason"] == "EVCommunicationLost"
    assert energy(ended) == [("Transaction.End", 1_900)]
    assert all(p["offline"] is False for p in sent)
    await asyncio.wait_for(station.outbox.wait_empty(), 5)
    assert station.ledger.sessions == {}  # the Ended was answered: nothing left to remember


async def test_an_outage_delivers_the_queued_events_in_order_marked_offline(running: list) -> None:
    port = free_port()
    site = make_site(FREE)
    station = start_station(site, port, running)  # no CSMS yet: the whole session happens offline
    await free_session(site, station)
    assert site.settle()  # every effect queued, and on disk
    assert len(station.outbox.store) == 6  # with the two chargingState changes
    csms = DemoCsms201("127.0.0.1", port)
    await csms.start()
    try:
        await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Ended", timeout=15)
        assert_gapless(csms)
        assert all(p["offline"] for p in events(csms, states=True))
        sent = events(csms)
        assert [(p["eventType"], p["triggerReason"]) for p in sent] == [
            ("Started", "CablePluggedIn"),
            ("Updated", "MeterValuePeriodic"),  # the two samples in one (replay_batches.py)
            ("Ended", "EVCommunicationLost"),
        ]
        stamps = [v["timestamp"] for p in sent for v in p["meterValue"]]
        assert stamps == [f"2026-11-29T12:0{minute}:00.000Z" for minute in (1, 2, 3, 4)]
        assert csms.messages("BootNotification")  # the boot went first
        assert [m.action for m in csms.received].index("BootNotification") == 0
    finally:
        await csms.stop()


async def test_csms_away_mid_session_then_back(csms: DemoCsms201, running: list) -> None:
    site = make_site(FREE)
    station = start_station(site, csms.port, running)
    await station.accepted.wait()
    site.apply(charger_at(0, VehicleState.A, 1_000))
    site.apply(charger_at(1, VehicleState.B, 1_000))
    await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Started")
    await asyncio.wait_for(station.outbox.wait_empty(), 5)  # answered, not only received
    link = site.subscribe()
    await csms.stop()
    async with asyncio.timeout(5):
        async for event in link:
            if isinstance(event, UpstreamStateChanged) and not event.connected:
                break
    assert not station.online()
    site.apply(charger_at(2, VehicleState.C, 1_500))
    await station.take_samples()
    site.apply(charger_at(3, VehicleState.A, 1_800))
    await csms.start()
    await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Ended", timeout=15)
    assert_gapless(csms)
    sent = events(csms)
    assert [(p["eventType"], p["offline"]) for p in sent] == [("Started", False), ("Updated", True), ("Ended", True)]
    assert sent[1]["timestamp"] == "2026-11-29T12:02:00.000Z"
    assert len(csms.messages("BootNotification")) == 1  # a reconnect is no reboot


async def test_seq_no_survives_a_restart_and_an_open_session_ends_with_power_loss(tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "settings.json"

    def persistent_site() -> Site:
        site = make_site(FREE)
        site.settings = JsonSettingsStore(path)
        site.clock = StepClock(at_minute(1))  # the readings' time: what the Site stamps itself is not later
        return site

    def outbox() -> Outbox:
        return Outbox(SegmentedOutboxStore(tmp_path / "outbox"))

    site = persistent_site()
    first = ChargingStation201(site, upstream_at(port), outbox())
    task = asyncio.create_task(first.run())
    site.apply(charger_at(0, VehicleState.A, 100))
    site.apply(charger_at(1, VehicleState.B, 100))
    site.apply(charger_at(7, VehicleState.C, 2_100))
    await first.take_samples()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    JsonSettingsStore(path).save(CLEAN_SHUTDOWN, False)  # as a kill -9 leaves it

    tasks: list[asyncio.Task[None]] = []
    second = ChargingStation201(persistent_site(), upstream_at(port), outbox())
    assert second.boot_reason == "Unknown"
    csms = DemoCsms201("127.0.0.1", port)
    await csms.start()
    try:
        tasks.append(asyncio.create_task(second.run()))
        await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Ended", timeout=15)
        assert_gapless(csms)
        sent = events(csms)
        assert [p["eventType"] for p in sent] == ["Started", "Updated", "Ended"]
        ended = sent[-1]
        assert ended["transactionInfo"]["stoppedReason"] == "PowerLoss"
        assert ended["offline"] is True
        assert energy(ended) == [("Transaction.End", 2_100)]
        assert ended["timestamp"] == "2026-11-29T12:07:00.000Z"
        assert csms.messages("BootNotification")[0]["reason"] == "Unknown"
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await csms.stop()


async def test_the_same_record_sent_again_keeps_its_seq_no(tmp_path: Path) -> None:
    """A frame whose answer never came (lost link) is sent again with the number it had."""
    site = make_site(FREE)
    site.settings = JsonSettingsStore(tmp_path / "settings.json")
    station = ChargingStation201(site, upstream_at(free_port()), memory_outbox())
    site.apply(charger_at(0, VehicleState.A, 100))
    site.apply(charger_at(1, VehicleState.B, 100))
    station._take_pending()
    record = await station.outbox.next()
    ref = record.local_ref
    assert ref is not None
    key = record_key(record.payload)
    assert station.ledger.seq_no(ref, key) == 0
    assert station.ledger.seq_no(ref, key) == 0  # again: the same
    reopened = ChargingStation201(make_site(FREE), upstream_at(free_port()), memory_outbox(), ledger=site.settings)
    assert reopened.ledger.seq_no(ref, key) == 0  # and after a restart
    assert reopened.ledger.seq_no(ref, "the next record") == 1


async def test_request_stop_transaction_ends_the_session(csms: DemoCsms201, running: list) -> None:
    site = make_site(FREE)
    station = start_station(site, csms.port, running)
    await station.accepted.wait()
    site.apply(charger_at(0, VehicleState.A, 1_000))
    site.apply(charger_at(1, VehicleState.C, 1_000))
    started = await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Started")
    tx = started["transactionInfo"]["transactionId"]
    unknown = await csms.call(STATION, call.RequestStopTransaction(transaction_id="no-such-tx"))
    assert unknown.status == "Rejected"
    answer = await csms.call(STATION, call.RequestStopTransaction(transaction_id=tx))
    assert answer.status == "Accepted"
    ended = await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Ended")
    assert ended["transactionInfo"] == {"transactionId": tx, "chargingState": "Idle", "stoppedReason": "Remote"}
    assert ended["triggerReason"] == "RemoteStop"


async def test_request_start_transaction_starts_with_the_remote_start_id(csms: DemoCsms201, running: list) -> None:
    site = make_site()
    station = start_station(site, csms.port, running)
    await station.accepted.wait()
    site.apply(charger_at(0, VehicleState.A, 500))
    token = {"id_token": "APP-USER-7", "type": "Central"}
    answer = await csms.call(STATION, call.RequestStartTransaction(id_token=token, remote_start_id=42, evse_id=1))
    assert answer.status == "Accepted"
    site.apply(charger_at(1, VehicleState.C, 500))
    started = await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Started")
    assert started["triggerReason"] == "RemoteStart"
    assert started["transactionInfo"]["remoteStartId"] == 42
    assert started["idToken"] == {"idToken": "APP-USER-7", "type": "Central"}
    bad = await csms.call(STATION, call.RequestStartTransaction(id_token=token, remote_start_id=43, evse_id=9))
    assert bad.status == "Rejected"


async def test_change_availability_and_trigger_message(csms: DemoCsms201, running: list) -> None:
    site = make_site()
    site.apply(charger_at(0, VehicleState.A, 500))
    station = start_station(site, csms.port, running)
    await station.accepted.wait()
    answer = await csms.call(
        STATION, call.ChangeAvailability(operational_status="Inoperative", evse={"id": 1, "connector_id": 1})
    )
    assert answer.status == "Accepted"
    await csms.wait_for("StatusNotification", lambda p: p["evseId"] == 1 and p["connectorStatus"] == "Unavailable")
    heartbeats = len(csms.messages("Heartbeat"))
    triggered = await csms.call(STATION, call.TriggerMessage(requested_message="Heartbeat"))
    assert triggered.status == "Accepted"
    await csms.wait_for("Heartbeat", lambda _: len(csms.messages("Heartbeat")) > heartbeats)
    site.apply(MeterSnapshot("grid", Reading(MEASURED_AT, energy_wh=9_876_543, power_w=11000.0)))
    assert (await csms.call(STATION, call.TriggerMessage(requested_message="MeterValues"))).status == "Accepted"
    grid = await csms.wait_for("MeterValues", lambda p: p["evseId"] == 0)
    sample = grid["meterValue"][0]["sampledValue"][0]
    assert (sample["value"], sample["location"], sample["context"]) == (9_876_543, "Inlet", "Trigger")
    refused = await csms.call(STATION, call.TriggerMessage(requested_message="LogStatusNotification"))
    assert refused.status == "NotImplemented"


async def test_an_unsupported_call_gets_not_implemented_and_the_link_lives(csms: DemoCsms201, running: list) -> None:
    site = make_site()
    station = start_station(site, csms.port, running)
    await station.accepted.wait()
    session = csms.sessions[STATION]
    answers: asyncio.Queue[str] = asyncio.Queue()
    original = session.route_message

    async def capture(raw: str | bytes) -> None:
        frame = json.loads(raw)
        if frame[0] == 4:
            answers.put_nowait(frame[2])
        await original(raw)

    session.route_message = capture  # type: ignore[method-assign]
    await session._send(json.dumps([2, "u-1", "ClearDisplayMessage", {"id": 1}]))  # a 2.0.1 action
    assert await asyncio.wait_for(answers.get(), 5) == "NotSupported"  # known, not carried out (OCPP-J 2.0.1)
    await session._send(json.dumps([2, "u-0", "MakeCoffee", {}]))
    assert await asyncio.wait_for(answers.get(), 5) == "NotImplemented"  # not a 2.0.1 action
    await session._send(json.dumps([2, "u-2", "Reset", {"type": "Sideways"}]))  # fails the schema
    assert await asyncio.wait_for(answers.get(), 5) == "FormatViolation"
    await session._send("not json at all")
    answer = await csms.call(STATION, call.TriggerMessage(requested_message="Heartbeat"))
    assert answer.status == "Accepted"  # the link lives
    assert station.online()


async def test_basic_auth_and_subprotocol(running: list) -> None:
    csms = DemoCsms201("127.0.0.1", 0, password="s3cret-pass-201")
    await csms.start()
    try:
        with pytest.raises(InvalidStatus):  # no credentials: the CSMS refuses
            async with connect(f"{csms.url}/{STATION}", subprotocols=[Subprotocol("ocpp2.0.1")]):
                pass
        site = make_site()
        station = ChargingStation201(site, upstream_at(csms.port, password="s3cret-pass-201"), memory_outbox())
        running.append(asyncio.create_task(station.run()))
        await asyncio.wait_for(station.accepted.wait(), 10)
        assert site.upstream.connected
    finally:
        await csms.stop()


async def test_reset_ends_the_session_then_boots_again_as_remote_reset(csms: DemoCsms201, running: list) -> None:
    site = make_site(FREE)
    station = start_station(site, csms.port, running)
    await station.accepted.wait()
    site.apply(charger_at(0, VehicleState.A, 1_000))
    site.apply(charger_at(1, VehicleState.C, 1_000))
    await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Started")
    answer = await csms.call(STATION, call.Reset(type="Immediate"))
    assert answer.status == "Accepted"
    ended = await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Ended")
    assert ended["transactionInfo"]["stoppedReason"] == "ImmediateReset"
    assert ended["triggerReason"] == "ResetCommand"
    reboot = await csms.wait_for("BootNotification", lambda p: p["reason"] == "RemoteReset")
    assert reboot["chargingStation"]["vendorName"] == "ocpp-gateway"
    per_evse = await csms.call(STATION, call.Reset(type="OnIdle", evse_id=7))
    assert per_evse.status == "Rejected"  # no such EVSE (EVSE resets: test_ocpp201_operations.py)


async def test_unlock_connector_says_what_a_modbus_charger_can_do(csms: DemoCsms201, running: list) -> None:
    """No shipped profile has an unlock register: UnlockFailed, never a pretended Unlocked; an
    EVSE in a session is not unlocked; an EVSE or connector the station does not have is unknown."""
    site = make_site({1: ConnectorPolicy(AuthPolicy.FREE, "FLEET-01"), 2: REMOTE})
    site.apply(ChargerSnapshot("left", 1, Reading(at_minute(0), energy_wh=100), VehicleState.A))
    station = start_station(site, csms.port, running)
    await station.accepted.wait()

    async def unlock(evse_id: int, connector_id: int = 1) -> str:
        answer = await csms.call(STATION, call.UnlockConnector(evse_id=evse_id, connector_id=connector_id))
        return str(answer.status)

    assert await unlock(1) == "UnlockFailed"
    assert await unlock(7) == "UnknownConnector"
    assert await unlock(1, connector_id=2) == "UnknownConnector"
    site.apply(ChargerSnapshot("left", 1, Reading(at_minute(1), energy_wh=100), VehicleState.C))
    await until(site, lambda: site.connectors[1].session_active)
    assert await unlock(1) == "OngoingAuthorizedTransaction"


async def test_frames_that_cannot_be_read_leave_the_link_and_the_station_running(
    csms: DemoCsms201, running: list
) -> None:
    site = make_site()
    station = start_station(site, csms.port, running)
    await station.accepted.wait()
    session = csms.sessions[STATION]
    for frame in HOSTILE_FRAMES:
        await session._connection.send(frame)
    answer = await asyncio.wait_for(csms.call(STATION, call.TriggerMessage(requested_message="Heartbeat")), 5)
    assert answer.status == "Accepted"  # the same connection still answers
    assert not running[0].done() and csms.connections == 1
