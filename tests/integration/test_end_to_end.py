"""The whole chain once: Modbus simulators -> gateway -> a real CSMS and a real Mosquitto.

Also measures how long a register change takes to reach the CSMS and MQTT (printed with -s).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from ocpp.v16 import call

from adapters.demo_csms.csms import DemoCsms
from adapters.modbus.profile import load_profile
from adapters.modbus.simulator import ModbusSimulator
from gateway.app import Gateway
from gateway.config import parse_config
from gateway.domain.events import ChargingProfilesChanged
from tests.fixtures.modbus import start_simulators
from tests.fixtures.mosquitto import MosquittoBroker, WatchFactory
from tests.fixtures.net import free_port

SAMPLE_INTERVAL_S = 1
FAULT_DEADLINE_S = 5.0  # comm loss must show upstream and on MQTT within this


@dataclass
class Site:
    gateway: Gateway
    meter: ModbusSimulator
    left: ModbusSimulator
    right: ModbusSimulator
    ports: dict[str, int]


@contextlib.asynccontextmanager
async def running_site(csms_url: str, mosquitto: MosquittoBroker, topic_prefix: str) -> AsyncIterator[Site]:
    """Three simulators on free ports and a gateway polling them, reporting to ``csms_url``."""
    sims, ports = await start_simulators({"meter": "eastron-sdm630", "left": "abb-terra-ac", "right": "phoenix-ev-eth"})
    # Registers of devices that have been in service a while: a register may only rise as fast as
    # its device can deliver (issue 14), so each test moves them by what a few seconds allow.
    sims["meter"].set("energy_wh", 4_321_000)
    sims["right"].set("energy_wh", 2_000_000)
    device = {"host": "127.0.0.1", "poll_interval_s": 0.2, "timeout_s": 0.5}
    config = parse_config(
        {
            "site": {"id": "e2e", "state_dir": tempfile.mkdtemp(prefix="e2e-state-")},
            "status_page": {"port": free_port()},
            "upstream": {
                "url": csms_url,
                "charge_point_id": "GW-E2E",
                "meter_value_sample_interval_s": SAMPLE_INTERVAL_S,
                "reconnect_max_s": 1,
            },
            "mqtt": {"host": mosquitto.host, "port": mosquitto.port, "topic_prefix": topic_prefix},
            "chargers": [
                {"name": "left", "profile": "abb-terra-ac", "port": ports["left"], "connectors": [1], **device},
                {"name": "right", "profile": "phoenix-ev-eth", "port": ports["right"], "connectors": [2], **device},
            ],
            "meters": [{"name": "grid", "profile": "eastron-sdm630", "port": ports["meter"], "connector": 0, **device}],
            # connector 1 charges every car (free); connector 2 waits for the CSMS, so a car is Preparing
            "connectors": [{"id": 1, "id_tag": "E2E-FREE"}, {"id": 2, "policy": "remote"}],
        }
    )
    gateway = Gateway.build(config)
    task = asyncio.create_task(gateway.run())
    try:
        yield Site(gateway, sims["meter"], sims["left"], sims["right"], ports)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for sim in sims.values():
            await sim.stop()


@pytest.fixture
async def site(csms: DemoCsms, mosquitto: MosquittoBroker, topic_prefix: str) -> AsyncIterator[Site]:
    async with running_site(csms.url, mosquitto, topic_prefix) as running:
        yield running


def energy_of(payload: dict) -> list[str]:
    return [
        sample["value"]
        for value in payload["meterValue"]
        for sample in value["sampledValue"]
        if sample.get("measurand") == "Energy.Active.Import.Register"
    ]


async def test_whole_chain(site: Site, csms: DemoCsms, mqtt_watch: WatchFactory, topic_prefix: str) -> None:
    watcher = await mqtt_watch(f"{topic_prefix}/#")
    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 2 and p["status"] == "Available")
    await watcher.wait_for(f"{topic_prefix}/availability", lambda m: m.text == "online")

    # 1. A new energy register value (4321.5 kWh in the SDM630's float register) arrives in Wh.
    site.meter.set("energy_wh", 4_321_500)
    changed_at = time.monotonic()
    meter_state = await watcher.wait_for(
        f"{topic_prefix}/meter/grid/state", lambda m: m.json()["energy_wh"] == 4_321_500, timeout=5
    )
    to_mqtt_s = time.monotonic() - changed_at
    sent = await csms.wait_for(
        "MeterValues", lambda p: p["connectorId"] == 0 and energy_of(p) == ["4321500"], timeout=5
    )
    to_csms_s = time.monotonic() - changed_at
    assert meter_state.json()["measured_at"].endswith("Z")
    late = await mqtt_watch(f"{topic_prefix}/meter/+/state")  # a new subscriber gets the retained state
    retained = await late.wait_for(f"{topic_prefix}/meter/grid/state", lambda m: m.json()["energy_wh"] == 4_321_500)
    assert retained.retain
    samples = sent["meterValue"][0]["sampledValue"]
    assert {s["unit"] for s in samples if s["measurand"] == "Energy.Active.Import.Register"} == {"Wh"}
    print(f"\nregister change -> MQTT {to_mqtt_s * 1000:.0f} ms, -> CSMS MeterValues {to_csms_s * 1000:.0f} ms")

    # 2. A car plugs in: Preparing upstream, "occupied" on MQTT.
    mark = watcher.mark()
    site.right.plug_in()
    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 2 and p["status"] == "Preparing")
    state = await watcher.wait_for(
        f"{topic_prefix}/connector/2/state", lambda m: m.json()["status"] == "occupied", after=mark
    )
    assert state.json()["vehicle_state"] == "B"

    # 3. The charger stops answering: Faulted upstream and on MQTT within a bounded time; then back.
    mark = watcher.mark()
    await site.right.stop()
    lost_at = time.monotonic()
    faulted = await csms.wait_for(
        "StatusNotification", lambda p: p["connectorId"] == 2 and p["status"] == "Faulted", timeout=FAULT_DEADLINE_S
    )
    assert faulted["errorCode"] == "OtherError" and faulted["vendorErrorCode"] == "CommLost"
    gone = await watcher.wait_for(
        f"{topic_prefix}/connector/2/state",
        lambda m: m.json()["status"] == "faulted",
        after=mark,
        timeout=FAULT_DEADLINE_S,
    )
    assert gone.json()["faults"][0]["kind"] == "communication_lost"
    print(f"comm loss -> Faulted upstream and on MQTT in {(time.monotonic() - lost_at) * 1000:.0f} ms")
    # the other devices keep being polled and reported
    assert site.gateway.site.device_online("left") is True

    mark = watcher.mark()
    site.right.unplug()  # the car left while the charger was unreachable
    await site.right.start("127.0.0.1", site.ports["right"])
    await csms.wait_for(
        "StatusNotification",
        lambda p: p["connectorId"] == 2 and p["status"] == "Available" and p["errorCode"] == "NoError",
        timeout=15,
    )
    await watcher.wait_for(
        f"{topic_prefix}/connector/2/state", lambda m: m.json()["status"] == "available", after=mark, timeout=15
    )
    await watcher.wait_for(f"{topic_prefix}/site/state")  # summaries come within a second
    await watcher.wait_for(f"{topic_prefix}/outbox/state")
    undocumented = {m.topic for m in watcher.history} - documented(topic_prefix, {m.topic for m in watcher.history})
    assert not undocumented, f"published but not in docs/mqtt.md: {sorted(undocumented)}"


def documented(prefix: str, topics: set[str]) -> set[str]:
    """The ``topics`` that docs/mqtt.md describes (its backticked ``<prefix>/...`` patterns)."""
    text = (Path(__file__).parents[2] / "docs" / "mqtt.md").read_text(encoding="utf-8")
    patterns = []
    for pattern in set(re.findall(r"`(<prefix>/[^`\s]+)`", text)):
        regex = re.escape(pattern).replace(re.escape("<prefix>"), re.escape(prefix))
        regex = regex.replace(re.escape("<n>"), r"\d+").replace(re.escape("<name>"), r"[^/]+")
        patterns.append(re.compile(regex + "$"))
    return {topic for topic in topics if any(p.match(topic) for p in patterns)}


async def test_without_a_csms_devices_are_still_polled_and_published(
    mosquitto: MosquittoBroker, mqtt_watch: WatchFactory, topic_prefix: str
) -> None:
    nobody = f"ws://127.0.0.1:{free_port()}/ocpp"  # nothing listens here
    watcher = await mqtt_watch(f"{topic_prefix}/#")
    async with running_site(nobody, mosquitto, topic_prefix) as site:
        upstream = await watcher.wait_for(f"{topic_prefix}/upstream/state")
        assert upstream.json()["connected"] is False
        site.left.plug_in()  # connector 1 is free: the session starts (and waits to be told upstream)
        await watcher.wait_for(f"{topic_prefix}/connector/1/state", lambda m: m.json()["status"] == "suspended_ev")
        site.meter.set("energy_wh", 4_321_100)
        await watcher.wait_for(f"{topic_prefix}/meter/grid/state", lambda m: m.json()["energy_wh"] == 4_321_100)
        assert site.gateway.site.upstream.connected is False


async def test_a_remote_session_bills_from_the_charger_register(site: Site, csms: DemoCsms) -> None:
    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 2 and p["status"] == "Available")
    # remote policy: no energy without a session, so the gateway switches the charger off
    await site.right.wait_for(lambda: not site.right.charger_state().enabled)
    site.right.set("energy_wh", 2_000_000)
    accepted = await csms.call("GW-E2E", call.RemoteStartTransaction(id_tag="APP-42", connector_id=2))
    assert accepted.status == "Accepted"
    site.right.plug_in()
    start = await csms.wait_for("StartTransaction", lambda p: p["connectorId"] == 2)
    assert (start["idTag"], start["meterStart"]) == ("APP-42", 2_000_000)
    await site.right.wait_for(lambda: site.right.charger_state().enabled)  # enabled once the start is authorised
    site.right.start_charging(7_400)
    site.right.tick(360)  # six minutes of charging on the simulated register (within one plausible step)
    site.right.unplug()
    stop = await csms.wait_for("StopTransaction")
    assert stop["reason"] == "EVDisconnected"
    assert stop["meterStop"] == site.right.get("energy_wh") == 2_000_740
    await site.right.wait_for(lambda: not site.right.charger_state().enabled)  # and off again afterwards


def tx_default(limit_a: float, profile_id: int = 1) -> dict:
    return {
        "chargingProfileId": profile_id,
        "stackLevel": 0,
        "chargingProfilePurpose": "TxDefaultProfile",
        "chargingProfileKind": "Absolute",
        "chargingSchedule": {
            "chargingRateUnit": "A",
            "startSchedule": "2020-01-01T00:00:00Z",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit_a}],
        },
    }


async def test_smart_charging_limits_the_charger_during_a_session(site: Site, csms: DemoCsms) -> None:
    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 1 and p["status"] == "Available")
    site.left.plug_in()  # connector 1 is free: the session starts at once
    start = await csms.wait_for("StartTransaction", lambda p: p["connectorId"] == 1)
    assert start["idTag"] == "E2E-FREE"
    answer = await csms.call("GW-E2E", call.SetChargingProfile(connector_id=0, cs_charging_profiles=tx_default(10)))
    assert answer.status == "Accepted"
    await site.left.wait_for(lambda: site.left.offered_current_a() == 10)
    tx = {
        **tx_default(3, profile_id=2),
        "chargingProfilePurpose": "TxProfile",
        "transactionId": csms.last_transaction_id,
    }
    answer = await csms.call("GW-E2E", call.SetChargingProfile(connector_id=1, cs_charging_profiles=tx))
    assert answer.status == "Accepted"  # below 6 A: the charger pauses instead of taking an illegal current
    await csms.wait_for(
        "StatusNotification", lambda p: p["connectorId"] == 1 and p["status"] == "SuspendedEVSE", timeout=10
    )
    composite = await csms.call("GW-E2E", call.GetCompositeSchedule(connector_id=1, duration=3600))
    assert composite.status == "Accepted"
    # what the connector is allowed now: 3 A is below the 6 A a car can be offered, so it is paused
    assert composite.charging_schedule["charging_schedule_period"][0]["limit"] == 0
    cleared = await csms.call("GW-E2E", call.ClearChargingProfile())
    assert cleared.status == "Accepted"
    await site.left.wait_for(lambda: (site.left.offered_current_a() or 0) >= 6 and site.left.offered_current_a() != 10)
    bad = {**tx_default(10, profile_id=3), "chargingProfilePurpose": "TxProfile", "transactionId": 999}
    rejected = await csms.call("GW-E2E", call.SetChargingProfile(connector_id=1, cs_charging_profiles=bad))
    assert rejected.status == "Rejected"


async def test_rfid_card_session_on_a_bender(csms: DemoCsms, mosquitto: MosquittoBroker, topic_prefix: str) -> None:
    bender = ModbusSimulator(load_profile("bender-cc613"))
    port = free_port()
    await bender.start("127.0.0.1", port)
    config = parse_config(
        {
            "site": {"id": "rfid", "state_dir": tempfile.mkdtemp(prefix="rfid-state-")},
            "status_page": {"port": free_port()},
            "upstream": {"url": csms.url, "charge_point_id": "GW-RFID", "reconnect_max_s": 1},
            "mqtt": {"host": mosquitto.host, "port": mosquitto.port, "topic_prefix": topic_prefix},
            "chargers": [
                {
                    "name": "garage",
                    "profile": "bender-cc613",
                    "host": "127.0.0.1",
                    "port": port,
                    "connectors": [1],
                    "poll_interval_s": 0.2,
                }
            ],
            "connectors": [{"id": 1, "policy": "local_list"}],
        }
    )
    bender.set("energy_wh", 3_000_000)
    task = asyncio.create_task(Gateway.build(config).run())
    try:
        await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 1 and p["status"] == "Available")
        bender.set("id_tag", "CARD-0042")  # a card held to the reader
        await csms.wait_for("Authorize", lambda p: p["idTag"] == "CARD-0042")
        bender.set("id_tag", "")  # the card is taken away again
        bender.plug_in()
        start = await csms.wait_for("StartTransaction", lambda p: p["idTag"] == "CARD-0042")
        assert start["meterStart"] == 3_000_000
        bender.set("energy_wh", 3_000_400)
        bender.set("id_tag", "CARD-0042")  # the same card ends the session
        stop = await csms.wait_for("StopTransaction")
        assert (stop["reason"], stop["meterStop"]) == ("Local", 3_000_400)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await bender.stop()


async def test_remote_start_with_a_tx_profile_limits_that_session(site: Site, csms: DemoCsms) -> None:
    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 2 and p["status"] == "Available")
    profile = {**tx_default(8, profile_id=5), "chargingProfilePurpose": "TxProfile"}
    start = call.RemoteStartTransaction(id_tag="APP-5", connector_id=2, charging_profile=profile)
    assert (await csms.call("GW-E2E", start)).status == "Accepted"
    site.right.plug_in()
    await csms.wait_for("StartTransaction", lambda p: p["connectorId"] == 2)
    await site.right.wait_for(lambda: site.right.offered_current_a() == 8)
    events = site.gateway.site.subscribe()
    site.right.unplug()
    await csms.wait_for("StopTransaction")
    async with asyncio.timeout(5):  # the TxProfile ends with its transaction
        while not isinstance(await events.get(), ChargingProfilesChanged):
            pass
    assert len(site.gateway.site.charging_profiles) == 0
