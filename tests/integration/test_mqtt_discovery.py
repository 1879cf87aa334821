"""Home Assistant discovery against the private Mosquitto: what HA finds when it subscribes.

HA subscribes to ``homeassistant/#`` and builds devices from the retained configs; when it
restarts it announces ``online`` on ``homeassistant/status``. These tests take HA's place.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

import aiomqtt
from jinja2.sandbox import ImmutableSandboxedEnvironment

from adapters.mqtt.discovery import Discovery, topic_id
from adapters.mqtt.payloads import Topics
from adapters.storage.history_db import SqliteHistoryStore
from gateway.domain.model import ChargerSnapshot, Connector, Meter, Reading, VehicleState, utc_now
from gateway.domain.transactions import AuthPolicy
from gateway.services.history import History
from gateway.services.session_tally import SessionTally
from gateway.services.sessions import ConnectorPolicy
from gateway.services.site import Site
from tests.fixtures.mosquitto import MosquittoBroker, Received, WatchFactory
from tests.integration.test_mqtt_bridge import bridge_for, running, text_is


def make_site() -> Site:
    site = Site(connectors=[Connector(1, "wb1", socket=1), Connector(2, "wb1", socket=2)], meters=[Meter("grid", 0)])
    reading = Reading(utc_now(), energy_wh=1_000, power_w=3_680.0, current_a=(16.0,), voltage_v=(230.0,))
    site.apply(ChargerSnapshot("wb1", 1, reading, VehicleState.B))
    return site


def config_filter(discovery_prefix: str, topic_prefix: str) -> str:
    """Every config of the gateway on ``topic_prefix`` (and of no other test's gateway)."""
    return f"{discovery_prefix}/+/{topic_id(topic_prefix)}/+/config"


def is_retained(message: Received) -> bool:
    return message.retain


async def publish(broker: MosquittoBroker, topic: str, payload: bytes, *, retain: bool = False) -> None:
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.publish(topic, payload, qos=1, retain=retain)


async def test_configs_are_retained_after_connect(
    mosquitto: MosquittoBroker, mqtt_watch: WatchFactory, topic_prefix: str
) -> None:
    site = make_site()
    expected = dict(Discovery("homeassistant", Topics(topic_prefix), frozenset({"current_limit"})).configs(site))
    bridge = bridge_for(site, mosquitto.host, mosquitto.port, topic_prefix, commands=["current_limit"])
    async with running(bridge):
        # Subscribing after the connect: all a restarted HA would get is what the broker retained.
        watcher = await mqtt_watch(config_filter("homeassistant", topic_prefix), f"{topic_prefix}/availability")
        await watcher.wait_for(bridge.topics.availability, text_is("online"))
        # Retained messages of the first filter arrive before those of the second: all are here.
        received = {m.topic: m for m in watcher.history if m.topic != bridge.topics.availability}
        assert set(received) == set(expected)
        for topic, message in received.items():
            assert message.retain, topic
            assert message.json() == expected[topic], topic
    power = expected[f"homeassistant/sensor/{topic_id(topic_prefix)}/wb1_c1_power/config"]
    assert power["state_topic"] == bridge.topics.connector(1)
    assert power["unit_of_measurement"] == "W"


async def test_home_assistant_online_republishes_configs_and_availability(
    mosquitto: MosquittoBroker, mqtt_watch: WatchFactory, topic_prefix: str
) -> None:
    discovery_prefix = f"ha-{uuid.uuid4().hex[:8]}"  # HA's status topic of this test alone
    site = make_site()
    configs = Discovery(discovery_prefix, Topics(topic_prefix)).configs(site)
    bridge = bridge_for(site, mosquitto.host, mosquitto.port, topic_prefix, discovery_prefix=discovery_prefix)
    async with running(bridge):
        watcher = await mqtt_watch(config_filter(discovery_prefix, topic_prefix), f"{topic_prefix}/availability")
        await watcher.wait_for(bridge.topics.availability, text_is("online"))
        mark = watcher.mark()

        await publish(mosquitto, f"{discovery_prefix}/status", b"online")  # HA's birth message

        live = lambda m: not m.retain  # noqa: E731 - sent now, not what the broker kept
        await watcher.wait_for(bridge.topics.availability, live, after=mark)
        for topic, payload in configs:
            assert (await watcher.wait_for(topic, live, after=mark)).json() == payload


async def test_only_a_live_online_republishes(
    mosquitto: MosquittoBroker, mqtt_watch: WatchFactory, topic_prefix: str
) -> None:
    """A retained ``online`` (HA configured to retain its birth message) comes at every connect,
    right after everything was published: no second round. ``offline`` asks for nothing."""
    discovery_prefix = f"ha-{uuid.uuid4().hex[:8]}"
    status = f"{discovery_prefix}/status"
    site = make_site()
    await publish(mosquitto, status, b"online", retain=True)
    watcher = await mqtt_watch(config_filter(discovery_prefix, topic_prefix), f"{topic_prefix}/error")
    bridge = bridge_for(
        site, mosquitto.host, mosquitto.port, topic_prefix, discovery_prefix=discovery_prefix, commands=["soc_target"]
    )
    try:
        async with running(bridge):
            await publish(mosquitto, status, b"offline")
            # The bridge handles messages in order: its answer to this comes after anything the
            # status messages made it publish.
            await publish(mosquitto, bridge.topics.command(1, "soc_target"), b"not json")
            await watcher.wait_for(bridge.topics.error)
    finally:
        await publish(mosquitto, status, b"", retain=True)
    counts = Counter(m.topic for m in watcher.history if m.topic.endswith("/config"))
    discovery = Discovery(discovery_prefix, bridge.topics, frozenset({"soc_target"}))
    assert set(counts) == {topic for topic, _ in discovery.configs(site)} | set(discovery.cleared(site))
    assert set(counts.values()) == {1}, "published once, at connect"


async def test_a_command_switched_off_loses_its_entity(
    mosquitto: MosquittoBroker, mqtt_watch: WatchFactory, topic_prefix: str
) -> None:
    site = make_site()
    node = topic_id(topic_prefix)
    limit = f"homeassistant/number/{node}/wb1_c2_current_limit/config"
    with_limit = bridge_for(site, mosquitto.host, mosquitto.port, topic_prefix, commands=["current_limit"])
    async with running(with_limit):
        pass
    watcher = await mqtt_watch(config_filter("homeassistant", topic_prefix))
    assert json.loads((await watcher.wait_for(limit, is_retained)).payload)["command_topic"].endswith(
        "/set/current_limit"
    )
    mark = watcher.mark()

    without = bridge_for(site, mosquitto.host, mosquitto.port, topic_prefix)
    async with running(without):
        cleared = await watcher.wait_for(limit, after=mark)
        assert cleared.payload == b""

    # What HA (or anybody) finds on the broker now: every other config, none for the limit.
    later = await mqtt_watch(config_filter("homeassistant", topic_prefix), f"{topic_prefix}/availability")
    await later.wait_for(f"{topic_prefix}/availability", text_is("offline"))
    topics = {m.topic for m in later.history}
    assert limit not in topics
    assert f"homeassistant/sensor/{node}/wb1_c2_power/config" in topics


async def test_discovery_off(mosquitto: MosquittoBroker, mqtt_watch: WatchFactory, topic_prefix: str) -> None:
    bridge = bridge_for(make_site(), mosquitto.host, mosquitto.port, topic_prefix, discovery_prefix=None)
    async with running(bridge):
        watcher = await mqtt_watch(config_filter("homeassistant", topic_prefix), f"{topic_prefix}/availability")
        await watcher.wait_for(bridge.topics.availability, text_is("online"))
        assert [m.topic for m in watcher.history] == [bridge.topics.availability]


def plug(site: Site, connector: int, state: VehicleState, energy_wh: int, minutes_ago: float = 0) -> None:
    at = utc_now() - timedelta(minutes=minutes_ago)
    site.apply(ChargerSnapshot("wb1", connector, Reading(at, energy_wh=energy_wh, power_w=7_000.0), state))


def rendered(template: object, state: dict[str, object]) -> str:
    """A value or attributes template as HA renders it against the state topic's JSON."""
    return ImmutableSandboxedEnvironment().from_string(str(template)).render(value_json=state)


async def test_last_session_and_sessions_today_reach_home_assistant(
    mosquitto: MosquittoBroker, mqtt_watch: WatchFactory, topic_prefix: str, tmp_path: Path
) -> None:
    """A session from before a restart (in the history) and one after it: HA finds the two new
    entities' configs, and their state topics say 2 sessions today and each connector's last one."""
    policies = {cid: ConnectorPolicy(AuthPolicy.FREE, id_tag="CARD-00012345") for cid in (1, 2)}
    site = Site(
        connectors=[Connector(1, "wb1", socket=1), Connector(2, "wb1", socket=2)],
        meters=[Meter("grid", 0)],
        policies=policies,
    )
    history = History(site, SqliteHistoryStore(tmp_path))
    plug(site, 2, VehicleState.C, 5_000, minutes_ago=30)  # before the "restart": only the history has it
    plug(site, 2, VehicleState.A, 7_500, minutes_ago=1)
    history.take_events()
    await history.flush()

    bridge = bridge_for(site, mosquitto.host, mosquitto.port, topic_prefix, tally=SessionTally(site, history))
    node = topic_id(topic_prefix)
    last_config = f"homeassistant/sensor/{node}/wb1_c1_last_session_energy/config"
    today_config = f"homeassistant/sensor/{node}/gateway_sessions_today/config"
    async with running(bridge):
        watcher = await mqtt_watch(f"{topic_prefix}/#", config_filter("homeassistant", topic_prefix))
        seeded = await watcher.wait_for(bridge.topics.sessions, lambda m: m.json()["sessions_today"] == 1)
        assert seeded.retain
        assert (await watcher.wait_for(bridge.topics.last_session(2))).json()["energy_wh"] == 2_500

        plug(site, 1, VehicleState.C, 10_000, minutes_ago=10)  # a car charges after the restart, and leaves
        plug(site, 1, VehicleState.A, 10_800)
        last = await watcher.wait_for(bridge.topics.last_session(1), lambda m: m.json()["energy_wh"] is not None)
        today = await watcher.wait_for(bridge.topics.sessions, lambda m: m.json()["sessions_today"] == 2)

        last_entity = (await watcher.wait_for(last_config, is_retained)).json()
        today_entity = (await watcher.wait_for(today_config, is_retained)).json()
    history.store.close()

    assert last_entity["state_topic"] == bridge.topics.last_session(1)
    assert (last_entity["device_class"], last_entity["unit_of_measurement"]) == ("energy", "Wh")
    assert "state_class" not in last_entity  # one session's energy: not a total for HA to add up
    assert rendered(last_entity["value_template"], last.json()) == "800"
    attributes = json.loads(rendered(last_entity["json_attributes_template"], last.json()))
    assert set(attributes) == {"started_at", "stopped_at", "id_tag"}
    assert attributes["id_tag"] == "****2345" and "CARD-00012345" not in last.text  # only ever masked
    assert attributes["started_at"] < attributes["stopped_at"]
    assert today_entity["state_topic"] == bridge.topics.sessions
    assert today_entity["state_class"] == "total_increasing"
    assert rendered(today_entity["value_template"], today.json()) == "2"
    assert json.loads(rendered(today_entity["json_attributes_template"], today.json()))["day"] == today.json()["day"]
