"""Merged mode through the whole gateway: a native charger (the ocpp library) on the local server,
its connectors renumbered into the site's one charge point, its session going upstream through the
outbox while the CSMS is away and arriving once it is back."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from adapters.demo_csms.csms import DemoCsms
from gateway.app import Gateway
from gateway.config import parse_config
from gateway.domain.events import DeviceHealthChanged, TransactionNumbered
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
            "status_page": {"port": free_port()},
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
            await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 2 and p["status"] == "Preparing")
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


class NativeCharger(ChargePoint):
    """A native charger that carries out what its CSMS (the gateway) asks, and remembers it."""

    def __init__(self, identity: str, connection: ClientConnection) -> None:
        super().__init__(identity, connection, response_timeout=5)
        self.asked: list[tuple[str, dict[str, Any]]] = []
        self.stop_asked = asyncio.Event()
        self.reset_asked = asyncio.Event()
        self.remote_start_answer = "Accepted"
        self.unlock_answer = "Unlocked"
        self.clear_answer = "Accepted"

    def last(self, action: str) -> dict[str, Any] | None:
        """The payload of the last ``action`` the charger was asked for (None: never)."""
        return next((payload for asked, payload in reversed(self.asked) if asked == action), None)

    @on(Action.remote_start_transaction)
    def on_remote_start(self, **payload: Any) -> call_result.RemoteStartTransaction:
        self.asked.append(("RemoteStartTransaction", payload))
        return call_result.RemoteStartTransaction(status=self.remote_start_answer)

    @on(Action.remote_stop_transaction)
    def on_remote_stop(self, **payload: Any) -> call_result.RemoteStopTransaction:
        self.asked.append(("RemoteStopTransaction", payload))
        self.stop_asked.set()
        return call_result.RemoteStopTransaction(status="Accepted")

    @on(Action.set_charging_profile)
    def on_set_profile(self, **payload: Any) -> call_result.SetChargingProfile:
        self.asked.append(("SetChargingProfile", payload))
        return call_result.SetChargingProfile(status="Accepted")

    @on(Action.clear_charging_profile)
    def on_clear_profile(self, **payload: Any) -> call_result.ClearChargingProfile:
        self.asked.append(("ClearChargingProfile", payload))
        return call_result.ClearChargingProfile(status=self.clear_answer)

    @on(Action.get_composite_schedule)
    def on_composite(self, **payload: Any) -> call_result.GetCompositeSchedule:
        self.asked.append(("GetCompositeSchedule", payload))
        schedule = {"charging_rate_unit": "A", "charging_schedule_period": [{"start_period": 0, "limit": 10.0}]}
        return call_result.GetCompositeSchedule(
            status="Accepted", connector_id=payload["connector_id"], schedule_start=at(0), charging_schedule=schedule
        )

    @on(Action.change_availability)
    def on_change_availability(self, **payload: Any) -> call_result.ChangeAvailability:
        self.asked.append(("ChangeAvailability", payload))
        return call_result.ChangeAvailability(status="Accepted")

    @on(Action.reset)
    def on_reset(self, **payload: Any) -> call_result.Reset:
        self.asked.append(("Reset", payload))
        self.reset_asked.set()
        return call_result.Reset(status="Accepted")

    @on(Action.unlock_connector)
    def on_unlock(self, **payload: Any) -> call_result.UnlockConnector:
        self.asked.append(("UnlockConnector", payload))
        return call_result.UnlockConnector(status=self.unlock_answer)


@asynccontextmanager
async def merged_site(tmp_path: Path, blocked: tuple[str, ...] = ()) -> AsyncIterator[tuple[Gateway, DemoCsms, int]]:
    """A running gateway with one merged native charger configured, and its CSMS; yields the
    gateway, the CSMS and the local OCPP server's port."""
    csms_port, server_port = free_port(), free_port()
    csms = DemoCsms("127.0.0.1", csms_port)
    csms.blocked_id_tags.update(blocked)
    await csms.start()
    gateway = Gateway.build(config_for(csms_port, server_port, tmp_path))
    try:
        async with running(gateway):
            await csms.wait_for("BootNotification")
            yield gateway, csms, server_port
    finally:
        await csms.stop()


@asynccontextmanager
async def native_charger(server_port: int) -> AsyncIterator[NativeCharger]:
    headers = {"Authorization": "Basic " + base64.b64encode(f"NATIVE-1:{PASSWORD}".encode()).decode()}
    url = f"ws://127.0.0.1:{server_port}/NATIVE-1"
    async with connect(url, additional_headers=headers, subprotocols=[Subprotocol("ocpp1.6")]) as ws:
        native = NativeCharger("NATIVE-1", ws)
        serving = asyncio.create_task(native.start())
        try:
            yield native
        finally:
            serving.cancel()


async def test_csms_commands_for_native_connectors_are_relayed_in_the_chargers_terms(tmp_path: Path) -> None:
    async with merged_site(tmp_path) as (gateway, csms, server_port):
        health = gateway.site.subscribe()
        async with native_charger(server_port) as native:
            remote = call.RemoteStartTransaction(id_tag="APP-USER-0042", connector_id=2)
            assert (await csms.call("GW-MERGED", remote)).status == "Accepted"
            assert native.asked[-1] == (
                "RemoteStartTransaction",
                {"id_tag": "APP-USER-0042", "connector_id": 2},
            )
            events = gateway.site.subscribe()
            start = await native.call(
                call.StartTransaction(connector_id=2, id_tag="APP-USER-0042", meter_start=10, timestamp=at(1))
            )
            async with asyncio.timeout(5):  # until the gateway has the CSMS's id for the session
                while not isinstance(numbered := await events.get(), TransactionNumbered):
                    pass
            csms_id = csms.last_transaction_id
            assert numbered.transaction_id == csms_id
            profile = {
                "charging_profile_id": 7,
                "transaction_id": csms_id,
                "stack_level": 1,
                "charging_profile_purpose": "TxProfile",
                "charging_profile_kind": "Relative",
                "charging_schedule": {
                    "charging_rate_unit": "A",
                    "charging_schedule_period": [{"start_period": 0, "limit": 10.0}],
                },
            }
            limited = call.SetChargingProfile(connector_id=2, cs_charging_profiles=profile)
            assert (await csms.call("GW-MERGED", limited)).status == "Accepted"
            relayed_profile = next(
                payload
                for action, payload in native.asked
                if action == "SetChargingProfile" and payload["cs_charging_profiles"]["charging_profile_id"] == 7
            )
            assert relayed_profile["connector_id"] == 2
            assert relayed_profile["cs_charging_profiles"]["transaction_id"] == start.transaction_id
            composite = await csms.call("GW-MERGED", call.GetCompositeSchedule(connector_id=2, duration=600))
            assert composite.status == "Accepted" and composite.connector_id == 2
            assert composite.charging_schedule["charging_schedule_period"][0]["limit"] == 10
            cleared = await csms.call("GW-MERGED", call.ClearChargingProfile(id=7, connector_id=2))
            # (the gateway's own share profile may come in between: see test_native_load_sharing)
            assert cleared.status == "Accepted" and native.last("ClearChargingProfile") == {"id": 7, "connector_id": 2}
            stop = call.RemoteStopTransaction(transaction_id=csms_id)
            assert (await csms.call("GW-MERGED", stop)).status == "Accepted"
            assert native.last("RemoteStopTransaction") == {"transaction_id": start.transaction_id}
            unlock = await csms.call("GW-MERGED", call.UnlockConnector(connector_id=1))
            assert unlock.status == "Unlocked" and native.asked[-1] == ("UnlockConnector", {"connector_id": 1})
        # the charger is gone: a command for it is answered, not hung
        async with asyncio.timeout(10):
            while not isinstance(gone := await health.get(), DeviceHealthChanged) or gone.online:
                pass
        again = call.RemoteStartTransaction(id_tag="APP-USER-0042", connector_id=1)
        assert (await csms.call("GW-MERGED", again)).status == "Rejected"


async def test_a_start_the_csms_rejects_is_stopped_at_the_native_charger(tmp_path: Path) -> None:
    site = merged_site(tmp_path, blocked=("STOLEN-CARD-01",))
    async with site as (_, csms, server_port), native_charger(server_port) as native:
        start = await native.call(
            call.StartTransaction(connector_id=1, id_tag="STOLEN-CARD-01", meter_start=0, timestamp=at(1))
        )
        await asyncio.wait_for(native.stop_asked.wait(), 10)  # StopTransactionOnInvalidId
        assert native.asked[-1] == ("RemoteStopTransaction", {"transaction_id": start.transaction_id})
        whole_site = call.ChangeAvailability(connector_id=0, type="Inoperative")
        # its session has not ended yet (the charger was asked to stop it): Scheduled
        assert (await csms.call("GW-MERGED", whole_site)).status == "Scheduled"
        assert native.asked[-1] == ("ChangeAvailability", {"connector_id": 0, "type": "Inoperative"})
        assert (await csms.call("GW-MERGED", call.Reset(type="Soft"))).status == "Accepted"
        await asyncio.wait_for(native.reset_asked.wait(), 5)  # the site's native chargers too
        assert native.asked[-1] == ("Reset", {"type": "Soft"})
