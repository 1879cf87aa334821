"""The flow the README and docs/mqtt.md give demo users, against the broker the demo starts (the
embedded amqtt one when nothing answers): watch ``#`` (or the prefix) and publish a command.

amqtt 0.12.1 handed every connecting client the retained messages of *everyone's*
subscriptions; with a watcher on ``#`` a ``mosquitto_pub`` was flooded with the gateway's retained
state, hung up before amqtt read its PUBLISH, and the command was lost without a log line.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from adapters.mqtt import EmbeddedBroker, MqttBridge
from tests.fixtures.mosquitto import MqttWatcher, WatchFactory, publish_and_leave
from tests.fixtures.net import free_port
from tests.integration.test_mqtt_bridge import bridge_for, field_is, make_site, running

PREFIX = "ocpp-gateway/demo-site"  # the demo's own prefix: "ocpp-gateway/#" must match it


@pytest.fixture
async def embedded() -> AsyncIterator[EmbeddedBroker]:
    async with EmbeddedBroker("127.0.0.1", free_port()) as broker:
        yield broker


@pytest.mark.parametrize("watched", ["#", "ocpp-gateway/#"])
async def test_a_command_arrives_while_someone_watches_everything(
    embedded: EmbeddedBroker, mqtt_watch: WatchFactory, watched: str
) -> None:
    site = make_site()
    bridge: MqttBridge = bridge_for(site, embedded.host, embedded.port, PREFIX, commands=("soc_target",))
    async with running(bridge):
        watcher: MqttWatcher = await mqtt_watch(watched, host=embedded.host, port=embedded.port)
        state_topic = bridge.topics.connector(1)
        await watcher.wait_for(state_topic)  # the broker holds the retained state the watcher matches
        for percent in (55, 65):  # and again: not only the first command after the watcher came
            await publish_and_leave(
                embedded.host,
                embedded.port,
                bridge.topics.command(1, "soc_target"),
                json.dumps({"soc_target_percent": percent}).encode(),
            )
            await watcher.wait_for(state_topic, field_is("soc_target_percent", float(percent)))
        assert site.connectors[1].soc_target_percent == 65.0
        # the watcher saw the commands go by as well, as the docs promise
        assert len(watcher.on(bridge.topics.command(1, "soc_target"))) == 2


async def test_a_new_client_gets_retained_messages_only_for_its_own_subscriptions(
    embedded: EmbeddedBroker, mqtt_watch: WatchFactory
) -> None:
    """The cause, shown directly: amqtt sent a new client what matched other clients' filters."""
    site = make_site()
    bridge = bridge_for(site, embedded.host, embedded.port, PREFIX)
    async with running(bridge):
        everything = await mqtt_watch("#", host=embedded.host, port=embedded.port)
        await everything.wait_for(bridge.topics.availability)
        await everything.wait_for(bridge.topics.connector(1))
        narrow = await mqtt_watch(f"{PREFIX}/availability", host=embedded.host, port=embedded.port)
        await narrow.wait_for(bridge.topics.availability)  # amqtt sent any leak before this
    # the state and discovery configs were retained too, but matched only someone else's "#"
    assert {message.topic for message in narrow.history} == {bridge.topics.availability}
