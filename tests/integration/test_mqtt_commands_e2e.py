"""The site owner's MQTT commands through the whole gateway: a real Mosquitto, the charger a
Modbus simulator (its registers are what must change), the CSMS on the ocpp library."""

from __future__ import annotations

from pathlib import Path

from adapters.demo_csms.csms import DemoCsms
from adapters.modbus.simulator import ModbusSimulator
from gateway.app import Gateway
from gateway.config import GatewayConfig, parse_config
from tests.fixtures.mosquitto import MosquittoBroker, WatchFactory
from tests.fixtures.net import free_port
from tests.integration.test_soc_end_to_end import charger, publish, running

__all__ = ["charger"]  # the simulator fixture, shared


def config_for(csms: DemoCsms, mosquitto: MosquittoBroker, prefix: str, port: int, state: Path) -> GatewayConfig:
    return parse_config(
        {
            "site": {"id": "cmd", "state_dir": str(state)},
            "status_page": {"port": free_port()},
            "upstream": {"url": csms.url, "charge_point_id": "GW-CMD", "reconnect_max_s": 1},
            "mqtt": {
                "host": mosquitto.host,
                "port": mosquitto.port,
                "topic_prefix": prefix,
                "commands": {"current_limit": True, "availability": True, "session": True},
            },
            "chargers": [
                {
                    "name": "garage",
                    "profile": "abb-terra-ac",
                    "host": "127.0.0.1",
                    "port": port,
                    "connectors": [1],
                    "poll_interval_s": 0.2,
                }
            ],
            "connectors": [{"id": 1, "policy": "remote"}],
        }
    )


async def test_commands_reach_the_charger_registers_and_the_csms(
    csms: DemoCsms,
    mosquitto: MosquittoBroker,
    mqtt_watch: WatchFactory,
    topic_prefix: str,
    charger: ModbusSimulator,
    tmp_path: Path,
) -> None:
    config = config_for(csms, mosquitto, topic_prefix, charger.port, tmp_path)
    state = f"{topic_prefix}/connector/1/state"
    command = f"{topic_prefix}/connector/1/set"
    watcher = await mqtt_watch(state, f"{topic_prefix}/error")
    async with running(Gateway.build(config)):
        await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 1 and p["status"] == "Available")
        charger.plug_in()
        await publish(mosquitto, f"{command}/session", {"action": "start", "id_tag": "APP-00017"})
        start = await csms.wait_for("StartTransaction")
        assert start["idTag"] == "APP-00017"
        await charger.wait_for(lambda: (charger.offered_current_a() or 0) > 10, timeout_s=5)  # enabled
        charger.start_charging(7_400)
        shown = await watcher.wait_for(state, lambda m: m.json()["transaction_id"] == csms.last_transaction_id)
        assert shown.json()["id_tag"] == "****0017"  # masked

        await publish(mosquitto, f"{command}/current_limit", {"current_a": 10})
        await charger.wait_for(lambda: charger.offered_current_a() == 10, timeout_s=5)
        await watcher.wait_for(state, lambda m: m.json()["current_limit_a"] == 10)

        await publish(mosquitto, f"{command}/current_limit", {"current_a": "lots"})
        error = await watcher.wait_for(f"{topic_prefix}/error")
        assert error.json()["topic"] == f"{command}/current_limit" and "number" in error.json()["reason"]
        assert charger.offered_current_a() == 10  # nothing happened to the charger

        await publish(mosquitto, f"{command}/session", {"action": "stop"})
        stop = await csms.wait_for("StopTransaction")
        assert stop["reason"] == "Local"
        await charger.wait_for(lambda: charger.offered_current_a() == 0, timeout_s=5)  # disabled after it

        await publish(mosquitto, f"{command}/available", {"available": False})
        await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 1 and p["status"] == "Unavailable")
        await watcher.wait_for(state, lambda m: m.json()["status"] == "unavailable")
