"""The MQTT bridge against a real Mosquitto (and the embedded amqtt broker): no mocks of our code."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from adapters.mqtt import EmbeddedBroker, MqttBridge, broker_answers
from gateway.domain.model import (
    ChargerSnapshot,
    Connector,
    DeviceFailed,
    Fault,
    FaultKind,
    Meter,
    MeterSnapshot,
    Reading,
    VehicleState,
    utc_now,
)
from gateway.domain.transactions import AuthPolicy
from gateway.services.sessions import ConnectorPolicy
from gateway.services.site import Site
from tests.fixtures.mosquitto import MosquittoBroker, Received, TcpProxy, WatchFactory
from tests.fixtures.net import free_port

PASSWORD = "s3cret-pw-never-logged"


def make_site() -> Site:
    """Sessions wait for a remote start, so a plugged-in car shows as ``occupied``."""
    remote = ConnectorPolicy(AuthPolicy.REMOTE)
    return Site(
        connectors=[Connector(1, "wb1", socket=1), Connector(2, "wb1", socket=2)],
        meters=[Meter("grid", connector_id=0)],
        policies={1: remote, 2: remote},
    )


def charger(socket: int, state: VehicleState, energy_wh: int, power_w: float = 0.0) -> ChargerSnapshot:
    reading = Reading(
        measured_at=utc_now(),
        energy_wh=energy_wh,
        power_w=power_w,
        current_a=(power_w / 690.0,) * 3,
        voltage_v=(230.0, 230.0, 230.0),
    )
    return ChargerSnapshot(device="wb1", socket=socket, reading=reading, vehicle_state=state)


def grid(energy_wh: int) -> MeterSnapshot:
    return MeterSnapshot("grid", Reading(measured_at=utc_now(), energy_wh=energy_wh, power_w=1200.0))


def field_is(key: str, value: Any) -> Callable[[Received], bool]:
    return lambda message: message.json().get(key) == value


def text_is(text: str) -> Callable[[Received], bool]:
    return lambda message: message.text == text


@asynccontextmanager
async def running(bridge: MqttBridge, *, timeout: float = 5.0) -> AsyncIterator[asyncio.Task[None]]:
    """Run the bridge until the block ends; enter once it has published everything."""
    task = asyncio.create_task(bridge.run())
    try:
        async with asyncio.timeout(timeout):
            await bridge.connected.wait()
        yield task
    finally:
        task.cancel()
        await asyncio.wait([task], timeout=5)
        assert task.done(), "the bridge ignored its cancellation"


class LogSignal(logging.Handler):
    """An ``asyncio.Event`` set when ``logger`` logs a record at ``level`` containing ``text``.

    Lets a test wait for the moment the bridge *notices* something (an outage) without polling;
    our loggers emit on the event loop's thread, so setting the event directly is safe.
    """

    def __init__(self, logger: str, level: int, text: str = "") -> None:
        super().__init__(level)
        self.seen = asyncio.Event()
        self._logger = logging.getLogger(logger)
        self._text = text

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno == self.level and self._text in record.getMessage():
            self.seen.set()

    def __enter__(self) -> LogSignal:
        self._logger.addHandler(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._logger.removeHandler(self)

    async def wait(self, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            await self.seen.wait()


def bridge_for(site: Site, host: str, port: int, prefix: str, **kwargs: Any) -> MqttBridge:
    kwargs.setdefault("reconnect_max_s", 0.5)
    return MqttBridge(site, host=host, port=port, topic_prefix=prefix, client_id=f"gw-{prefix[-8:]}", **kwargs)


async def test_connect_publishes_availability_and_all_state_retained(
    mosquitto: MosquittoBroker, mqtt_watch: WatchFactory, topic_prefix: str
) -> None:
    site = make_site()
    site.apply(charger(1, VehicleState.B, energy_wh=1_000))
    site.apply(grid(50_000))
    bridge = bridge_for(site, mosquitto.host, mosquitto.port, topic_prefix)
    async with running(bridge):
        watcher = await mqtt_watch(f"{topic_prefix}/#")  # subscribes after the publish: sees retained only
        online = await watcher.wait_for(bridge.topics.availability, text_is("online"))
        assert online.retain

        state = await watcher.wait_for(bridge.topics.connector(1))
        assert state.retain
        payload = state.json()
        assert payload["connector_id"] == 1
        assert payload["device"] == "wb1"
        assert payload["status"] == "occupied"
        assert payload["vehicle_state"] == "B"
        assert payload["device_online"] is True
        assert payload["faults"] == []
        assert payload["energy_wh"] == 1_000
        assert payload["voltage_v"] == [230.0, 230.0, 230.0]
        assert payload["measured_at"].endswith("Z")
        assert payload["status_since"].endswith("Z")

        never_polled = (await watcher.wait_for(bridge.topics.connector(2))).json()
        assert never_polled["status"] == "unavailable"
        assert never_polled["energy_wh"] is None

        meter = (await watcher.wait_for(bridge.topics.meter("grid"))).json()
        assert (meter["meter"], meter["connector_id"], meter["energy_wh"]) == ("grid", 0, 50_000)

        upstream = (await watcher.wait_for(bridge.topics.upstream)).json()
        assert upstream == {"connected": False, "registration": "none", "changed_at": None, "reason": None}

        device = (await watcher.wait_for(bridge.topics.device("wb1"))).json()
        assert (device["device"], device["online"]) == ("wb1", True)


async def test_state_follows_changes_and_identical_polls_are_not_republished(
    mosquitto: MosquittoBroker, mqtt_watch: WatchFactory, topic_prefix: str
) -> None:
    site = make_site()
    bridge = bridge_for(site, mosquitto.host, mosquitto.port, topic_prefix)
    watcher = await mqtt_watch(f"{topic_prefix}/connector/1/state")
    topic = bridge.topics.connector(1)
    async with running(bridge):
        site.apply(charger(1, VehicleState.B, energy_wh=2_000))
        plugged = await watcher.wait_for(topic, field_is("vehicle_state", "B"))
        assert plugged.json()["status"] == "occupied"
        mark = watcher.mark()

        site.apply(charger(1, VehicleState.B, energy_wh=2_000))  # same values, new measured_at
        site.apply(charger(1, VehicleState.C, energy_wh=2_005, power_w=11_000.0))
        charging = await watcher.wait_for(topic, field_is("status", "charging"), after=mark)

    # Messages on one topic arrive in order, so a republished identical poll would come first.
    assert watcher.on(topic, after=mark) == [charging]
    payload = charging.json()
    assert (payload["vehicle_state"], payload["energy_wh"], payload["power_w"]) == ("C", 2_005, 11_000.0)
    assert payload["status_since"] != plugged.json()["status_since"]


async def test_bridge_skips_a_payload_equal_to_the_last_one_but_for_measured_at(
    mosquitto: MosquittoBroker, mqtt_watch: WatchFactory, topic_prefix: str
) -> None:
    """A one-poll blip (failed, then the same values) marks the meter dirty but must not republish it."""
    site = make_site()
    site.apply(grid(7_000))
    bridge = bridge_for(site, mosquitto.host, mosquitto.port, topic_prefix)
    watcher = await mqtt_watch(f"{topic_prefix}/#")
    async with running(bridge):
        meter_topic, device_topic = bridge.topics.meter("grid"), bridge.topics.device("grid")
        await watcher.wait_for(meter_topic)
        mark = watcher.mark()
        site.apply(DeviceFailed("grid", "timeout", utc_now()))
        site.apply(grid(7_000))  # back, same values, new measured_at: one burst for the bridge
        back = await watcher.wait_for(device_topic, after=mark)
        site.apply(grid(7_001))
        changed = await watcher.wait_for(meter_topic, field_is("energy_wh", 7_001), after=mark)
    assert back.json()["online"] is True
    assert watcher.on(meter_topic, after=mark) == [changed]


async def test_upstream_and_device_health_changes_are_published(
    mosquitto: MosquittoBroker, mqtt_watch: WatchFactory, topic_prefix: str
) -> None:
    site = make_site()
    site.apply(charger(1, VehicleState.A, energy_wh=10))
    bridge = bridge_for(site, mosquitto.host, mosquitto.port, topic_prefix)
    watcher = await mqtt_watch(f"{topic_prefix}/#")
    async with running(bridge):
        site.set_upstream(True, "Accepted")
        upstream = await watcher.wait_for(bridge.topics.upstream, field_is("registration", "Accepted"))
        assert upstream.json()["connected"] is True
        assert upstream.json()["changed_at"].endswith("Z")

        site.apply(DeviceFailed("wb1", "Modbus timeout after 3 tries", utc_now()))
        device = await watcher.wait_for(bridge.topics.device("wb1"), field_is("online", False))
        assert device.json()["reason"] == "Modbus timeout after 3 tries"
        connector = await watcher.wait_for(bridge.topics.connector(1), field_is("status", "faulted"))
        assert connector.json()["device_online"] is False
        assert [f["kind"] for f in connector.json()["faults"]] == ["communication_lost"]


async def test_clean_shutdown_publishes_offline_retained(
    mosquitto: MosquittoBroker, mqtt_watch: WatchFactory, topic_prefix: str
) -> None:
    bridge = bridge_for(make_site(), mosquitto.host, mosquitto.port, topic_prefix)
    async with running(bridge) as task:
        pass
    assert task.cancelled()
    assert not bridge.connected.is_set()
    late = await mqtt_watch(bridge.topics.availability)
    offline = await late.wait_for(bridge.topics.availability)
    assert (offline.text, offline.retain) == ("offline", True)


async def test_last_will_offline_when_the_connection_dies(
    mosquitto: MosquittoBroker, mqtt_watch: WatchFactory, topic_prefix: str
) -> None:
    """The broker, not the bridge, says ``offline`` when the gateway vanishes without a DISCONNECT."""
    site = make_site()
    async with TcpProxy(mosquitto.host, mosquitto.port) as proxy:
        bridge = bridge_for(site, proxy.host, proxy.port, topic_prefix)
        watcher = await mqtt_watch(bridge.topics.availability)
        async with running(bridge) as task:
            mark = watcher.mark()
            await watcher.wait_for(bridge.topics.availability, text_is("online"))
            await proxy.__aexit__(None, None, None)  # the network is gone: no reconnect possible
            will = await watcher.wait_for(bridge.topics.availability, text_is("offline"), after=mark)
            assert not task.done()  # still retrying
    assert not will.retain  # live delivery; the retained copy is checked by a fresh subscriber:
    late = await mqtt_watch(bridge.topics.availability)
    assert (await late.wait_for(bridge.topics.availability)).retain


async def test_broker_restart_republishes_current_state(
    mosquitto: MosquittoBroker,
    mqtt_watch: WatchFactory,
    topic_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="adapters.mqtt")
    site = make_site()
    site.apply(charger(1, VehicleState.B, energy_wh=3_000))
    bridge = bridge_for(site, mosquitto.host, mosquitto.port, topic_prefix, username="gw", password=PASSWORD)
    try:
        async with running(bridge) as task:
            caplog.clear()
            with LogSignal("adapters.mqtt.bridge", logging.WARNING, "connection lost") as lost:
                mosquitto.stop()  # persistence is off: every retained message is lost
                await lost.wait()
            assert not bridge.connected.is_set()
            # The site moves on while the broker is away.
            site.apply(charger(1, VehicleState.C, energy_wh=3_100, power_w=7_000.0))
            site.set_upstream(True, "Pending")
            mosquitto.start()
            async with asyncio.timeout(5):
                await bridge.connected.wait()

            fresh = await mqtt_watch(f"{topic_prefix}/#")
            assert (await fresh.wait_for(bridge.topics.availability)).text == "online"
            state = (await fresh.wait_for(bridge.topics.connector(1))).json()
            assert (state["status"], state["energy_wh"]) == ("charging", 3_100)  # current, not stale
            upstream = (await fresh.wait_for(bridge.topics.upstream)).json()
            assert (upstream["connected"], upstream["registration"]) == (True, "Pending")
            await fresh.wait_for(bridge.topics.meter("grid"))
            assert not task.done()
    finally:
        mosquitto.start()

    records = [r for r in caplog.records if r.name.startswith("adapters.mqtt")]
    warnings = [r for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "connection lost" in warnings[0].getMessage()
    assert any(r.levelno == logging.INFO and "is back" in r.getMessage() for r in records)
    assert all(r.exc_info is None for r in records)
    assert PASSWORD not in caplog.text
    assert PASSWORD not in repr(bridge)


async def test_bridge_waits_for_a_late_broker_then_publishes(
    mqtt_watch: WatchFactory, topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The gateway may boot before the broker (or the demo starts the embedded one): retry, then publish."""
    caplog.set_level(logging.INFO, logger="adapters.mqtt")
    port = free_port()
    assert not await broker_answers("127.0.0.1", port, timeout_s=1.0)
    site = make_site()
    site.apply(grid(42))
    bridge = bridge_for(site, "127.0.0.1", port, topic_prefix)
    with LogSignal("adapters.mqtt.bridge", logging.WARNING, "not reachable") as unreachable:
        task = asyncio.create_task(bridge.run())
        await unreachable.wait()
    try:
        async with EmbeddedBroker("127.0.0.1", port) as broker:
            async with asyncio.timeout(5):
                await bridge.connected.wait()
            watcher = await mqtt_watch(f"{topic_prefix}/#", host=broker.host, port=broker.port)
            meter = await watcher.wait_for(bridge.topics.meter("grid"))
            assert meter.json()["energy_wh"] == 42
            site.apply(charger(2, VehicleState.C, energy_wh=5, power_w=3_600.0))
            await watcher.wait_for(bridge.topics.connector(2), field_is("status", "charging"))
            await watcher.__aexit__(None, None, None)  # before the broker goes away
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert not await broker_answers("127.0.0.1", port, timeout_s=1.0)
    assert [r.levelno for r in caplog.records if r.name.startswith("adapters.mqtt.bridge")].count(logging.WARNING) == 1


async def test_fault_events_are_published_in_order_not_retained_and_survive_an_outage(
    mosquitto: MosquittoBroker, mqtt_watch: WatchFactory, topic_prefix: str
) -> None:
    site = make_site()
    site.apply(charger(1, VehicleState.C, energy_wh=10))
    bridge = bridge_for(site, mosquitto.host, mosquitto.port, topic_prefix)
    watcher = await mqtt_watch(f"{topic_prefix}/#")
    hot = Fault(FaultKind.OVER_TEMPERATURE, vendor_code="13", info="derating")
    topic = bridge.topics.connector_fault(1)
    async with running(bridge):
        site.apply(ChargerSnapshot("wb1", 1, Reading(utc_now(), energy_wh=10), VehicleState.C, faults=(hot,)))
        raised = await watcher.wait_for(topic, field_is("event", "raised"))
        assert raised.json() == {
            "connector_id": 1,
            "event": "raised",
            "kind": "over_temperature",
            "vendor_code": "13",
            "info": "derating",
            "at": raised.json()["at"],
        }
        state = await watcher.wait_for(bridge.topics.connector(1), field_is("status", "faulted"))
        assert state.json()["faults"][0]["kind"] == "over_temperature"

        # The broker goes away; the fault clears meanwhile; the event still arrives afterwards.
        mosquitto.stop()
        try:
            site.apply(charger(1, VehicleState.C, energy_wh=11))
        finally:
            mosquitto.start()
        again = await mqtt_watch(f"{topic_prefix}/#")
        await again.wait_for(topic, field_is("event", "cleared"), timeout=15)
        # Nothing is retained on the event topic: a new subscriber gets the state, not old events
        # (mosquitto sends a subscription's retained messages together).
        late = await mqtt_watch(f"{topic_prefix}/connector/1/#")
        await late.wait_for(bridge.topics.connector(1), field_is("status", "charging"))
        assert late.on(topic) == []
