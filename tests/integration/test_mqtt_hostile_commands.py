"""Hostile command messages against the private Mosquitto, every command switched on (as in the
shipped demo config): each gets its answer on ``<prefix>/error``, changes nothing, and the bridge
carries out the next valid command as usual.

Before the bounds, a connector level of 5000 digits ended the bridge (and the gateway) with
``ValueError: Exceeds the limit (4300 digits)`` in the rate limiter, and ``[`` x 100000 with a
RecursionError in the JSON parser; a capacity of 1e-300 Wh was taken and made the estimate jump
to 100 %.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from adapters.mqtt.commands import MAX_SHOWN_TOPIC_CHARS
from gateway.domain.model import Connector
from gateway.domain.transactions import AuthPolicy
from gateway.services.sessions import ConnectorPolicy
from gateway.services.site import Site
from tests.fixtures.mosquitto import MosquittoBroker, MqttWatcher, WatchFactory
from tests.integration.test_mqtt_bridge import LogSignal, bridge_for, field_is, running
from tests.integration.test_mqtt_commands import Rig, publish

EVERY_COMMAND = ("soc_input", "soc_target", "current_limit", "availability", "session")
MAX_A = 16.0  # connector 1's charger


@dataclass
class HostileRig:
    rig: Rig
    task: asyncio.Task[None]

    async def still_works(self) -> None:
        """A valid command after the hostile one is carried out, and the bridge still runs."""
        await self.rig.send("current_limit", {"current_a": 10})
        await self.rig.state(field_is("current_limit_a", 10.0))
        assert not self.task.done()


@pytest.fixture
async def hostile(mosquitto: MosquittoBroker, mqtt_watch: WatchFactory, topic_prefix: str) -> AsyncIterator[HostileRig]:
    site = Site(
        [Connector(1, "wb1"), Connector(2, "wb1", socket=2)], [], policies={1: ConnectorPolicy(AuthPolicy.FREE)}
    )
    bridge = bridge_for(
        site, mosquitto.host, mosquitto.port, topic_prefix, commands=EVERY_COMMAND, max_current_a={1: MAX_A}
    )
    watcher: MqttWatcher = await mqtt_watch(f"{topic_prefix}/#")
    async with running(bridge) as task:
        yield HostileRig(Rig(site, bridge, watcher, mosquitto), task)


NINES = "9" * 5000


@pytest.mark.parametrize(
    ("connector", "command", "payload", "reason"),
    [
        (NINES, "current_limit", b'{"current_a": 10}', "no connector 9999... (5000 digits)"),
        ("1", "soc", b"[" * 100_000, "payload is 100000 bytes; a command has at most 1024"),
        ("1", "soc", b"[" * 1000, "nests deeper than 4 levels"),
        ("1", "soc", b'{"soc_percent": 50, "capacity_wh": 1e-300}', "capacity_wh must be 1000..500000"),
        ("1", "soc", b'{"capacity_wh": 5e6}', "capacity_wh must be 1000..500000"),
        ("1", "current_limit", b'{"current_a": 1' + b"0" * 400 + b"}", "current_a must be a finite number"),
        ("1", "current_limit", b'{"current_a": 40}', "current_a must be 0..16 A (connector 1's charger)"),
        ("1", "current_limit", b'{"current_a": -1}', "current_a must be 0..16 A"),
    ],
)
async def test_a_hostile_command_is_answered_and_the_bridge_goes_on(
    hostile: HostileRig, connector: str, command: str, payload: bytes, reason: str
) -> None:
    rig = hostile.rig
    topic = f"{rig.bridge.topics.prefix}/connector/{connector}/set/{command}"
    await publish(rig.broker, topic, payload)
    answer = (await rig.error()).json()
    assert reason in answer["reason"]
    assert len(answer["reason"]) < 300
    assert answer["topic"].startswith(rig.bridge.topics.prefix)
    assert len(answer["topic"]) < MAX_SHOWN_TOPIC_CHARS + 50  # a 5000-digit topic is shortened, not echoed
    assert all(c.soc is None and c.current_ceiling_a is None and c.available for c in rig.site.connectors.values())
    await hostile.still_works()


async def test_a_bug_behind_one_command_is_one_error_line_and_an_answer(
    hostile: HostileRig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Not a known hole: whatever a command handler raises must not end the bridge either."""
    rig = hostile.rig

    def broken(connector_id: int, percent: float | None, **_: object) -> None:  # (source=...)
        raise ZeroDivisionError("a bug in the Site")

    monkeypatch.setattr(rig.site.commands, "set_soc_target", broken)
    caplog.set_level(logging.DEBUG, logger="adapters.mqtt")
    with LogSignal("adapters.mqtt.bridge", logging.ERROR, "failed") as failed:
        topic = await rig.send("soc_target", {"soc_target_percent": 80})
        await failed.wait()
    answer = (await rig.error()).json()
    assert answer["topic"] == topic
    assert "internal error" in answer["reason"]
    await hostile.still_works()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        f"MQTT command {topic} failed (a bug, please report it): ZeroDivisionError: a bug in the Site"
    ]
    assert errors[0].exc_info is None  # the traceback only at DEBUG
