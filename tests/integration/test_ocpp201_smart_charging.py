"""Smart charging of the 2.0.1 station against a real 2.0.1 CSMS (schemas on both ways) and Modbus
chargers (simulators): a profile limits the charger's current register as a 1.6 profile does."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from ocpp.exceptions import OCPPError
from ocpp.v201 import call

from adapters.demo_csms.csms201 import DemoCsms201
from adapters.modbus.simulator import ModbusSimulator
from gateway.app import Gateway
from gateway.config import parse_config
from tests.fixtures.modbus import start_simulators
from tests.fixtures.net import free_port
from tests.integration.test_ocpp201_upstream import short_status_grace  # noqa: F401 (autouse fixture)

STATION = "GW-SC201"


@dataclass
class Running:
    gateway: Gateway
    left: ModbusSimulator  # EVSE 1: free charging, a session as soon as a car plugs in
    right: ModbusSimulator  # EVSE 2: waits for the CSMS (RequestStartTransaction)


@pytest.fixture
def csms(csms201: DemoCsms201) -> DemoCsms201:
    return csms201  # (tests/fixtures/ocpp.py)


@contextlib.asynccontextmanager
async def running_site(csms: DemoCsms201, state_dir: str) -> AsyncIterator[Running]:
    sims, ports = await start_simulators({"left": "abb-terra-ac", "right": "phoenix-ev-eth"})
    device = {"host": "127.0.0.1", "poll_interval_s": 0.1, "timeout_s": 0.5}
    config = parse_config(
        {
            "site": {"id": "sc201", "state_dir": state_dir},
            "status_page": {"port": free_port()},
            "upstream": {
                "url": csms.url,
                "charge_point_id": STATION,
                "ocpp_version": "2.0.1",
                "meter_value_sample_interval_s": 0,
                "reconnect_max_s": 0.3,
            },
            "mqtt": {"host": "127.0.0.1", "port": free_port()},  # no broker: the gateway carries on without
            "chargers": [
                {"name": "left", "profile": "abb-terra-ac", "port": ports["left"], "connectors": [1], **device},
                {"name": "right", "profile": "phoenix-ev-eth", "port": ports["right"], "connectors": [2], **device},
            ],
            "connectors": [{"id": 1, "id_tag": "SC-FREE"}, {"id": 2, "policy": "remote"}],
        }
    )
    gateway = Gateway.build(config)
    task = asyncio.create_task(gateway.run())
    try:
        await csms.wait_for("StatusNotification", lambda p: p["evseId"] == 2 and p["connectorStatus"] == "Available")
        yield Running(gateway, sims["left"], sims["right"])
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for sim in sims.values():
            await sim.stop()


@pytest.fixture
async def site(csms: DemoCsms201) -> AsyncIterator[Running]:
    async with running_site(csms, tempfile.mkdtemp(prefix="sc201-state-")) as running:
        yield running


def profile(
    profile_id: int, purpose: str, limit: float, unit: str = "A", stack_level: int = 0, **extra: Any
) -> dict[str, Any]:
    return {
        "id": profile_id,
        "stackLevel": stack_level,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute",
        "chargingSchedule": [
            {
                "id": profile_id * 10,
                "chargingRateUnit": unit,
                "startSchedule": "2020-01-01T00:00:00Z",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}],
            }
        ],
        **extra,
    }


async def set_profile(csms: DemoCsms201, evse_id: int, charging_profile: dict[str, Any]) -> Any:
    return await csms.call(STATION, call.SetChargingProfile(evse_id=evse_id, charging_profile=charging_profile))


async def session_on_the_left(site: Running, csms: DemoCsms201) -> str:
    """A car at EVSE 1 (free charging): the session's transactionId."""
    site.left.plug_in()
    started = await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Started")
    await site.left.wait_for(lambda: site.left.may_charge())
    return str(started["transactionInfo"]["transactionId"])


async def test_a_station_max_profile_lowers_the_charger_and_clearing_restores_it(
    site: Running, csms: DemoCsms201
) -> None:
    await session_on_the_left(site, csms)
    answer = await set_profile(csms, 0, profile(1, "ChargingStationMaxProfile", 10))
    assert answer.status == "Accepted"
    await site.left.wait_for(lambda: site.left.offered_current_a() == 10)
    composite = await csms.call(STATION, call.GetCompositeSchedule(duration=3600, evse_id=1))
    assert composite.status == "Accepted"
    schedule = composite.schedule
    assert (schedule["evse_id"], schedule["duration"], schedule["charging_rate_unit"]) == (1, 3600, "A")
    assert schedule["charging_schedule_period"][0] == {"start_period": 0, "limit": 10.0}
    unknown = await csms.call(STATION, call.GetCompositeSchedule(duration=3600, evse_id=7))
    assert (unknown.status, unknown.status_info["reason_code"]) == ("Rejected", "UnknownEvse")
    missing = await csms.call(STATION, call.ClearChargingProfile(charging_profile_id=99))
    assert missing.status == "Unknown"
    cleared = await csms.call(STATION, call.ClearChargingProfile(charging_profile_id=1))
    assert cleared.status == "Accepted"
    await site.left.wait_for(lambda: (site.left.offered_current_a() or 0) > 10)
    assert len(site.gateway.site.charging_profiles) == 0


async def test_a_tx_profile_limits_its_session_and_a_wrong_transaction_is_rejected(
    site: Running, csms: DemoCsms201
) -> None:
    transaction_id = await session_on_the_left(site, csms)
    wrong = await set_profile(csms, 1, profile(2, "TxProfile", 8, transactionId="not-this-one"))
    assert (wrong.status, wrong.status_info["reason_code"]) == ("Rejected", "TxNotFound")
    idle = await set_profile(csms, 2, profile(3, "TxProfile", 8, transactionId=transaction_id))
    assert (idle.status, idle.status_info["reason_code"]) == ("Rejected", "TxNotFound")  # no session on EVSE 2
    answer = await set_profile(csms, 1, profile(2, "TxProfile", 8, transactionId=transaction_id))
    assert answer.status == "Accepted"
    await site.left.wait_for(lambda: site.left.offered_current_a() == 8)
    assert (await set_profile(csms, 0, profile(4, "ChargingStationMaxProfile", 20))).status == "Accepted"
    asked = call.GetChargingProfiles(request_id=7, charging_profile={"charging_limit_source": ["CSO"]})
    assert (await csms.call(STATION, asked)).status == "Accepted"
    last = await csms.wait_for("ReportChargingProfiles", lambda p: p["requestId"] == 7 and not p.get("tbc"))
    reports = [p for p in csms.messages("ReportChargingProfiles") if p["requestId"] == 7]
    assert [(p["evseId"], p["chargingLimitSource"], p.get("tbc")) for p in reports] == [
        (0, "CSO", True),
        (1, "CSO", False),
    ]
    tx = last["chargingProfile"][0]
    assert (tx["id"], tx["chargingProfilePurpose"], tx["transactionId"]) == (2, "TxProfile", transaction_id)
    assert tx["chargingSchedule"][0]["id"] == 20  # the schedule's own id, kept
    none = call.GetChargingProfiles(request_id=8, evse_id=2, charging_profile={"charging_profile_purpose": "TxProfile"})
    assert (await csms.call(STATION, none)).status == "NoProfiles"
    by_criteria = {"evse_id": 1, "charging_profile_purpose": "TxProfile"}
    cleared = await csms.call(STATION, call.ClearChargingProfile(charging_profile_criteria=by_criteria))
    assert cleared.status == "Accepted"
    await site.left.wait_for(lambda: site.left.offered_current_a() == 20)  # the station max is left


async def test_limits_in_watts_and_the_composite_in_watts(site: Running, csms: DemoCsms201) -> None:
    await session_on_the_left(site, csms)
    answer = await set_profile(csms, 0, profile(5, "TxDefaultProfile", 6900, unit="W"))  # 230 V, 3 phases: 10 A
    assert answer.status == "Accepted"
    await site.left.wait_for(lambda: site.left.offered_current_a() == 10)
    composite = await csms.call(STATION, call.GetCompositeSchedule(duration=600, evse_id=1, charging_rate_unit="W"))
    assert composite.schedule["charging_rate_unit"] == "W"
    assert composite.schedule["charging_schedule_period"][0]["limit"] == 6900


async def test_a_request_start_with_a_tx_profile_limits_the_session_it_starts(site: Running, csms: DemoCsms201) -> None:
    bad = {**profile(6, "TxProfile", 8), "transactionId": "x"}  # a start's profile names no transaction
    token = {"id_token": "APP-6", "type": "Central"}
    refused = await csms.call(
        STATION, call.RequestStartTransaction(id_token=token, remote_start_id=1, evse_id=2, charging_profile=bad)
    )
    assert (refused.status, refused.status_info["reason_code"]) == ("Rejected", "InvalidProfile")
    start = call.RequestStartTransaction(
        id_token=token, remote_start_id=2, evse_id=2, charging_profile=profile(6, "TxProfile", 8)
    )
    assert (await csms.call(STATION, start)).status == "Accepted"
    site.right.plug_in()
    started = await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Started")
    assert started["transactionInfo"]["remoteStartId"] == 2
    await site.right.wait_for(lambda: site.right.offered_current_a() == 8)
    asked = call.GetChargingProfiles(request_id=9, evse_id=2, charging_profile={"charging_profile_id": [6]})
    assert (await csms.call(STATION, asked)).status == "Accepted"
    report = await csms.wait_for("ReportChargingProfiles", lambda p: p["requestId"] == 9)
    assert report["chargingProfile"][0]["transactionId"] == started["transactionInfo"]["transactionId"]


async def test_profiles_are_kept_across_a_restart(csms: DemoCsms201) -> None:
    state_dir = tempfile.mkdtemp(prefix="sc201-restart-")
    async with running_site(csms, state_dir) as site:
        assert (await set_profile(csms, 0, profile(7, "ChargingStationMaxProfile", 12))).status == "Accepted"
        assert (await set_profile(csms, 1, profile(8, "TxDefaultProfile", 16, stack_level=2))).status == "Accepted"
        running = await session_on_the_left(site, csms)
        tx = profile(9, "TxProfile", 8, transactionId=running)
        assert (await set_profile(csms, 1, tx)).status == "Accepted"
        await site.left.wait_for(lambda: site.left.offered_current_a() == 8)
        # the gateway stops with the session open: it is ended (Reboot) at the next start, its TxProfile too
    csms.received.clear()
    async with running_site(csms, state_dir) as site:
        assert sorted(p.profile_id for p in site.gateway.site.charging_profiles) == [7, 8]  # the TxProfile ended
        await session_on_the_left(site, csms)
        await site.left.wait_for(lambda: site.left.offered_current_a() == 12)
        variable = {
            "component": {"name": "SmartChargingCtrlr"},
            "variable": {"name": "Entries", "instance": "ChargingProfiles"},
        }
        answer = await csms.call(STATION, call.GetVariables(get_variable_data=[variable]))
        assert answer.get_variable_result[0]["attribute_value"] == "2"


def raw_set_profile(message_id: str, stack_level: str) -> str:
    body = json.dumps(profile(9, "TxDefaultProfile", 10)).replace('"stackLevel": 0', f'"stackLevel": {stack_level}')
    return f'[2,"{message_id}","SetChargingProfile",{{"evseId":0,"chargingProfile":{body}}}]'


async def test_hostile_profiles_get_their_answer_and_the_link_lives(site: Running, csms: DemoCsms201) -> None:
    session = csms.sessions[STATION]
    await session._connection.send(raw_set_profile("h1", "9" * 5000))  # over Python's 4300 digits: not readable
    huge = await set_profile(csms, 0, profile(9, "TxDefaultProfile", 10, stack_level=int("9" * 4000)))
    assert (huge.status, huge.status_info["reason_code"]) == ("Rejected", "ValueTooHigh")
    many = profile(10, "TxDefaultProfile", 10)
    many["chargingSchedule"][0]["chargingSchedulePeriod"] = [{"startPeriod": s * 60, "limit": 10} for s in range(1000)]
    too_many = await set_profile(csms, 0, many)
    assert (too_many.status, too_many.status_info["reason_code"]) == ("Rejected", "TooManyElements")
    backwards = profile(11, "TxDefaultProfile", 10, validFrom="2030-01-02T00:00:00Z", validTo="2030-01-01T00:00:00Z")
    assert (await set_profile(csms, 0, backwards)).status_info["reason_code"] == "InvalidProfile"
    external = await set_profile(csms, 0, profile(12, "ChargingStationExternalConstraints", 10))
    assert external.status == "Rejected"
    max_on_evse = await set_profile(csms, 1, profile(13, "ChargingStationMaxProfile", 10))
    assert (max_on_evse.status, max_on_evse.status_info["reason_code"]) == ("Rejected", "InvalidProfile")
    two = profile(14, "TxDefaultProfile", 10)
    two["chargingSchedule"] = two["chargingSchedule"] * 2  # ISO 15118 alternatives: one is taken, never two
    assert (await set_profile(csms, 0, two)).status_info["reason_code"] == "UnsupportedParam"
    four = profile(15, "TxDefaultProfile", 10)
    four["chargingSchedule"] = four["chargingSchedule"] * 4  # beyond the schema's 3
    with pytest.raises(OCPPError):
        await set_profile(csms, 0, four)
    assert len(site.gateway.site.charging_profiles) == 0
    nowhere = {"evse_id": int("9" * 4000)}
    assert (await csms.call(STATION, call.ClearChargingProfile(charging_profile_criteria=nowhere))).status == "Unknown"
    forever = await csms.call(STATION, call.GetCompositeSchedule(duration=int("9" * 4000), evse_id=1))
    assert (forever.status, forever.status_info["reason_code"]) == ("Rejected", "ValueOutOfRange")
    alive = await set_profile(csms, 0, profile(16, "TxDefaultProfile", 16))
    assert alive.status == "Accepted" and csms.connections == 1


async def test_a_start_profile_whose_car_never_came_ends_with_the_start(site: Running, csms: DemoCsms201) -> None:
    timeout = {"component": {"name": "TxCtrlr"}, "variable": {"name": "EVConnectionTimeOut"}, "attribute_value": "1"}
    answer = await csms.call(STATION, call.SetVariables(set_variable_data=[timeout]))
    assert answer.set_variable_result[0]["attribute_status"] == "Accepted"
    token = {"id_token": "APP-7", "type": "Central"}
    start = call.RequestStartTransaction(
        id_token=token, remote_start_id=3, evse_id=2, charging_profile=profile(17, "TxProfile", 8)
    )
    events = site.gateway.site.subscribe()
    assert (await csms.call(STATION, start)).status == "Accepted"
    assert [p.profile_id for p in site.gateway.site.charging_profiles] == [17]
    async with asyncio.timeout(5):  # no car within EVConnectionTimeOut: the start and its profile are dropped
        while len(site.gateway.site.charging_profiles):
            await events.get()
    assert site.gateway.site.settings.load("charging_profiles")["profiles"] == []  # saved so
