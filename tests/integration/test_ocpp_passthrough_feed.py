"""A passthrough charger's own frames keep the site (and so MQTT) current, while nothing of it
goes upstream under the gateway's identity."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from ocpp.v16 import call

from adapters.demo_csms.csms import DemoCsms
from gateway.app import Gateway
from gateway.config import parse_config
from gateway.domain.errors import ConfigError
from gateway.domain.events import ConnectorReadingChanged
from gateway.domain.model import ConnectorStatus
from tests.fixtures.net import free_port
from tests.integration.test_ocpp_local_server import charger
from tests.integration.test_ocpp_merged import at
from tests.integration.test_soc_end_to_end import running


def config_for(csms: DemoCsms, server_port: int, state: Path, numbers: list[int]) -> object:
    return parse_config(
        {
            "site": {"id": "relay", "state_dir": str(state)},
            "status_page": {"port": free_port()},
            "upstream": {"url": csms.url, "charge_point_id": "GW-RELAY", "reconnect_max_s": 0.5},
            "mqtt": {"host": "127.0.0.1", "port": free_port()},
            "ocpp_server": {"port": server_port},
            "ocpp_chargers": [
                {"identity": "MERGED-1", "connectors": numbers[:1]},
                {"identity": "RELAYED-1", "mode": "passthrough", "connectors": numbers[1:]},
            ],
        }
    )


async def test_a_passthrough_chargers_status_and_values_reach_the_site_not_the_merged_charge_point(
    csms: DemoCsms, tmp_path: Path
) -> None:
    server_port = free_port()
    gateway = Gateway.build(config_for(csms, server_port, tmp_path, [1, 2]))
    assert list(gateway.site.upstream_connectors) == [1]
    events = gateway.site.subscribe()
    async with running(gateway):
        await csms.wait_for("BootNotification")  # the gateway is up, its OCPP server too
        async with charger(f"ws://127.0.0.1:{server_port}", "RELAYED-1", None) as (point, _):
            await point.call(call.BootNotification(charge_point_vendor="acme", charge_point_model="relay"))
            await point.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Charging"))
            await point.call(
                call.MeterValues(
                    connector_id=1,
                    meter_value=[{"timestamp": at(5), "sampledValue": [{"value": "2.5", "unit": "kWh"}]}],
                )
            )
            relayed = await csms.wait_for("StatusNotification", lambda p: p["status"] == "Charging")
            assert relayed["connectorId"] == 1  # the charger's own numbering, at its own CSMS session
            async with asyncio.timeout(5):  # the relayed values reach the site
                while not isinstance(event := await events.get(), ConnectorReadingChanged) or event.connector_id != 2:
                    pass
            assert event.reading.energy_wh == 2_500
            assert gateway.site.connectors[2].status is ConnectorStatus.CHARGING
    sent_by_gateway = [m for m in csms.received if m.charge_point_id == "GW-RELAY" and m.action == "StatusNotification"]
    assert {m.payload["connectorId"] for m in sent_by_gateway} <= {0, 1}  # never the relayed connector 2


def test_a_passthrough_chargers_connectors_come_after_the_sites_own(csms: DemoCsms, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"ocpp_chargers\[1\]\.connectors\[0\]: a passthrough charger's connectors"):
        config_for(csms, free_port(), tmp_path, [2, 1])
