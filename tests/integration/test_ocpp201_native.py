"""Native OCPP 1.6 chargers behind the gateway's 2.0.1 station, through the whole gateway.

Merged: the charger's connectors are EVSEs of the station (charger connector 1 is EVSE 2 here, to
see the renumbering), its session TransactionEvents with gapless seqNo, its cards asked with the
2.0.1 Authorize, the CSMS's commands for its EVSEs relayed as 1.6 actions and answered in 2.0.1
terms, its loss a NotifyEvent. Passthrough: the charger's own 1.6 frames reach the CSMS unchanged
under its own identity, while the station speaks 2.0.1 on the same url (tests/fixtures/mixed_csms.py).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from ocpp.v16 import call as call16
from ocpp.v201 import call

from adapters.demo_csms.csms201 import DemoCsms201
from adapters.ocpp201_upstream import statuses
from adapters.ocpp201_upstream.native_relay import charging_profile_16
from gateway.app import Gateway
from gateway.config import parse_config
from gateway.domain.events import DeviceHealthChanged
from tests.fixtures.mixed_csms import MixedCsms
from tests.fixtures.native_charger import NativeCharger as QueueingCharger
from tests.fixtures.net import free_port
from tests.integration.test_ocpp_local_server import PASSWORD as RAW_PASSWORD
from tests.integration.test_ocpp_local_server import raw_charger
from tests.integration.test_ocpp_merged import PASSWORD, at, native_charger
from tests.integration.test_soc_end_to_end import running

STATION = "GW-201-NATIVE"


@pytest.fixture(autouse=True)
def short_status_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statuses, "FIRST_STATUS_GRACE_S", 0.2)


def config_for(csms_url: str, server_port: int, state: Path, *, passthrough: bool = False) -> Any:
    chargers: list[dict[str, Any]] = [{"identity": "NATIVE-1", "password": PASSWORD, "connectors": [2, 1]}]
    if passthrough:
        chargers.append({"identity": "CP-P", "password": RAW_PASSWORD, "mode": "passthrough", "connectors": [3]})
    return parse_config(
        {
            "site": {"id": "native201", "state_dir": str(state)},
            "status_page": {"port": free_port()},
            "upstream": {
                "url": csms_url,
                "charge_point_id": STATION,
                "ocpp_version": "2.0.1",
                "reconnect_max_s": 0.5,
                "meter_value_sample_interval_s": 1,
            },
            "mqtt": {"host": "127.0.0.1", "port": free_port()},  # nobody there: MQTT just retries
            "ocpp_server": {"port": server_port},
            "ocpp_chargers": chargers,
        }
    )


@asynccontextmanager
async def station_site(
    tmp_path: Path, csms: DemoCsms201 | None = None, *, passthrough: bool = False
) -> AsyncIterator[tuple[Gateway, DemoCsms201, int]]:
    """A running gateway whose station speaks 2.0.1, with the native charger NATIVE-1 configured
    (merged; its connectors 1, 2 are EVSEs 2, 1); yields the gateway, its CSMS and the local port."""
    csms = csms or DemoCsms201("127.0.0.1", 0)
    csms.blocked_id_tags.add("STOLEN-CARD")
    await csms.start()
    server_port = free_port()
    gateway = Gateway.build(config_for(csms.url, server_port, tmp_path, passthrough=passthrough))
    try:
        async with running(gateway):
            await csms.wait_for("StatusNotification", lambda p: p["evseId"] == 2)
            yield gateway, csms, server_port
    finally:
        await csms.stop()


def transaction_events(csms: DemoCsms201) -> list[dict[str, Any]]:
    return csms.messages("TransactionEvent")


def register(event: dict[str, Any]) -> list[float]:
    return [
        s["value"]
        for v in event.get("meterValue", [])
        for s in v["sampledValue"]
        if s.get("measurand") == "Energy.Active.Import.Register"
    ]


async def test_a_native_session_is_transaction_events_on_its_evse_and_its_loss_a_notify_event(
    tmp_path: Path,
) -> None:
    async with station_site(tmp_path) as (gateway, csms, server_port):
        native = QueueingCharger(f"ws://127.0.0.1:{server_port}", "NATIVE-1", PASSWORD, 1, random.Random(19))
        driving = asyncio.create_task(native.run())
        try:
            native.begin(1)  # its own card, authorised by the charger itself (no Authorize)
            started = await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Started")
            native.charge(1, 40)  # the register goes 4_000_000 -> 4_000_040 Wh
            at_40 = await csms.wait_for("TransactionEvent", lambda p: 4_000_040 in register(p))
            native.end(1, "Local")
            ended = await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Ended")
            assert await native.drained(5) and native.errors == []
        finally:
            driving.cancel()
            await asyncio.gather(driving, return_exceptions=True)

        assert started["evse"] == {"id": 2, "connectorId": 1}  # charger connector 1 is EVSE 2
        assert started["idToken"] == {"idToken": "NATIVE-CARD-1", "type": "ISO14443"}
        assert started["triggerReason"] == "Authorized"
        assert register(started) == [4_000_000]
        assert at_40["eventType"] == "Updated" and at_40["triggerReason"] == "MeterValuePeriodic"
        assert ended["transactionInfo"]["stoppedReason"] == "Local" and register(ended) == [4_000_040]
        received = transaction_events(csms)
        assert len({p["transactionInfo"]["transactionId"] for p in received}) == 1
        assert [p["seqNo"] for p in received] == list(range(len(received)))  # gapless
        assert native.transactions[0].transaction_id is not None  # the charger has its own (integer) id
        # the charger is gone: its EVSE's connector lost communication
        for evse_id in (1, 2):  # both of its EVSEs
            lost = await csms.wait_for(
                "NotifyEvent", lambda p, n=evse_id: p["eventData"][0]["component"]["evse"]["id"] == n
            )
            data = lost["eventData"][0]
            assert data["component"] == {"name": "Connector", "evse": {"id": evse_id, "connectorId": 1}}
            assert (data["techCode"], data["actualValue"], data["trigger"]) == ("CommLost", "true", "Alerting")
        await csms.wait_for("StatusNotification", lambda p: p["evseId"] == 2 and p["connectorStatus"] == "Faulted")
        assert gateway.site.connectors[2].device_online is False


async def test_a_card_at_a_native_charger_is_asked_with_the_2_0_1_authorize(tmp_path: Path) -> None:
    async with station_site(tmp_path) as (_, csms, server_port), native_charger(server_port) as native:
        await native.call(call16.BootNotification(charge_point_vendor="acme", charge_point_model="x"))
        card = await native.call(call16.Authorize(id_tag="NATIVE-CARD-01"))
        assert card.id_tag_info["status"] == "Accepted"  # the 2.0.1 CSMS said so, through the gateway
        asked = csms.messages("Authorize")[-1]
        assert asked == {"idToken": {"idToken": "NATIVE-CARD-01", "type": "ISO14443"}}
        stolen = await native.call(call16.Authorize(id_tag="STOLEN-CARD"))
        assert stolen.id_tag_info["status"] == "Blocked"
        start = call16.StartTransaction(connector_id=2, id_tag="NATIVE-CARD-01", meter_start=500, timestamp=at(1))
        assert (await native.call(start)).id_tag_info["status"] == "Accepted"
        started = await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Started")
        assert started["evse"] == {"id": 1, "connectorId": 1}  # charger connector 2 is EVSE 1
        assert started["triggerReason"] == "Authorized"
        assert started["idToken"] == {"idToken": "NATIVE-CARD-01", "type": "ISO14443"}


async def test_csms_commands_for_a_native_evse_are_relayed_as_1_6_and_answered_in_2_0_1(tmp_path: Path) -> None:
    async with station_site(tmp_path) as (gateway, csms, server_port):
        health = gateway.site.subscribe()
        async with native_charger(server_port) as native:
            await native.call(call16.BootNotification(charge_point_vendor="acme", charge_point_model="x"))
            token = {"id_token": "APP-USER-0042", "type": "eMAID"}
            asked = call.RequestStartTransaction(id_token=token, remote_start_id=77, evse_id=2)
            assert (await csms.call(STATION, asked)).status == "Accepted"
            assert native.last("RemoteStartTransaction") == {"id_tag": "APP-USER-0042", "connector_id": 1}
            start = call16.StartTransaction(connector_id=1, id_tag="APP-USER-0042", meter_start=10, timestamp=at(2))
            charger_id = (await native.call(start)).transaction_id
            started = await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Started")
            assert (started["triggerReason"], started["transactionInfo"]["remoteStartId"]) == ("RemoteStart", 77)
            assert started["idToken"] == {"idToken": "APP-USER-0042", "type": "eMAID"}
            transaction_id = started["transactionInfo"]["transactionId"]

            unlock = await csms.call(STATION, call.UnlockConnector(evse_id=2, connector_id=1))
            assert unlock.status == "OngoingAuthorizedTransaction" and native.last("UnlockConnector") is None
            stop = await csms.call(STATION, call.RequestStopTransaction(transaction_id=transaction_id))
            assert stop.status == "Accepted"
            assert native.last("RemoteStopTransaction") == {"transaction_id": charger_id}
            stopped = call16.StopTransaction(transaction_id=charger_id, meter_stop=90, timestamp=at(3), reason="Remote")
            await native.call(stopped)
            await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Ended")

            unlock = await csms.call(STATION, call.UnlockConnector(evse_id=2, connector_id=1))
            assert unlock.status == "Unlocked" and native.last("UnlockConnector") == {"connector_id": 1}
            inoperative = call.ChangeAvailability(operational_status="Inoperative", evse={"id": 1})
            assert (await csms.call(STATION, inoperative)).status == "Accepted"
            assert native.last("ChangeAvailability") == {"connector_id": 2, "type": "Inoperative"}
            whole = call.ChangeAvailability(operational_status="Operative")
            assert (await csms.call(STATION, whole)).status == "Accepted"
            assert native.last("ChangeAvailability") == {"connector_id": 0, "type": "Operative"}
            reset = await csms.call(STATION, call.Reset(type="Immediate", evse_id=1))
            assert reset.status == "Accepted" and native.last("Reset") == {"type": "Hard"}
            reset = await csms.call(STATION, call.Reset(type="OnIdle", evse_id=2))
            assert reset.status == "Accepted" and native.last("Reset") == {"type": "Soft"}  # no session: at once
            long_token = {"id_token": "A" * 21, "type": "Central"}
            too_long = await csms.call(
                STATION, call.RequestStartTransaction(id_token=long_token, remote_start_id=79, evse_id=1)
            )
            assert too_long.status == "Rejected" and too_long.status_info["reason_code"] == "InvalidIdToken"
        # the charger is gone: a command for its EVSE is answered, with why, not hung
        async with asyncio.timeout(10):
            while not isinstance(gone := await health.get(), DeviceHealthChanged) or gone.online:
                pass
        again = await csms.call(STATION, call.RequestStartTransaction(id_token=token, remote_start_id=80, evse_id=1))
        assert again.status == "Rejected" and again.status_info["reason_code"] == "NoAnswer"
        unlock = await csms.call(STATION, call.UnlockConnector(evse_id=1, connector_id=1))
        assert unlock.status == "UnlockFailed" and unlock.status_info["reason_code"] == "NoAnswer"


async def test_a_native_charger_that_cannot_unlock_is_unlock_failed(tmp_path: Path) -> None:
    async with station_site(tmp_path) as (_, csms, server_port), native_charger(server_port) as native:
        await native.call(call16.BootNotification(charge_point_vendor="acme", charge_point_model="x"))
        native.unlock_answer = "NotSupported"
        unlock = await csms.call(STATION, call.UnlockConnector(evse_id=1, connector_id=1))
        assert unlock.status == "UnlockFailed" and unlock.status_info["reason_code"] == "NotSupported"
        assert native.last("UnlockConnector") == {"connector_id": 2}


async def test_passthrough_keeps_the_chargers_own_1_6_link_while_the_station_speaks_2_0_1(tmp_path: Path) -> None:
    csms = MixedCsms("127.0.0.1", 0)
    async with station_site(tmp_path, csms, passthrough=True) as (_, csms, server_port):
        assert csms.messages("BootNotification")[0]["reason"] == "PowerUp"  # the station's 2.0.1 boot
        async with raw_charger(f"ws://127.0.0.1:{server_port}", "CP-P") as ws:
            assert ws.subprotocol == "ocpp1.6"
            boot = '[2, "boot-1",  "BootNotification", {"chargePointVendor": "acme",  "chargePointModel": "pt"}]'
            await ws.send(boot)  # odd spacing: a re-serialised frame would differ
            answer = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert answer[:2] == [3, "boot-1"] and answer[2]["status"] == "Accepted"
            assert ("CP-P", boot) in csms.raw_16  # the very text, under the charger's own identity
            remote = call16.RemoteStartTransaction(id_tag="APP-1", connector_id=1)
            asked = asyncio.ensure_future(csms.call("CP-P", remote))
            request = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert request[2:] == ["RemoteStartTransaction", {"idTag": "APP-1", "connectorId": 1}]
            await ws.send(json.dumps([3, request[1], {"status": "Accepted"}]))
            assert (await asyncio.wait_for(asked, 5)).status == "Accepted"
        assert {m.charge_point_id for m in csms.received} == {STATION, "CP-P"}
        evses = {p["evseId"] for p in csms.messages("StatusNotification")}
        assert evses == {1, 2}  # the passthrough charger's connector is not an EVSE of the station


def test_a_2_0_1_charging_profile_in_1_6_terms() -> None:
    profile = {
        "id": 9,
        "stack_level": 1,
        "charging_profile_purpose": "ChargingStationMaxProfile",
        "charging_profile_kind": "Absolute",
        "transaction_id": "c1-x",
        "charging_schedule": [
            {
                "id": 1,
                "start_schedule": "2026-11-29T12:00:00Z",
                "charging_rate_unit": "A",
                "charging_schedule_period": [{"start_period": 0, "limit": 16.0, "number_phases": 3}],
            }
        ],
    }
    assert charging_profile_16(profile) == {
        "charging_profile_id": 9,
        "stack_level": 1,
        "charging_profile_purpose": "ChargePointMaxProfile",
        "charging_profile_kind": "Absolute",
        "charging_schedule": {
            "start_schedule": "2026-11-29T12:00:00Z",
            "charging_rate_unit": "A",
            "charging_schedule_period": [{"start_period": 0, "limit": 16.0, "number_phases": 3}],
        },
    }
    for change in (
        {"charging_profile_purpose": "ChargingStationExternalConstraints"},
        {"charging_schedule": profile["charging_schedule"] * 2},
    ):
        with pytest.raises(ValueError):
            charging_profile_16({**profile, **change})


async def test_resets_of_a_native_charger_wait_for_its_session_or_go_with_the_station(tmp_path: Path) -> None:
    async with station_site(tmp_path) as (_, csms, server_port), native_charger(server_port) as native:
        await native.call(call16.BootNotification(charge_point_vendor="acme", charge_point_model="x"))
        start = call16.StartTransaction(connector_id=1, id_tag="NATIVE-CARD-02", meter_start=10, timestamp=at(4))
        charger_id = (await native.call(start)).transaction_id
        await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Started")
        reset = await csms.call(STATION, call.Reset(type="OnIdle", evse_id=1))  # EVSE 1: its other connector
        assert reset.status == "Scheduled" and native.last("Reset") is None  # 2.0.1 OnIdle waits for the session
        again = await csms.call(STATION, call.Reset(type="OnIdle", evse_id=2))
        assert again.status == "Scheduled"  # the same charger: still the one reset
        stop = call16.StopTransaction(transaction_id=charger_id, meter_stop=50, timestamp=at(5), reason="Local")
        await native.call(stop)
        await asyncio.wait_for(native.reset_asked.wait(), 5)
        assert native.last("Reset") == {"type": "Soft"}
        native.reset_asked.clear()
        whole = await csms.call(STATION, call.Reset(type="Immediate"))
        assert whole.status == "Accepted"
        await asyncio.wait_for(native.reset_asked.wait(), 5)  # the station's reset is its chargers' too
        assert native.last("Reset") == {"type": "Hard"}
        await csms.wait_for("BootNotification", lambda p: p["reason"] == "RemoteReset")
        assert [payload for action, payload in native.asked if action == "Reset"] == [
            {"type": "Soft"},
            {"type": "Hard"},
        ]


async def test_a_native_session_the_csms_blocks_is_stopped_at_the_charger(tmp_path: Path) -> None:
    async with station_site(tmp_path) as (_, csms, server_port), native_charger(server_port) as native:
        await native.call(call16.BootNotification(charge_point_vendor="acme", charge_point_model="x"))
        start = call16.StartTransaction(connector_id=2, id_tag="STOLEN-CARD", meter_start=10, timestamp=at(6))
        charger_id = (await native.call(start)).transaction_id  # the charger authorised it from its own cache
        started = await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Started")
        assert started["idToken"] == {"idToken": "STOLEN-CARD", "type": "ISO14443"} and started["evse"]["id"] == 1
        await asyncio.wait_for(native.stop_asked.wait(), 5)  # the Started was answered Blocked
        assert native.last("RemoteStopTransaction") == {"transaction_id": charger_id}
