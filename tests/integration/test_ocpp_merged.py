"""Merged mode through the whole gateway: a native charger (the ocpp library) on the local server,
its connectors renumbered into the site's one charge point, its session going upstream through the
outbox while the CSMS is away and arriving once it is back."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from ocpp.v16 import call

from adapters.demo_csms.csms import DemoCsms
from gateway.app import Gateway
from gateway.config import parse_config
from tests.fixtures.net import free_port
from tests.integration.test_ocpp_local_server import charger
from tests.integration.test_soc_end_to_end import running

PASSWORD = "native-charger-pw"


def at(minute: int) -> str:
    return datetime(2026, 11, 29, 12, minute, tzinfo=UTC).isoformat().replace("+00:00", "Z")


def config_for(csms_port: int, server_port: int, state: Path) -> object:
    return parse_config(
        {
            "site": {"id": "merged", "state_dir": str(state)},
            "upstream": {
                "url": f"ws://127.0.0.1:{csms_port}/ocpp",
                "charge_point_id": "GW-MERGED",
                "reconnect_max_s": 0.5,
                "meter_value_sample_interval_s": 0,
            },
            "mqtt": {"host": "127.0.0.1", "port": free_port()},  # nobody there: MQTT just retries
            "ocpp_server": {"port": server_port},
            "ocpp_chargers": [{"identity": "NATIVE-1", "password": PASSWORD, "connectors": [1, 2]}],
        }
    )


async def test_a_native_session_is_renumbered_and_replayed_after_an_outage(tmp_path: Path) -> None:
    csms_port, server_port = free_port(), free_port()
    csms = DemoCsms("127.0.0.1", csms_port)
    await csms.start()
    gateway = Gateway.build(config_for(csms_port, server_port, tmp_path))
    async with running(gateway):
        await csms.wait_for("BootNotification")
        async with charger(f"ws://127.0.0.1:{server_port}", "NATIVE-1", PASSWORD) as (point, _):
            boot = await point.call(call.BootNotification(charge_point_vendor="acme", charge_point_model="x"))
            assert boot.status == "Accepted"
            await point.call(call.StatusNotification(connector_id=2, error_code="NoError", status="Preparing"))
            upstream = await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 2)
            assert upstream["status"] == "Preparing"
            card = await point.call(call.Authorize(id_tag="NATIVE-CARD-01"))
            assert card.id_tag_info["status"] == "Accepted"  # the CSMS said so, through the gateway
            assert csms.messages("Authorize")[-1]["idTag"] == "NATIVE-CARD-01"

            await csms.stop()  # the CSMS goes away; the charger's session goes on
            start = await point.call(
                call.StartTransaction(connector_id=2, id_tag="NATIVE-CARD-01", meter_start=5_000, timestamp=at(1))
            )
            assert start.transaction_id >= 1 and start.id_tag_info["status"] == "Accepted"
            await point.call(
                call.MeterValues(
                    connector_id=2,
                    transaction_id=start.transaction_id,
                    meter_value=[
                        {
                            "timestamp": at(10),
                            "sampledValue": [
                                {"value": "5.9", "measurand": "Energy.Active.Import.Register", "unit": "kWh"},
                                {"value": "7400", "measurand": "Power.Active.Import", "unit": "W"},
                            ],
                        }
                    ],
                )
            )
            assert gateway.site.connectors[2].reading is not None
            assert gateway.site.connectors[2].reading.energy_wh == 5_900
            await point.call(
                call.StopTransaction(
                    transaction_id=start.transaction_id, meter_stop=6_200, timestamp=at(20), reason="EVDisconnected"
                )
            )

            csms = DemoCsms("127.0.0.1", csms_port)
            await csms.start()
            try:
                stop = await csms.wait_for("StopTransaction", timeout=15)
                began = csms.messages("StartTransaction")[-1]
                assert (began["connectorId"], began["meterStart"], began["timestamp"]) == (
                    2,
                    5_000,
                    at(1).replace("Z", ".000Z"),
                )
                assert stop["transactionId"] == csms.last_transaction_id  # the CSMS's id, not the charger's
                assert (stop["meterStop"], stop["reason"]) == (6_200, "EVDisconnected")
                assert stop["timestamp"] == at(20).replace("Z", ".000Z")
            finally:
                await csms.stop()
