"""Battery SoC through the whole gateway: a car integration on MQTT -> the CSMS's MeterValues and the
charger's current limit (a Modbus simulator), with the target surviving a restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from adapters.demo_csms.csms import DemoCsms
from adapters.modbus.simulator import ModbusSimulator
from gateway.app import Gateway
from gateway.config import GatewayConfig, parse_config
from gateway.domain.model import iso_utc, utc_now
from tests.fixtures.modbus import StartSimulator
from tests.fixtures.mosquitto import MosquittoBroker, WatchFactory
from tests.fixtures.net import free_port


def config_for(
    csms: DemoCsms, mosquitto: MosquittoBroker, prefix: str, charger_port: int, state: Path
) -> GatewayConfig:
    return parse_config(
        {
            "site": {"id": "soc", "state_dir": str(state)},
            "status_page": {"port": free_port()},
            "upstream": {
                "url": csms.url,
                "charge_point_id": "GW-SOC",
                "meter_value_sample_interval_s": 1,
                "meter_values_sampled_data": ["Energy.Active.Import.Register", "SoC"],
                "reconnect_max_s": 1,
            },
            "mqtt": {
                "host": mosquitto.host,
                "port": mosquitto.port,
                "topic_prefix": prefix,
                "commands": {"soc_input": True, "soc_target": True},
            },
            "chargers": [
                {
                    "name": "garage",
                    "profile": "abb-terra-ac",  # no SoC register: the car integration is the only source
                    "host": "127.0.0.1",
                    "port": charger_port,
                    "connectors": [1],
                    "poll_interval_s": 0.2,
                }
            ],
            "connectors": [{"id": 1, "id_tag": "HOME"}],
        }
    )


@pytest.fixture
async def charger(modbus_simulator: StartSimulator) -> ModbusSimulator:
    return await modbus_simulator("abb-terra-ac")


@contextlib.asynccontextmanager
async def running(gateway: Gateway) -> AsyncIterator[Gateway]:
    task = asyncio.create_task(gateway.run())
    try:
        yield gateway
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def publish(broker: MosquittoBroker, topic: str, payload: dict[str, Any]) -> None:
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.publish(topic, json.dumps(payload).encode(), qos=1)


def soc_samples(payload: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (value["timestamp"], sample)
        for value in payload["meterValue"]
        for sample in value["sampledValue"]
        if sample.get("measurand") == "SoC"
    ]


async def test_a_soc_from_mqtt_reaches_the_csms_and_its_target_pauses_the_charger(
    csms: DemoCsms,
    mosquitto: MosquittoBroker,
    mqtt_watch: WatchFactory,
    topic_prefix: str,
    charger: ModbusSimulator,
    tmp_path: Path,
) -> None:
    config = config_for(csms, mosquitto, topic_prefix, charger.port, tmp_path)
    watcher = await mqtt_watch(f"{topic_prefix}/connector/1/state")
    state_topic = f"{topic_prefix}/connector/1/state"
    async with running(Gateway.build(config)) as gateway:
        await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 1 and p["status"] == "Available")
        charger.plug_in()
        charger.start_charging(7_400)
        start = await csms.wait_for("StartTransaction", lambda p: p["connectorId"] == 1)
        await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 1 and p["status"] == "Charging")

        # measured by the car after the session began, sent later with its own time (a SoC from before
        # the start is not the session's: it never goes out under its transaction id)
        started = datetime.fromisoformat(start["timestamp"])
        measured_at = iso_utc(started + (utc_now() - started) / 2)
        await publish(
            mosquitto, f"{topic_prefix}/connector/1/set/soc", {"soc_percent": 55.5, "measured_at": measured_at}
        )
        sent = await csms.wait_for("MeterValues", lambda p: p["connectorId"] == 1 and bool(soc_samples(p)), timeout=5)
        [(timestamp, sample)] = soc_samples(sent)
        assert (timestamp, sample["value"], sample["unit"], sample["location"]) == (
            measured_at,
            "55.5",
            "Percent",
            "EV",
        )
        assert sent["transactionId"] == csms.last_transaction_id
        await watcher.wait_for(state_topic, lambda m: m.json()["soc_source"] == "mqtt")

        await publish(mosquitto, f"{topic_prefix}/connector/1/set/soc_target", {"soc_target_percent": 50})
        await charger.wait_for(lambda: charger.offered_current_a() == 0, timeout_s=5)
        await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 1 and p["status"] == "SuspendedEVSE")
        paused = await watcher.wait_for(state_topic, lambda m: m.json()["status"] == "suspended_evse")
        assert (paused.json()["soc_percent"], paused.json()["soc_target_percent"]) == (55.5, 50.0)
        assert gateway.site.connectors[1].session_active  # paused, not stopped

    restarted = Gateway.build(config)  # the target set over MQTT survives a restart
    assert restarted.site.connectors[1].soc_target_percent == 50.0
