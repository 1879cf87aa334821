"""MQTT command topics against the private Mosquitto: a car integration's SoC, SoC targets, bad input."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiomqtt
import pytest

from adapters.mqtt import MqttBridge
from gateway.domain.events import CurrentLimitRequested
from gateway.domain.model import ChargerSnapshot, Connector, Reading, VehicleState, iso_utc, utc_now
from gateway.domain.transactions import AuthPolicy
from gateway.services.charging_limits import LimitKeeper
from gateway.services.event_stream import EventStream
from gateway.services.sessions import ConnectorPolicy
from gateway.services.site import Site
from tests.fixtures.mosquitto import MosquittoBroker, MqttWatcher, Received, WatchFactory
from tests.integration.test_mqtt_bridge import LogSignal, bridge_for, field_is, running

ALL_COMMANDS = ("soc_input", "soc_target")


async def publish(broker: MosquittoBroker, topic: str, payload: Any, *, retain: bool = False) -> None:
    """One message from a car integration (JSON unless bytes), delivered to the broker before returning."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.publish(topic, data, qos=1, retain=retain)


@dataclass
class Rig:
    """A Site (connector 1 charges every car: a free session), its bridge, and a watcher of everything."""

    site: Site
    bridge: MqttBridge
    watcher: MqttWatcher
    broker: MosquittoBroker

    def poll(self, state: VehicleState, energy_wh: int) -> None:
        reading = Reading(utc_now(), energy_wh=energy_wh, power_w=7_000.0)
        self.site.apply(ChargerSnapshot("wb1", 1, reading, state))

    async def send(self, command: str, payload: Any, connector: int | str = 1) -> str:
        """Publish a command as a car integration would; returns its topic."""
        topic = f"{self.bridge.topics.prefix}/connector/{connector}/set/{command}"
        await publish(self.broker, topic, payload)
        return topic

    async def state(self, predicate: Callable[[Received], bool] = lambda _m: True) -> dict[str, Any]:
        """The first state of connector 1 for which ``predicate`` holds."""
        return (await self.watcher.wait_for(self.bridge.topics.connector(1), predicate)).json()

    async def error(self) -> Received:
        return await self.watcher.wait_for(self.bridge.topics.error)


@contextlib.asynccontextmanager
async def rig_for(
    broker: MosquittoBroker, mqtt_watch: WatchFactory, prefix: str, commands: Collection[str] = ALL_COMMANDS
) -> AsyncIterator[Rig]:
    site = Site(
        [Connector(1, "wb1"), Connector(2, "wb1", socket=2)], [], policies={1: ConnectorPolicy(AuthPolicy.FREE)}
    )
    bridge = bridge_for(site, broker.host, broker.port, prefix, commands=commands)
    watcher = await mqtt_watch(f"{prefix}/#")
    async with running(bridge):
        yield Rig(site, bridge, watcher, broker)


@pytest.fixture
async def rig(mosquitto: MosquittoBroker, mqtt_watch: WatchFactory, topic_prefix: str) -> AsyncIterator[Rig]:
    """Every command switched on."""
    async with rig_for(mosquitto, mqtt_watch, topic_prefix) as running_rig:
        yield running_rig


async def test_a_soc_on_the_input_topic_is_shown_with_its_source_and_time(rig: Rig) -> None:
    rig.poll(VehicleState.B, 10_000)
    measured_at = iso_utc(utc_now() - timedelta(minutes=3))
    await rig.send("soc", {"soc_percent": 42.5, "measured_at": measured_at})
    state = await rig.state(field_is("soc_source", "mqtt"))
    assert (state["soc_percent"], state["soc_estimated"], state["soc_measured_at"]) == (42.5, False, measured_at)


async def test_start_soc_and_capacity_give_an_estimate_as_the_register_grows(rig: Rig) -> None:
    rig.poll(VehicleState.C, 10_000)
    await rig.send("soc", {"soc_percent": 30, "capacity_wh": 6_000})
    await rig.state(field_is("soc_percent", 30.0))
    rig.poll(VehicleState.C, 10_900)  # 0.9 kWh of 6 kWh delivered since the report (a plausible step)
    state = await rig.state(field_is("soc_estimated", True))
    assert (state["soc_percent"], state["soc_source"]) == (45.0, "estimate")
    assert state["soc_measured_at"] == state["measured_at"]  # the register reading it comes from


async def next_limit(events: EventStream) -> CurrentLimitRequested:
    async with asyncio.timeout(5):
        while not isinstance(event := await events.get(), CurrentLimitRequested):
            pass
        return event


async def test_a_target_over_mqtt_pauses_charging_and_is_shown(rig: Rig) -> None:
    keeper = LimitKeeper(rig.site, rig.site.charging_profiles, max_a={1: 16.0})
    events = rig.site.subscribe()
    keeping = asyncio.create_task(keeper.run())
    try:
        rig.poll(VehicleState.A, 10_000)
        rig.poll(VehicleState.C, 10_000)  # a free session starts
        await rig.send("soc", {"soc_percent": 81})
        await rig.send("soc_target", {"soc_target_percent": 80})
        assert await next_limit(events) == CurrentLimitRequested(1, 0.0)
        await rig.state(field_is("soc_target_percent", 80.0))
        await rig.send("soc_target", {"soc_target_percent": None})  # charge to full
        assert await next_limit(events) == CurrentLimitRequested(1, 16.0)
        await rig.state(field_is("soc_target_percent", None))
    finally:
        keeping.cancel()
        await asyncio.gather(keeping, return_exceptions=True)


@pytest.mark.parametrize(
    ("connector", "command", "payload", "reason"),
    [
        ("1", "soc", b"42", "must be a JSON object"),
        ("1", "soc", b"{soc: 42}", "not JSON"),
        ("1", "soc", {"soc_percent": 101}, "soc_percent must be 0..100"),
        ("1", "soc", {"soc_percent": "42"}, "soc_percent must be a number"),
        ("1", "soc", {"soc_percent": 42, "capacity_wh": 0}, "capacity_wh must be 1000..500000"),
        ("1", "soc", {"soc_percent": 42, "measured_at": "yesterday"}, "measured_at must be an ISO 8601 time"),
        ("1", "soc", {"soc_percent": 42, "measured_at": "2020-01-01T00:00:00"}, "with a zone"),
        ("1", "soc", {"soc_percent": 42, "measured_at": iso_utc(utc_now() + timedelta(hours=1))}, "in the future"),
        ("1", "soc", {"soc_percent": 42, "soc": 1}, "unknown key(s) soc"),
        ("9", "soc", {"soc_percent": 42}, "no connector 9"),
        ("x", "soc", {"soc_percent": 42}, "no connector 'x'"),
        ("1", "soc_target", {"soc_target_percent": 0}, "must be 1..100 or null"),
        ("1", "soc_target", {}, "give soc_target_percent"),
    ],
)
async def test_an_invalid_command_is_answered_on_the_error_topic_and_changes_nothing(
    rig: Rig, connector: str, command: str, payload: Any, reason: str
) -> None:
    topic = await rig.send(command, payload, connector)
    error = await rig.error()
    assert not error.retain
    assert error.json()["topic"] == topic
    assert reason in error.json()["reason"]
    assert all(c.soc is None and c.soc_target_percent is None for c in rig.site.connectors.values())


async def test_a_command_that_is_off_is_ignored_with_one_log_line(
    mosquitto: MosquittoBroker, mqtt_watch: WatchFactory, topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="adapters.mqtt")
    async with rig_for(mosquitto, mqtt_watch, topic_prefix, commands=("soc_target",)) as rig:
        with LogSignal("adapters.mqtt.commands", logging.WARNING, "soc_input is off") as off:
            soc_topic = await rig.send("soc", {"soc_percent": 50})
            await off.wait()
        await rig.send("soc", {"soc_percent": 51})
        await rig.send("soc_target", {"soc_target_percent": 90})
        # one publisher, QoS 1: the broker hands the bridge these in order, so both SoCs were seen by now
        state = await rig.state(field_is("soc_target_percent", 90.0))
    assert state["soc_percent"] is None
    assert rig.site.connectors[1].soc is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "adapters.mqtt.commands"]
    assert [r.getMessage() for r in warnings] == [f"MQTT command {soc_topic} ignored: [mqtt.commands] soc_input is off"]
    assert rig.watcher.on(rig.bridge.topics.error) == []


async def test_a_retained_command_is_never_taken_as_new(
    mosquitto: MosquittoBroker, mqtt_watch: WatchFactory, topic_prefix: str
) -> None:
    stale = f"{topic_prefix}/connector/1/set/soc"
    await publish(mosquitto, stale, {"soc_percent": 12}, retain=True)  # last week's SoC, kept by the broker
    try:
        with LogSignal("adapters.mqtt.commands", logging.WARNING, "retained") as ignored:
            async with rig_for(mosquitto, mqtt_watch, topic_prefix) as rig:
                await ignored.wait()
                assert (await rig.state())["soc_percent"] is None
                await rig.send("soc", {"soc_percent": 64})  # a live one is acted on
                await rig.state(field_is("soc_percent", 64.0))
    finally:
        await publish(mosquitto, stale, b"", retain=True)  # clear the broker's copy


def load_is(key: str, value: Any) -> Callable[[Received], bool]:
    return lambda message: (message.json().get("load") or {}).get(key) == value


async def test_the_site_limit_over_mqtt_is_shared_and_shown_on_the_site_and_connector_topics(
    mosquitto: MosquittoBroker, mqtt_watch: WatchFactory, topic_prefix: str
) -> None:
    async with rig_for(mosquitto, mqtt_watch, topic_prefix, commands=("site_limit",)) as rig:
        keeper = LimitKeeper(rig.site, rig.site.charging_profiles, max_a={1: 16.0, 2: 16.0})
        events = rig.site.subscribe()
        keeping = asyncio.create_task(keeper.run())
        site_topic, limit_topic = rig.bridge.topics.site, f"{topic_prefix}/site/set/limit"
        try:
            rig.poll(VehicleState.A, 10_000)
            rig.poll(VehicleState.C, 10_000)  # a free session starts; nothing limits it, so it is left alone
            await rig.state(field_is("share_reason", "own_limit"))
            await publish(rig.broker, limit_topic, {"current_a": 10})
            assert await next_limit(events) == CurrentLimitRequested(1, 10.0)
            load = (await rig.watcher.wait_for(site_topic, load_is("limit_a", 10.0))).json()["load"]
            assert (load["limit_reason"], load["site_limit_a"], load["phase_limits_a"]) == (
                "site_limit",
                10.0,
                [10.0, 10.0, 10.0],
            )
            assert load["shares"] == [
                # 7 kW over three phases at 230 V
                {"connector_id": 1, "current_a": 10.0, "reason": "site_limit", "priority": 0, "drawn_a": 10.14}
            ]
            state = await rig.state(field_is("share_a", 10.0))
            assert state["share_reason"] == "site_limit"

            await publish(rig.broker, limit_topic, {"current_a": -5})  # refused: nothing changes
            error = (await rig.error()).json()
            assert error["topic"] == limit_topic and "a site limit is 0 to 10000 A" in error["reason"]
            assert rig.site.load.site_limit_a == 10.0

            seen = rig.watcher.mark()
            await publish(rig.broker, limit_topic, {"current_a": None})  # lifted: back to its own bound
            assert await next_limit(events) == CurrentLimitRequested(1, 16.0)
            lifted = await rig.watcher.wait_for(site_topic, load_is("limit_a", None), after=seen)
            load = lifted.json()["load"]
            assert load["limit_a"] is None and load["shares"][0]["reason"] == "own_limit"
            state = await rig.state(field_is("share_a", 16.0))
            assert state["share_reason"] == "own_limit"
        finally:
            keeping.cancel()
            await asyncio.gather(keeping, return_exceptions=True)
