"""A whole session per authorisation policy with OCPP 2.0.1: real Modbus simulators -> the whole
gateway (``Gateway.build``, ``ocpp_version = "2.0.1"``) -> DemoCsms201 (schemas on both ways).

test_ocpp201_upstream.py and test_ocpp201_authorization.py drive a Site with made-up readings;
here the readings come from the simulators' registers, as on a site: free charging, a card at a
charger with the CSMS there (Authorize), a listed card and an unknown one with the CSMS away, and
a RequestStartTransaction. Each session is checked as the CSMS received it: Started, Updated...,
Ended in that order, seqNo 0, 1, 2... without gaps, the triggerReasons and idToken of its policy,
Transaction.Begin/End the simulator's register in whole Wh.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from ocpp.v201 import call

from adapters.demo_csms.csms201 import DemoCsms201
from adapters.modbus.simulator import ModbusSimulator
from gateway.app import Gateway
from gateway.config import parse_config
from tests.fixtures.modbus import start_simulators
from tests.fixtures.mosquitto import MosquittoBroker
from tests.fixtures.net import free_port
from tests.fixtures.status_site import until

STATION = "GW-201-SESSIONS"
FREE_TAG = "FLEET-FREE-01"
LISTED, UNKNOWN, ONLINE_CARD = "CARD-LISTED-0001", "CARD-UNKNOWN-003", "CARD-ONLINE-0042"
EVSE = {"free": 1, "card": 2, "app": 3}
REGISTER_WH = {"free": 3_000_000, "card": 4_000_000, "app": 5_000_000}
ENERGY = "Energy.Active.Import.Register"


@dataclass
class Running:
    gateway: Gateway
    sims: dict[str, ModbusSimulator]

    @property
    def connected(self) -> bool:
        return self.gateway.site.upstream.connected

    def session_active(self, name: str) -> bool:
        return self.gateway.site.connectors[EVSE[name]].session_active

    def queued_events(self) -> list[dict[str, Any]]:
        """The TransactionEvent payloads waiting in the gateway's outbox."""
        store = self.gateway.upstream.outbox.store
        records = [store.record(info.seq) for info in store.index()]
        return [r.payload for r in records if r is not None and r.action == "TransactionEvent"]


@pytest.fixture
def csms(csms201: DemoCsms201) -> DemoCsms201:
    return csms201  # (tests/fixtures/ocpp.py; the suite's ``csms`` is 1.6's)


@pytest.fixture
async def site(
    csms: DemoCsms201, tmp_path: Path, mosquitto: MosquittoBroker, topic_prefix: str
) -> AsyncIterator[Running]:
    """Three chargers: EVSE 1 free charging, EVSE 2 cards (a Bender with a reader), EVSE 3 by the CSMS."""
    sims, ports = await start_simulators({"free": "phoenix-ev-eth", "card": "bender-cc613", "app": "webasto-next"})
    for name, register_wh in REGISTER_WH.items():
        sims[name].set("energy_wh", register_wh)
    device = {"host": "127.0.0.1", "poll_interval_s": 0.2, "timeout_s": 0.5}
    config = parse_config(
        {
            "site": {"id": "sessions201", "state_dir": str(tmp_path / "state")},
            "status_page": {"port": free_port()},
            "upstream": {
                "url": csms.url,
                "charge_point_id": STATION,
                "ocpp_version": "2.0.1",
                "meter_value_sample_interval_s": 1,
                "reconnect_max_s": 0.3,
            },
            "mqtt": {"host": mosquitto.host, "port": mosquitto.port, "topic_prefix": topic_prefix},
            "chargers": [
                {"name": name, "profile": profile, "port": ports[name], "connectors": [EVSE[name]], **device}
                for name, profile in (("free", "phoenix-ev-eth"), ("card", "bender-cc613"), ("app", "webasto-next"))
            ],
            "connectors": [
                {"id": 1, "policy": "free", "id_tag": FREE_TAG},
                {"id": 2, "policy": "local_list"},
                {"id": 3, "policy": "remote"},
            ],
        }
    )
    gateway = Gateway.build(config)
    task = asyncio.create_task(gateway.run())
    try:
        yield Running(gateway, sims)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for sim in sims.values():
            await sim.stop()


async def available(csms: DemoCsms201, name: str) -> None:
    await csms.wait_for(
        "StatusNotification", lambda p: p["evseId"] == EVSE[name] and p["connectorStatus"] == "Available"
    )


def transaction(csms: DemoCsms201, name: str) -> list[dict[str, Any]]:
    """The TransactionEvents of the (one) transaction of EVSE ``name``, as received."""
    events = csms.messages("TransactionEvent")
    started = [e for e in events if e["eventType"] == "Started" and e["evse"]["id"] == EVSE[name]]
    assert len(started) == 1, started
    tx = started[0]["transactionInfo"]["transactionId"]
    return [e for e in events if e["transactionInfo"]["transactionId"] == tx]


def energy(event: dict[str, Any]) -> list[tuple[str, Any]]:
    return [
        (s["context"], s["value"])
        for v in event.get("meterValue", [])
        for s in v["sampledValue"]
        if s.get("measurand", ENERGY) == ENERGY
    ]


def check_session(events: list[dict[str, Any]], begin_wh: int, end_wh: int, *, offline: bool) -> None:
    """Started, Updated..., Ended; seqNo 0.. without gaps; Begin/End in whole Wh; ``offline`` on all."""
    assert [e["seqNo"] for e in events] == list(range(len(events)))
    kinds = [e["eventType"] for e in events]
    assert kinds[0] == "Started" and kinds[-1] == "Ended" and set(kinds[1:-1]) == {"Updated"}, kinds
    assert energy(events[0]) == [("Transaction.Begin", begin_wh)] and isinstance(energy(events[0])[0][1], int)
    assert energy(events[-1]) == [("Transaction.End", end_wh)] and isinstance(energy(events[-1])[0][1], int)
    sent = [value for e in events for _, value in energy(e)]
    assert sent == sorted(sent) and all(isinstance(value, int) for value in sent)
    assert {e["triggerReason"] for e in events[1:-1]} <= {"ChargingStateChanged", "MeterValuePeriodic"}
    assert {e["offline"] for e in events} == {offline}
    stamps = [datetime.fromisoformat(e["timestamp"]) for e in events]
    assert stamps == sorted(stamps)


async def charge(csms: DemoCsms201, sim: ModbusSimulator, name: str, register_wh: int) -> None:
    """The car draws power and the register rises to ``register_wh``: a periodic Updated says so."""
    sim.start_charging(7_400)
    sim.set("energy_wh", register_wh)
    await csms.wait_for(
        "TransactionEvent",
        lambda p: p["triggerReason"] == "MeterValuePeriodic" and ("Sample.Periodic", register_wh) in energy(p),
    )


async def test_free_charging_a_car_plugs_in_charges_and_leaves(site: Running, csms: DemoCsms201) -> None:
    sim = site.sims["free"]
    await available(csms, "free")
    sim.plug_in()
    started = await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Started")
    assert started["triggerReason"] == "CablePluggedIn"
    assert started["idToken"] == {"idToken": FREE_TAG, "type": "Central"}
    assert started["evse"] == {"id": 1, "connectorId": 1}
    await charge(csms, sim, "free", REGISTER_WH["free"] + 400)
    sim.unplug()
    await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Ended")
    events = transaction(csms, "free")
    check_session(events, REGISTER_WH["free"], REGISTER_WH["free"] + 400, offline=False)
    ended = events[-1]
    assert (ended["triggerReason"], ended["transactionInfo"]["stoppedReason"]) == (
        "EVCommunicationLost",
        "EVDisconnected",
    )
    states = [e["transactionInfo"]["chargingState"] for e in events if e["triggerReason"] == "ChargingStateChanged"]
    assert "Charging" in states


async def test_a_card_at_the_charger_with_the_csms_there(site: Running, csms: DemoCsms201) -> None:
    sim = site.sims["card"]
    await available(csms, "card")
    sim.set("id_tag", ONLINE_CARD)  # held to the reader
    authorize = await csms.wait_for("Authorize")
    assert authorize["idToken"] == {"idToken": ONLINE_CARD, "type": "ISO14443"}
    sim.set("id_tag", "")
    sim.plug_in()
    started = await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Started")
    assert started["triggerReason"] == "Authorized"
    assert started["idToken"] == {"idToken": ONLINE_CARD, "type": "ISO14443"}
    await sim.wait_for(lambda: sim.may_charge())  # switched on once authorised
    await charge(csms, sim, "card", REGISTER_WH["card"] + 250)
    sim.set("id_tag", ONLINE_CARD)  # the same card ends it
    await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Ended")
    events = transaction(csms, "card")
    check_session(events, REGISTER_WH["card"], REGISTER_WH["card"] + 250, offline=False)
    ended = events[-1]
    assert (ended["triggerReason"], ended["transactionInfo"]["stoppedReason"]) == ("StopAuthorized", "Local")
    assert ended["idToken"] == {"idToken": ONLINE_CARD, "type": "ISO14443"}


async def decided_locally(site: Running, caplog: pytest.LogCaptureFixture, verdict: str, count: int) -> None:
    """Wait until the gateway has decided ``count`` cards ``verdict`` ("accepted"/"refused") by itself."""

    def decided() -> int:
        return sum(f" {verdict} locally " in r.getMessage() for r in caplog.records)

    await until(site.gateway.site, lambda: decided() >= count)


async def test_cards_with_the_csms_away_a_listed_one_charges_an_unknown_one_does_not(
    site: Running, csms: DemoCsms201, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="adapters.ocpp201_upstream.authorization")
    sim = site.sims["card"]
    await available(csms, "card")
    listed = call.SendLocalList(
        version_number=1,
        update_type="Full",
        local_authorization_list=[
            {"id_token": {"id_token": LISTED, "type": "ISO14443"}, "id_token_info": {"status": "Accepted"}}
        ],
    )
    assert (await csms.call(STATION, listed)).status == "Accepted"
    await csms.stop()
    await until(site.gateway.site, lambda: not site.connected)

    sim.plug_in()
    sim.set("id_tag", UNKNOWN)  # no record knows it: OfflineTxForUnknownIdEnabled is false
    await decided_locally(site, caplog, "refused", 1)
    sim.set("id_tag", "")
    assert not site.session_active("card") and not sim.may_charge()
    sim.set("id_tag", LISTED)
    await decided_locally(site, caplog, "accepted", 1)
    sim.set("id_tag", "")
    await until(site.gateway.site, lambda: site.session_active("card"))
    await sim.wait_for(lambda: sim.may_charge())
    sim.start_charging(7_400)
    sim.set("energy_wh", REGISTER_WH["card"] + 300)
    await until(
        site.gateway.site,
        lambda: any(
            ("Sample.Periodic", REGISTER_WH["card"] + 300) in energy_of_queued(p) for p in site.queued_events()
        ),
    )
    sim.unplug()
    await until(site.gateway.site, lambda: not site.session_active("card"))
    back_at = datetime.now(UTC)

    await csms.start()
    await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Ended", timeout=15)
    events = transaction(csms, "card")
    check_session(events, REGISTER_WH["card"], REGISTER_WH["card"] + 300, offline=True)
    assert events[0]["triggerReason"] == "Authorized"
    assert events[0]["idToken"] == {"idToken": LISTED, "type": "ISO14443"}
    assert events[-1]["transactionInfo"]["stoppedReason"] == "EVDisconnected"
    assert all(datetime.fromisoformat(e["timestamp"]) < back_at for e in events)  # their own times, not the send's
    tokens = {e.get("idToken", {}).get("idToken") for e in csms.messages("TransactionEvent")}
    assert UNKNOWN not in tokens  # refused: no transaction
    assert not csms.messages("Authorize")  # decided by the station alone


def energy_of_queued(payload: dict[str, Any]) -> list[tuple[str, Any]]:
    """``energy`` of a payload as queued (snake_case, before it is sent)."""
    return [
        (s["context"], s["value"])
        for v in payload.get("meter_value", [])
        for s in v["sampled_value"]
        if s.get("measurand", ENERGY) == ENERGY
    ]


async def test_request_start_transaction_with_a_real_charger(site: Running, csms: DemoCsms201) -> None:
    sim = site.sims["app"]
    await available(csms, "app")
    await sim.wait_for(lambda: not sim.may_charge())  # remote policy: no energy without a session
    token = {"id_token": "APP-USER-9", "type": "Central"}
    answer = await csms.call(STATION, call.RequestStartTransaction(id_token=token, remote_start_id=77, evse_id=3))
    assert answer.status == "Accepted"
    sim.plug_in()
    started = await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Started")
    assert started["triggerReason"] == "RemoteStart"
    assert started["transactionInfo"]["remoteStartId"] == 77
    assert started["idToken"] == {"idToken": "APP-USER-9", "type": "Central"}
    await sim.wait_for(lambda: sim.may_charge())
    await charge(csms, sim, "app", REGISTER_WH["app"] + 500)
    tx = started["transactionInfo"]["transactionId"]
    assert (await csms.call(STATION, call.RequestStopTransaction(transaction_id=tx))).status == "Accepted"
    await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Ended")
    events = transaction(csms, "app")
    check_session(events, REGISTER_WH["app"], REGISTER_WH["app"] + 500, offline=False)
    assert (events[-1]["triggerReason"], events[-1]["transactionInfo"]["stoppedReason"]) == ("RemoteStop", "Remote")
    await sim.wait_for(lambda: not sim.may_charge())  # switched off with the session
