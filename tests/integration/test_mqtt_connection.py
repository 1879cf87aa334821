"""The broker connection against real Mosquitto processes started here: credentials refused and
fixed, TLS with a client certificate (certificates made in the test), MQTT 3.1.1 and 5, a broker
killed and started again, and retained messages of another program on our topics."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from adapters.mqtt import MqttBridge
from gateway.config import MqttTlsConfig
from gateway.domain.events import ConnectorStatusChanged
from gateway.domain.model import ConnectorStatus, DeviceFailed, VehicleState, utc_now
from gateway.services.site import Site
from tests.fixtures.mosquitto import (
    ANONYMOUS,
    BrokerFactory,
    MosquittoBroker,
    Received,
    WatchFactory,
    password_settings,
    tls_settings,
)
from tests.fixtures.pki import Pki, make_ca, make_pki
from tests.integration.test_mqtt_bridge import LogSignal, bridge_for, charger, field_is, grid, make_site, running

PASSWORD = "right-pw-never-logged"
WRONG_PASSWORD = "wrong-pw-never-logged"
BRIDGE_LOG = "adapters.mqtt.bridge"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA that signed nothing the broker has: trusting only it must fail."""
    return make_ca(tmp_path_factory.mktemp("other-ca"), "other-ca")[0]


def client_tls(pki: Pki) -> aiomqtt.TLSParameters:
    return aiomqtt.TLSParameters(str(pki.ca_file), str(pki.client_cert), str(pki.client_key))


class LogCounter(LogSignal):
    """Counts records of ``logger`` at exactly ``level`` containing ``text``; ``wait_for(n)`` until n."""

    def __init__(self, logger: str, level: int, text: str = "") -> None:
        super().__init__(logger, level, text)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno == self.level and self._text in record.getMessage():
            self.count += 1
            self.seen.set()

    def __enter__(self) -> LogCounter:
        super().__enter__()
        return self

    async def wait_for(self, count: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while self.count < count:
                self.seen.clear()
                await self.seen.wait()


def json_field_is(key: str, value: Any) -> Callable[[Received], bool]:
    """Like ``field_is``, for a topic that may also carry something that is not JSON."""

    def matches(message: Received) -> bool:
        try:
            return bool(message.json().get(key) == value)
        except ValueError:
            return False

    return matches


def bridge_log(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == BRIDGE_LOG and r.levelno == level]


@pytest.fixture
def debug_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG, logger="adapters.mqtt")
    yield caplog


def started(bridge: MqttBridge) -> asyncio.Task[None]:
    return asyncio.create_task(bridge.run())


async def stopped(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.wait([task], timeout=5)
    assert task.done(), "the bridge ignored its cancellation"


@pytest.fixture
async def retrying() -> AsyncIterator[list[asyncio.Task[None]]]:
    """Bridge tasks a test starts without waiting for a connection; cancelled after the test."""
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        await stopped(task)


# -- credentials ----------------------------------------------------------------------------------
async def test_the_right_password_connects_and_publishes(
    mosquitto_with: BrokerFactory, mqtt_watch: WatchFactory, topic_prefix: str, tmp_path: Path
) -> None:
    broker = mosquitto_with(password_settings(tmp_path, {"gw": PASSWORD, "reader": "reader-pw"}))
    site = make_site()
    site.apply(grid(1_234))
    bridge = bridge_for(site, broker.host, broker.port, topic_prefix, username="gw", password=PASSWORD)
    async with running(bridge):
        watcher = await mqtt_watch(
            f"{topic_prefix}/#", host=broker.host, port=broker.port, username="reader", password="reader-pw"
        )
        assert (await watcher.wait_for(bridge.topics.availability)).text == "online"
        assert (await watcher.wait_for(bridge.topics.meter("grid"))).json()["energy_wh"] == 1_234


async def test_refused_credentials_are_one_error_then_quiet_retries_until_fixed(
    mosquitto_with: BrokerFactory,
    mqtt_watch: WatchFactory,
    topic_prefix: str,
    tmp_path: Path,
    debug_log: pytest.LogCaptureFixture,
    retrying: list[asyncio.Task[None]],
) -> None:
    broker = mosquitto_with(password_settings(tmp_path, {"gw": PASSWORD}))
    site = make_site()
    events = site.subscribe()  # stands for the rest of the gateway
    bridge = bridge_for(
        site, broker.host, broker.port, topic_prefix, username="gw", password=WRONG_PASSWORD, reconnect_max_s=0.2
    )
    with LogCounter(BRIDGE_LOG, logging.DEBUG, "still unavailable") as retries:
        retrying.append(started(bridge))
        await retries.wait_for(3)  # refused four times by now
    assert not retrying[0].done()
    assert not bridge.connected.is_set()

    # The rest of the gateway goes on while the broker says no.
    site.apply(charger(1, VehicleState.C, energy_wh=500, power_w=7_000.0))
    async with asyncio.timeout(1):
        while not isinstance(await events.get(), ConnectorStatusChanged):
            pass
    assert site.connectors[1].status is ConnectorStatus.CHARGING

    errors = bridge_log(debug_log, logging.ERROR)
    assert len(errors) == 1, errors
    assert "refused the credentials for user 'gw'" in errors[0]
    assert "check [mqtt] username/password" in errors[0]
    assert bridge_log(debug_log, logging.WARNING) == []

    # The installer fixes it (here: the broker learns the password the gateway uses).
    password_settings(tmp_path, {"gw": WRONG_PASSWORD})
    broker.reload()
    async with asyncio.timeout(5):
        await bridge.connected.wait()
    watcher = await mqtt_watch(
        f"{topic_prefix}/#", host=broker.host, port=broker.port, username="gw", password=WRONG_PASSWORD
    )
    state = (await watcher.wait_for(bridge.topics.connector(1))).json()
    assert (state["status"], state["energy_wh"]) == ("charging", 500)

    assert len(bridge_log(debug_log, logging.ERROR)) == 1
    assert any("is back" in line for line in bridge_log(debug_log, logging.INFO))
    assert PASSWORD not in debug_log.text and WRONG_PASSWORD not in debug_log.text


# -- TLS ------------------------------------------------------------------------------------------
async def test_tls_with_ca_verification_and_a_client_certificate(
    pki: Pki, mosquitto_with: BrokerFactory, mqtt_watch: WatchFactory, topic_prefix: str
) -> None:
    broker = mosquitto_with(tls_settings(pki, require_certificate=True) + ANONYMOUS)
    site = make_site()
    site.apply(charger(2, VehicleState.B, energy_wh=77))
    tls = MqttTlsConfig(ca_file=str(pki.ca_file), cert_file=str(pki.client_cert), key_file=str(pki.client_key))
    bridge = bridge_for(site, broker.host, broker.port, topic_prefix, tls=tls)
    async with running(bridge):
        watcher = await mqtt_watch(f"{topic_prefix}/#", host=broker.host, port=broker.port, tls_params=client_tls(pki))
        assert (await watcher.wait_for(bridge.topics.availability)).text == "online"
        state = await watcher.wait_for(bridge.topics.connector(2))
        assert (state.json()["energy_wh"], state.retain) == (77, True)
        site.apply(charger(2, VehicleState.C, energy_wh=78, power_w=3_600.0))
        await watcher.wait_for(bridge.topics.connector(2), field_is("status", "charging"))


async def test_a_broker_certificate_from_an_unknown_ca_is_one_clear_error(
    pki: Pki,
    other_ca: Path,
    mosquitto_with: BrokerFactory,
    topic_prefix: str,
    debug_log: pytest.LogCaptureFixture,
    retrying: list[asyncio.Task[None]],
) -> None:
    broker = mosquitto_with(tls_settings(pki, require_certificate=False) + ANONYMOUS)
    tls = MqttTlsConfig(ca_file=str(other_ca))
    bridge = bridge_for(make_site(), broker.host, broker.port, topic_prefix, tls=tls, reconnect_max_s=0.2)
    with LogCounter(BRIDGE_LOG, logging.DEBUG, "still unavailable") as retries:
        retrying.append(started(bridge))
        await retries.wait_for(2)
    assert not retrying[0].done()
    errors = bridge_log(debug_log, logging.ERROR)
    assert len(errors) == 1, errors
    assert "TLS certificate we do not trust" in errors[0]
    assert "check [mqtt.tls] ca_file" in errors[0]
    assert bridge_log(debug_log, logging.WARNING) == []


@pytest.mark.parametrize("insecure", [False, True])
async def test_the_certificate_must_name_the_host_unless_insecure(
    insecure: bool,
    pki: Pki,
    mosquitto_with: BrokerFactory,
    topic_prefix: str,
    debug_log: pytest.LogCaptureFixture,
    retrying: list[asyncio.Task[None]],
) -> None:
    """The server certificate names 127.0.0.1 and localhost; the broker listens on 127.0.0.2."""
    broker = mosquitto_with(tls_settings(pki, require_certificate=False) + ANONYMOUS, host="127.0.0.2")
    tls = MqttTlsConfig(ca_file=str(pki.ca_file), insecure=insecure)
    bridge = bridge_for(make_site(), broker.host, broker.port, topic_prefix, tls=tls, reconnect_max_s=0.2)
    if insecure:
        warnings = bridge_log(debug_log, logging.WARNING)
        assert len(warnings) == 1 and "does NOT check" in warnings[0]
        async with running(bridge):
            pass
        return
    with LogCounter(BRIDGE_LOG, logging.DEBUG, "still unavailable") as retries:
        retrying.append(started(bridge))
        await retries.wait_for(1)
    [error] = bridge_log(debug_log, logging.ERROR)
    assert "127.0.0.2" in error and "TLS certificate we do not trust" in error


# -- protocol versions ----------------------------------------------------------------------------
@pytest.mark.parametrize(("protocol", "level"), [("3.1.1", "p2"), ("5", "p5")])
async def test_mqtt_3_1_1_and_5_both_work(
    protocol: str, level: str, mosquitto: MosquittoBroker, mqtt_watch: WatchFactory, topic_prefix: str
) -> None:
    site = make_site()
    bridge = bridge_for(site, mosquitto.host, mosquitto.port, topic_prefix, protocol=protocol)
    watcher = await mqtt_watch(f"{topic_prefix}/#")
    async with running(bridge):
        site.apply(charger(1, VehicleState.C, energy_wh=9, power_w=1_000.0))
        await watcher.wait_for(bridge.topics.connector(1), field_is("status", "charging"))
    await watcher.wait_for(bridge.topics.availability, lambda m: m.text == "offline")
    # Mosquitto logs each client's protocol as its own number: p2 is MQTT 3.1.1, p5 is MQTT 5.
    client_id = f"gw-{topic_prefix[-8:]}"
    assert f"as {client_id} ({level}," in mosquitto.log_tail(200)


# -- a broker that dies ---------------------------------------------------------------------------
async def test_a_killed_broker_started_again_gets_everything_current(
    mosquitto_with: BrokerFactory, mqtt_watch: WatchFactory, topic_prefix: str, debug_log: pytest.LogCaptureFixture
) -> None:
    broker = mosquitto_with()  # no persistence: the new process knows nothing
    site = make_site()
    site.apply(charger(1, VehicleState.B, energy_wh=3_000))
    site.apply(grid(10_000))
    bridge = bridge_for(site, broker.host, broker.port, topic_prefix)
    async with running(bridge) as task:
        before = await mqtt_watch(f"{topic_prefix}/#", host=broker.host, port=broker.port)
        await before.wait_for(bridge.topics.connector(1), field_is("status", "occupied"))
        with LogSignal(BRIDGE_LOG, logging.WARNING, "connection lost") as lost:
            broker.kill()
            await lost.wait()

        # Everything moves on during the outage.
        site.apply(charger(1, VehicleState.C, energy_wh=3_100, power_w=7_000.0))
        site.apply(charger(2, VehicleState.B, energy_wh=50))
        site.apply(DeviceFailed("grid", "timeout", utc_now()))
        site.set_upstream(True, "Accepted")

        broker.start()  # same port
        async with asyncio.timeout(5):
            await bridge.connected.wait()
        after = await mqtt_watch(f"{topic_prefix}/#", host=broker.host, port=broker.port)
        # The first (retained) message on each topic is the current state, nothing from before.
        assert (await after.wait_for(bridge.topics.availability)).text == "online"
        one = (await after.wait_for(bridge.topics.connector(1))).json()
        assert (one["status"], one["energy_wh"], one["power_w"]) == ("charging", 3_100, 7_000.0)
        two = (await after.wait_for(bridge.topics.connector(2))).json()
        assert (two["status"], two["energy_wh"]) == ("occupied", 50)
        assert (await after.wait_for(bridge.topics.device("grid"))).json()["online"] is False
        assert (await after.wait_for(bridge.topics.device("wb1"))).json()["online"] is True
        meter = (await after.wait_for(bridge.topics.meter("grid"))).json()
        assert (meter["energy_wh"], meter["device_online"]) == (10_000, False)
        upstream = (await after.wait_for(bridge.topics.upstream)).json()
        assert (upstream["connected"], upstream["registration"]) == (True, "Accepted")
        await after.wait_for(bridge.topics.outbox)
        # Home Assistant's discovery configs are back too (this broker holds nobody else's). The
        # broker sends a subscription's retained messages before answering the next SUBSCRIBE, so
        # once the availability arrives all discovery configs have.
        ha = await mqtt_watch("homeassistant/#", bridge.topics.availability, host=broker.host, port=broker.port)
        await ha.wait_for(bridge.topics.availability)
        configs = [m for m in ha.history if m.topic.startswith("homeassistant/") and m.retain]
        assert configs and all(bridge.topics.availability in m.text for m in configs if m.payload)
        assert not task.done()
    assert len(bridge_log(debug_log, logging.WARNING)) == 1
    assert bridge_log(debug_log, logging.ERROR) == []


# -- other programs on our topics -----------------------------------------------------------------
async def test_retained_messages_of_another_program_on_our_topics_are_ignored(
    mosquitto: MosquittoBroker, mqtt_watch: WatchFactory, topic_prefix: str, debug_log: pytest.LogCaptureFixture
) -> None:
    """State topics are never read back (ours overwrite theirs); retained commands are not acted on."""
    soc, target = f"{topic_prefix}/connector/1/set/soc", f"{topic_prefix}/connector/2/set/soc_target"
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as other:
        await other.publish(f"{topic_prefix}/connector/1/state", b"\xffnot json", qos=1, retain=True)
        await other.publish(f"{topic_prefix}/availability", b"offline", qos=1, retain=True)
        await other.publish(soc, json.dumps({"soc_percent": 12}), qos=1, retain=True)
        await other.publish(target, json.dumps({"soc_target_percent": 50}), qos=1, retain=True)
    site: Site = make_site()
    site.apply(charger(1, VehicleState.B, energy_wh=1))
    bridge = bridge_for(site, mosquitto.host, mosquitto.port, topic_prefix, commands={"soc_input", "soc_target"})
    watcher = await mqtt_watch(f"{topic_prefix}/#")
    try:
        with LogCounter("adapters.mqtt.commands", logging.WARNING, "retained") as ignored:
            async with running(bridge) as task:
                await ignored.wait_for(2)  # both retained commands reached the bridge and were dropped
                live = json.dumps({"soc_percent": 41.5})
                async with aiomqtt.Client(mosquitto.host, mosquitto.port) as other:
                    await other.publish(soc, live, qos=1)  # a live command still works
                await watcher.wait_for(bridge.topics.availability, lambda m: m.text == "online")
                state = await watcher.wait_for(bridge.topics.connector(1), json_field_is("soc_percent", 41.5))
                assert state.json()["soc_source"] == "mqtt"
                assert not task.done()
        fresh = await mqtt_watch(f"{topic_prefix}/connector/+/state")
        two = (await fresh.wait_for(bridge.topics.connector(2))).json()
        assert two["soc_target_percent"] is None
    finally:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as other:  # leave the broker clean
            for topic in (soc, target):
                await other.publish(topic, b"", qos=1, retain=True)
    assert watcher.on(bridge.topics.error) == []
    assert bridge_log(debug_log, logging.ERROR) == [] and bridge_log(debug_log, logging.WARNING) == []
