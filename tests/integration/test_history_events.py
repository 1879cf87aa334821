"""The event log's newer lines with the real stack: commands from the CSMS (the demo CSMS, the
``ocpp`` library) and from MQTT (a real Mosquitto) with their source, the broker link going down
and up (a private Mosquitto stopped and started), and a session left open by a kill -9 that the
next start stops upstream (PowerLoss), whose history row gets the stop values the CSMS received.

Each test reads the history file with a store of its own and waits on conditions with deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ocpp.v16 import call

from adapters.demo_csms.csms import DemoCsms
from adapters.modbus.simulator import ModbusSimulator
from gateway.app import Gateway
from gateway.config import parse_config
from gateway.domain.history import EventRecord, HistoryQuery
from tests.fixtures.modbus import start_simulators
from tests.fixtures.mosquitto import BrokerFactory, MosquittoBroker
from tests.fixtures.net import free_port
from tests.integration.test_history import ROOT, eventually, read_history, session_where

CP = "GW-EVENTS"


def site_config(state_dir: Path, csms_url: str, charger_port: int, mqtt_port: int, *, prefix: str = "ev") -> dict:
    """One charger (connector 1, free policy), MQTT commands on, the demo CSMS upstream."""
    return {
        "site": {"id": "events", "state_dir": str(state_dir)},
        "status_page": {"enabled": False},
        "upstream": {"url": csms_url, "charge_point_id": CP, "reconnect_max_s": 1},
        "mqtt": {
            "host": "127.0.0.1",
            "port": mqtt_port,
            "topic_prefix": prefix,
            "reconnect_max_s": 0.5,
            "commands": {"availability": True, "session": True},
        },
        "chargers": [
            {
                "name": "left",
                "profile": "phoenix-ev-eth",
                "host": "127.0.0.1",
                "port": charger_port,
                "connectors": [1],
                "poll_interval_s": 0.2,
                "timeout_s": 0.5,
            }
        ],
        "connectors": [{"id": 1, "id_tag": "EVENTS-FREE-0042"}],
    }


@contextlib.asynccontextmanager
async def charger() -> AsyncIterator[ModbusSimulator]:
    sims, _ = await start_simulators({"left": "phoenix-ev-eth"})
    sims["left"].set("energy_wh", 2_000_000)
    try:
        yield sims["left"]
    finally:
        await sims["left"].stop()


@contextlib.asynccontextmanager
async def running(config: dict) -> AsyncIterator[Gateway]:
    gateway = Gateway.build(parse_config(config))
    task = asyncio.create_task(gateway.run())
    try:
        yield gateway
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def logged(state_dir: Path, *kinds: str) -> list[EventRecord]:
    """The event log's lines of ``kinds``, oldest first."""
    store = read_history(state_dir)
    try:
        return list(reversed(store.events(HistoryQuery(kinds=kinds))))
    finally:
        store.close()


async def publish(broker: MosquittoBroker, topic: str, payload: str) -> None:
    import aiomqtt

    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.publish(topic, payload.encode(), qos=1)


async def test_commands_from_the_csms_and_mqtt_are_logged_with_their_source(
    csms: DemoCsms, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    async with charger() as sim:
        config = site_config(tmp_path, csms.url, sim.port, mosquitto.port, prefix=f"ev{free_port()}")
        async with running(config) as gateway:
            await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 1 and p["status"] == "Available")
            await eventually(lambda: gateway.mqtt is not None and gateway.mqtt.connected.is_set())
            answer = await csms.call(CP, call.ChangeAvailability(connector_id=1, type="Inoperative"))
            assert answer.status == "Accepted"
            again = await csms.call(CP, call.ChangeAvailability(connector_id=1, type="Inoperative"))
            assert again.status == "Accepted"  # already so: a command done, not a change
            prefix = config["mqtt"]["topic_prefix"]
            await publish(mosquitto, f"{prefix}/connector/1/set/available", '{"available": true}')
            await eventually(lambda: gateway.site.connectors[1].available)
            sim.plug_in()
            start = await csms.wait_for("StartTransaction", lambda p: p["connectorId"] == 1)
            session = await eventually(lambda: gateway.site.connectors[1].session)
            await eventually(lambda: session.transaction_id)  # the gateway has the CSMS's answer
            stop_answer = await csms.call(CP, call.RemoteStopTransaction(transaction_id=csms.last_transaction_id))
            assert stop_answer.status == "Accepted"
            await csms.wait_for("StopTransaction")
            unknown = await csms.call(CP, call.RemoteStopTransaction(transaction_id=987654))
            assert unknown.status == "Rejected"
            interval = call.ChangeConfiguration(key="MeterValueSampleInterval", value="4321")
            assert (await csms.call(CP, interval)).status == "Accepted"
            assert (await csms.call(CP, call.UnlockConnector(connector_id=1))).status == "NotSupported"
            commands = await eventually(lambda: (lines := logged(tmp_path, "command")) and len(lines) >= 7 and lines)
            changes = logged(tmp_path, "available", "unavailable")
    shown = [(c.detail["command"], c.detail["source"], c.detail["result"], c.connector_id) for c in commands]
    assert shown == [
        ("availability", "csms", "accepted", 1),
        ("availability", "csms", "already", 1),
        ("availability", "mqtt", "accepted", 1),
        ("stop", "csms", "accepted", 1),
        ("stop", "csms", "rejected", None),
        ("configuration", "csms", "accepted", None),
        ("unlock", "csms", "not_supported", 1),
    ]
    assert commands[5].detail["key"] == "MeterValueSampleInterval" and "4321" not in str(commands[5].detail)
    assert commands[0].detail["available"] is False and commands[2].detail["available"] is True
    assert commands[4].detail["transaction_id"] == 987654
    assert [c.kind for c in changes] == ["unavailable", "available"]  # the repeated one changed nothing
    assert start["idTag"] not in str([c.detail for c in commands])


async def test_the_broker_link_going_down_and_up_is_one_line_each(
    csms: DemoCsms, mosquitto_with: BrokerFactory, tmp_path: Path
) -> None:
    broker = mosquitto_with()
    async with charger() as sim, running(site_config(tmp_path, csms.url, sim.port, broker.port)) as gateway:
        await eventually(lambda: logged(tmp_path, "broker_up"))
        broker.stop()
        stopped_at = datetime.now(UTC)
        (down,) = await eventually(lambda: logged(tmp_path, "broker_down"))
        assert down.detail["reason"] and not gateway.telemetry.mqtt.connected
        # reconnect attempts fail while it is away (every 0.5 s at most): let a few fail, no line each
        await eventually(lambda: datetime.now(UTC) - stopped_at > timedelta(seconds=2.5))
        broker.start()
        await eventually(lambda: len(logged(tmp_path, "broker_up")) == 2)
        lines = logged(tmp_path, "broker_up", "broker_down")
    assert [e.kind for e in lines][:3] == ["broker_up", "broker_down", "broker_up"]


def toml(config: dict) -> str:
    """The few shapes ``site_config`` uses, as TOML (no writer in the standard library)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + "}"
        return str(v)

    text = []
    for section, body in config.items():
        for item in body if isinstance(body, list) else [body]:
            text.append(f"[[{section}]]" if isinstance(body, list) else f"[{section}]")
            text.extend(f"{k} = {value(v)}" for k, v in item.items())
    return "\n".join(text) + "\n"


async def test_a_session_left_open_by_a_kill_9_gets_the_stop_values_sent_at_the_restart(
    csms: DemoCsms, tmp_path: Path
) -> None:
    async with charger() as sim:
        config = site_config(tmp_path / "state", csms.url, sim.port, free_port())
        (tmp_path / "config.toml").write_text(toml(config), encoding="utf-8")
        child = subprocess.Popen(  # noqa: ASYNC220 (started once; the test waits on the CSMS meanwhile)
            [sys.executable, "-m", "gateway.cli", "run", "--config", str(tmp_path / "config.toml")],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 1, timeout=20)
            sim.plug_in()
            start = await csms.wait_for("StartTransaction", lambda p: p["connectorId"] == 1)
            running_row = await eventually(session_where(tmp_path / "state", lambda s: s.started_at is not None))
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
        assert running_row.stopped_at is None
        async with running(config):
            stop = await csms.wait_for("StopTransaction", lambda p: p["reason"] == "PowerLoss", timeout=20)
            row = await eventually(
                session_where(tmp_path / "state", lambda s: s.local_ref == running_row.local_ref and s.delivery)
            )
    assert (row.meter_stop_wh, row.stopped_at, row.stop_reason) == (stop["meterStop"], stop["timestamp"], "power_loss")
    assert row.energy_wh == stop["meterStop"] - start["meterStart"]
    assert row.delivery.value == "delivered"
