"""The virtual charge point against a real CSMS (the ``ocpp`` library, schemas validated both ways)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from ocpp.v16 import call

from adapters.demo_csms.csms import DemoCsms
from adapters.ocpp_upstream import statuses
from adapters.ocpp_upstream.charge_point import VirtualChargePoint
from adapters.ocpp_upstream.mapping import next_boundary
from gateway.config import UpstreamConfig
from gateway.domain.model import (
    ChargerSnapshot,
    Connector,
    DeviceFailed,
    Fault,
    FaultKind,
    Meter,
    MeterSnapshot,
    Reading,
    VehicleState,
)
from gateway.domain.transactions import AuthPolicy, EnableCharging
from gateway.services.sessions import ConnectorPolicy
from gateway.services.site import Site
from tests.fixtures.memory_outbox import memory_outbox
from tests.fixtures.net import free_port

MEASURED_AT = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


REMOTE = ConnectorPolicy(AuthPolicy.REMOTE)


def make_site(policies: dict[int, ConnectorPolicy] | None = None) -> Site:
    """Two connectors; by default sessions wait for a remote start, so plugging in alone is Preparing."""
    return Site(
        [Connector(1, "left"), Connector(2, "right")],
        [Meter("grid", connector_id=0)],
        policies=policies or {1: REMOTE, 2: REMOTE},
    )


def upstream(csms: DemoCsms, **overrides: object) -> UpstreamConfig:
    return upstream_at(csms.port, **overrides)


def upstream_at(port: int, **overrides: object) -> UpstreamConfig:
    settings: dict[str, object] = {
        "url": f"ws://127.0.0.1:{port}/ocpp",
        "charge_point_id": "GW-TEST",
        "heartbeat_interval_s": 60,
        "meter_value_sample_interval_s": 1,
        "reconnect_max_s": 0.5,
        "response_timeout_s": 5,
    }
    settings.update(overrides)
    return UpstreamConfig.model_validate(settings)


@pytest.fixture(autouse=True)
def short_status_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    """Connector 2 ("right") is never polled here: report it soon (see test_upstream_conformance)."""
    monkeypatch.setattr(statuses, "FIRST_STATUS_GRACE_S", 0.2)


@pytest.fixture
async def running() -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def plugged(device: str, state: VehicleState, energy_wh: int = 1000) -> ChargerSnapshot:
    return ChargerSnapshot(device, 1, Reading(MEASURED_AT, energy_wh=energy_wh, power_w=0.0), vehicle_state=state)


async def test_boot_is_retried_at_the_csms_interval_and_gates_everything_else(running: list) -> None:
    csms = DemoCsms("127.0.0.1", 0, boot_answers=[("Rejected", 1), ("Pending", 1), ("Accepted", 60)])
    await csms.start()
    try:
        site = make_site()
        site.apply(plugged("left", VehicleState.A))
        cp = VirtualChargePoint(site, upstream(csms), memory_outbox())
        running.append(asyncio.create_task(cp.run()))
        await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 2, timeout=10)
        actions = [m.action for m in csms.received]
        assert actions[:3] == ["BootNotification"] * 3, actions
        statuses = {p["connectorId"]: p["status"] for p in csms.messages("StatusNotification")}
        assert statuses == {0: "Available", 1: "Available", 2: "Unavailable"}
        boots = [m.received_at for m in csms.received if m.action == "BootNotification"]
        assert (boots[1] - boots[0]).total_seconds() >= 0.9  # the CSMS's interval, not sooner
        assert site.upstream.registration == "Accepted"
    finally:
        await csms.stop()


async def test_status_changes_and_faults_go_upstream(csms: DemoCsms, running: list) -> None:
    site = make_site()
    site.apply(plugged("left", VehicleState.A))
    running.append(asyncio.create_task(VirtualChargePoint(site, upstream(csms), memory_outbox()).run()))
    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 1 and p["status"] == "Available")
    site.apply(plugged("left", VehicleState.B))
    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 1 and p["status"] == "Preparing")
    site.apply(DeviceFailed("left", "timeout", MEASURED_AT))
    faulted = await csms.wait_for("StatusNotification", lambda p: p["status"] == "Faulted")
    assert faulted["connectorId"] == 1
    assert faulted["errorCode"] == "OtherError"
    assert faulted["vendorErrorCode"] == "CommLost"


async def test_meter_values_carry_register_wh_and_reading_time(csms: DemoCsms, running: list) -> None:
    site = make_site()
    reading = Reading(
        MEASURED_AT, energy_wh=123456, power_w=7200.5, current_a=(10.0, 10.5, 11.0), voltage_v=(230.1,) * 3
    )
    site.apply(ChargerSnapshot("left", 1, reading, vehicle_state=VehicleState.C))
    site.apply(MeterSnapshot("grid", Reading(MEASURED_AT, energy_wh=9_876_543, power_w=11000.0)))
    running.append(asyncio.create_task(VirtualChargePoint(site, upstream(csms), memory_outbox()).run()))
    sent = await csms.wait_for("MeterValues", lambda p: p["connectorId"] == 1)
    value = sent["meterValue"][0]
    assert value["timestamp"] == "2026-11-29T12:00:00.000Z"
    samples = {(s["measurand"], s.get("phase")): s for s in value["sampledValue"]}
    assert samples[("Energy.Active.Import.Register", None)]["value"] == "123456"
    assert samples[("Energy.Active.Import.Register", None)]["unit"] == "Wh"
    assert samples[("Power.Active.Import", None)]["value"] == "7200.5"
    assert samples[("Current.Import", "L3")]["value"] == "11"
    assert samples[("Voltage", "L2-N")]["unit"] == "V"
    site_meter = await csms.wait_for("MeterValues", lambda p: p["connectorId"] == 0)
    energy = [s for s in site_meter["meterValue"][0]["sampledValue"] if s["measurand"].startswith("Energy")]
    assert energy[0]["value"] == "9876543"
    assert energy[0]["location"] == "Inlet"


async def test_get_and_change_configuration(csms: DemoCsms, running: list) -> None:
    site = make_site()
    cp = VirtualChargePoint(site, upstream(csms, meter_value_sample_interval_s=0), memory_outbox())
    running.append(asyncio.create_task(cp.run()))
    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 2)
    result = await csms.call("GW-TEST", call.GetConfiguration(key=["HeartbeatInterval", "NoSuchKey"]))
    assert result.configuration_key == [{"key": "HeartbeatInterval", "readonly": False, "value": "60"}]
    assert result.unknown_key == ["NoSuchKey"]
    everything = await csms.call("GW-TEST", call.GetConfiguration())
    assert {k["key"] for k in everything.configuration_key} >= {
        "HeartbeatInterval",
        "MeterValueSampleInterval",
        "MeterValuesSampledData",
        "NumberOfConnectors",
    }

    async def change(key: str, value: str) -> str:
        return (await csms.call("GW-TEST", call.ChangeConfiguration(key=key, value=value))).status

    assert await change("MeterValuesSampledData", "Energy.Active.Import.Register,Bogus") == "Rejected"
    assert await change("NumberOfConnectors", "5") == "Rejected"
    assert await change("NoSuchKey", "1") == "NotSupported"
    assert await change("HeartbeatInterval", "0") == "Rejected"
    assert await change("MeterValuesSampledData", "Energy.Active.Import.Register") == "Accepted"
    # Sampling was off (interval 0); switching it on starts MeterValues with only the chosen measurand.
    site.apply(ChargerSnapshot("left", 1, Reading(MEASURED_AT, energy_wh=5, power_w=100.0), VehicleState.C))
    assert not csms.messages("MeterValues")
    assert await change("MeterValueSampleInterval", "1") == "Accepted"
    sent = await csms.wait_for("MeterValues", timeout=5)
    assert [s["measurand"] for s in sent["meterValue"][0]["sampledValue"]] == ["Energy.Active.Import.Register"]
    assert await change("HeartbeatInterval", "1") == "Accepted"
    await csms.wait_for("Heartbeat", timeout=5)


async def test_basic_auth(running: list) -> None:
    csms = DemoCsms("127.0.0.1", 0, password="s3cret")
    await csms.start()
    try:
        wrong = VirtualChargePoint(make_site(), upstream(csms, password="wrong"), memory_outbox())
        task = asyncio.create_task(wrong.run())
        running.append(task)
        await asyncio.sleep(0)  # let it try; a refused upgrade never reaches a session
        with pytest.raises(TimeoutError):
            await csms.wait_for("BootNotification", timeout=1.5)
        task.cancel()
        right = VirtualChargePoint(make_site(), upstream(csms, password="s3cret"), memory_outbox())
        running.append(asyncio.create_task(right.run()))
        await csms.wait_for("BootNotification", timeout=5)
    finally:
        await csms.stop()


async def test_reconnects_after_csms_restart_without_rebooting(running: list) -> None:
    csms = DemoCsms("127.0.0.1", 0)
    await csms.start()
    port = csms.port
    site = make_site()
    running.append(asyncio.create_task(VirtualChargePoint(site, upstream(csms), memory_outbox()).run()))
    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 2)
    assert site.upstream.connected
    await csms.stop()
    again = DemoCsms("127.0.0.1", port)
    await again.start()
    try:
        await again.wait_for("StatusNotification", lambda p: p["connectorId"] == 2, timeout=10)
        assert not again.messages("BootNotification")  # accepted once per process: a reconnect is no reboot
        assert {p["connectorId"] for p in again.messages("StatusNotification")} == {0, 1, 2}
    finally:
        await again.stop()


async def test_callerror_from_the_csms_does_not_end_the_connection(csms: DemoCsms, running: list) -> None:
    csms.failing.add("MeterValues")
    site = make_site()
    site.apply(plugged("left", VehicleState.A))
    cp = VirtualChargePoint(site, upstream(csms), memory_outbox())
    task = asyncio.create_task(cp.run())
    running.append(task)
    await csms.wait_for("MeterValues", timeout=5)  # answered with a CALLERROR
    later = Reading(MEASURED_AT + timedelta(seconds=1), energy_wh=1000, power_w=0.0)
    site.apply(ChargerSnapshot("left", 1, later, vehicle_state=VehicleState.A))  # news for the next sample
    await csms.wait_for("MeterValues", lambda p: p is not csms.messages("MeterValues")[0], timeout=5)
    site.apply(plugged("left", VehicleState.B))
    await csms.wait_for("StatusNotification", lambda p: p["status"] == "Preparing")
    assert not task.done()
    assert csms.connections == 1  # the same connection carried on


async def test_every_raised_fault_is_reported_and_the_most_severe_stands(csms: DemoCsms, running: list) -> None:
    site = make_site()
    site.apply(plugged("left", VehicleState.C))
    running.append(asyncio.create_task(VirtualChargePoint(site, upstream(csms), memory_outbox()).run()))
    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 1 and p["status"] == "Charging")
    hot = Fault(FaultKind.OVER_TEMPERATURE, vendor_code="13")
    earth = Fault(FaultKind.GROUND_FAULT, vendor_code="RCD", info="residual current 30 mA")
    site.apply(ChargerSnapshot("left", 1, Reading(MEASURED_AT), VehicleState.C, faults=(hot, earth)))
    await csms.wait_for("StatusNotification", lambda p: p["errorCode"] == "GroundFailure")
    faulted = [p for p in csms.messages("StatusNotification") if p["status"] == "Faulted"]
    assert [p["errorCode"] for p in faulted] == ["HighTemperature", "GroundFailure"]  # the most severe last
    assert faulted[1]["info"] == "residual current 30 mA" and faulted[1]["vendorErrorCode"] == "RCD"
    count = len(csms.messages("StatusNotification"))
    site.apply(plugged("left", VehicleState.C))
    await csms.wait_for("StatusNotification", lambda p: len(csms.messages("StatusNotification")) > count)
    assert csms.messages("StatusNotification")[-1] | {"timestamp": None} == {
        "connectorId": 1,
        "status": "Charging",
        "errorCode": "NoError",
        "timestamp": None,
    }


def at_minute(minute: int) -> datetime:
    return MEASURED_AT + timedelta(minutes=minute)


def charger_at(minute: int, state: VehicleState, energy_wh: int) -> ChargerSnapshot:
    return ChargerSnapshot("left", 1, Reading(at_minute(minute), energy_wh=energy_wh), vehicle_state=state)


async def test_free_session_start_and_stop_with_register_values(csms: DemoCsms, running: list) -> None:
    site = make_site({1: ConnectorPolicy(AuthPolicy.FREE, "CARPORT"), 2: REMOTE})
    clock_site_minute = iter(range(100))
    site.clock = type("Clock", (), {"now": lambda self: at_minute(next(clock_site_minute))})()
    site.apply(charger_at(0, VehicleState.A, 1_000_000))
    running.append(asyncio.create_task(VirtualChargePoint(site, upstream(csms), memory_outbox()).run()))
    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 2)
    site.apply(charger_at(1, VehicleState.B, 1_000_000))
    start = await csms.wait_for("StartTransaction")
    assert start == {
        "connectorId": 1,
        "idTag": "CARPORT",
        "meterStart": 1_000_000,
        "timestamp": "2026-11-29T12:01:00.000Z",
    }
    site.apply(charger_at(2, VehicleState.C, 1_000_100))
    metered = await csms.wait_for("MeterValues", lambda p: p["connectorId"] == 1 and "transactionId" in p)
    assert metered["transactionId"] == csms.last_transaction_id
    site.apply(charger_at(45, VehicleState.A, 1_011_040))
    stop = await csms.wait_for("StopTransaction")
    assert (stop["transactionId"], stop["meterStop"], stop["reason"]) == (
        csms.last_transaction_id,
        1_011_040,
        "EVDisconnected",
    )
    assert stop["timestamp"] == "2026-11-29T12:45:00.000Z" and stop["idTag"] == "CARPORT"
    begin, end = stop["transactionData"]
    assert begin["sampledValue"][0] | {"value": begin["sampledValue"][0]["value"]} == {
        "value": "1000000",
        "context": "Transaction.Begin",
        "measurand": "Energy.Active.Import.Register",
        "location": "Outlet",
        "unit": "Wh",
    }
    assert end["sampledValue"][0]["value"] == "1011040" and end["timestamp"] == "2026-11-29T12:45:00.000Z"


async def test_remote_start_and_stop(csms: DemoCsms, running: list) -> None:
    site = make_site()
    site.apply(charger_at(0, VehicleState.A, 500))
    running.append(asyncio.create_task(VirtualChargePoint(site, upstream(csms), memory_outbox()).run()))
    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 2)
    unknown = await csms.call("GW-TEST", call.RemoteStartTransaction(id_tag="APP-1", connector_id=9))
    assert unknown.status == "Rejected"
    started = await csms.call("GW-TEST", call.RemoteStartTransaction(id_tag="APP-1", connector_id=1))
    assert started.status == "Accepted"
    busy = await csms.call("GW-TEST", call.RemoteStartTransaction(id_tag="APP-2", connector_id=1))
    assert busy.status == "Rejected"
    site.apply(charger_at(1, VehicleState.B, 500))
    start = await csms.wait_for("StartTransaction")
    assert (start["idTag"], start["meterStart"]) == ("APP-1", 500)
    transaction_id = csms.last_transaction_id
    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 1 and p["status"] == "SuspendedEV")
    assert (await csms.call("GW-TEST", call.RemoteStopTransaction(transaction_id=999))).status == "Rejected"
    site.apply(charger_at(2, VehicleState.C, 2_500))
    assert (await csms.call("GW-TEST", call.RemoteStopTransaction(transaction_id=transaction_id))).status == "Accepted"
    stop = await csms.wait_for("StopTransaction")
    assert (stop["reason"], stop["meterStop"], stop["transactionId"]) == ("Remote", 2_500, transaction_id)
    site.apply(charger_at(3, VehicleState.B, 2_500))  # the disabled charger stops; the car is still there
    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 1 and p["status"] == "Finishing")


async def test_a_start_the_csms_rejects_is_stopped_deauthorized(csms: DemoCsms, running: list) -> None:
    csms.blocked_id_tags.add("STOLEN")
    site = make_site({1: ConnectorPolicy(AuthPolicy.FREE, "STOLEN"), 2: REMOTE})
    events = site.subscribe()
    site.apply(charger_at(0, VehicleState.A, 10))
    running.append(asyncio.create_task(VirtualChargePoint(site, upstream(csms), memory_outbox()).run()))
    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 2)
    site.apply(charger_at(1, VehicleState.B, 10))
    stop = await csms.wait_for("StopTransaction")
    assert stop["reason"] == "DeAuthorized"
    seen = []
    while (event := events.get_nowait()) is not None:
        seen.append(event)
    assert EnableCharging(1, False) in seen  # the charger delivers nothing


async def test_sessions_while_the_csms_is_away_are_delivered_in_order(running: list) -> None:
    port = free_port()
    site = make_site({1: ConnectorPolicy(AuthPolicy.FREE, "CARPORT"), 2: REMOTE})
    running.append(asyncio.create_task(VirtualChargePoint(site, upstream_at(port), memory_outbox()).run()))
    site.apply(charger_at(0, VehicleState.A, 100))
    site.apply(charger_at(1, VehicleState.B, 100))
    site.apply(charger_at(30, VehicleState.A, 900))
    site.apply(charger_at(31, VehicleState.B, 900))
    csms = DemoCsms("127.0.0.1", port)
    await csms.start()
    try:
        await csms.wait_for("StartTransaction", lambda p: p["meterStart"] == 900, timeout=15)
        actions = [(m.action, m.payload.get("meterStart", m.payload.get("meterStop"))) for m in csms.received]
        transactions = [a for a in actions if a[0] in ("StartTransaction", "StopTransaction")]
        assert transactions == [("StartTransaction", 100), ("StopTransaction", 900), ("StartTransaction", 900)]
        first_stop = csms.messages("StopTransaction")[0]
        assert first_stop["transactionId"] == 1 and first_stop["timestamp"] == "2026-11-29T12:30:00.000Z"
    finally:
        await csms.stop()


async def test_trigger_message(csms: DemoCsms, running: list) -> None:
    site = make_site()
    site.apply(charger_at(0, VehicleState.A, 42))
    running.append(
        asyncio.create_task(
            VirtualChargePoint(site, upstream(csms, meter_value_sample_interval_s=0), memory_outbox()).run()
        )
    )
    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 2)
    before = len(csms.messages("StatusNotification"))
    answer = await csms.call("GW-TEST", call.TriggerMessage(requested_message="StatusNotification", connector_id=1))
    assert answer.status == "Accepted"
    await csms.wait_for("StatusNotification", lambda p: len(csms.messages("StatusNotification")) > before)
    assert csms.messages("StatusNotification")[-1]["connectorId"] == 1
    assert (
        await csms.call("GW-TEST", call.TriggerMessage(requested_message="MeterValues", connector_id=1))
    ).status == "Accepted"
    sample = await csms.wait_for("MeterValues")
    assert sample["connectorId"] == 1  # sampling is off (interval 0): this one was triggered
    assert (await csms.call("GW-TEST", call.TriggerMessage(requested_message="Heartbeat"))).status == "Accepted"
    await csms.wait_for("Heartbeat")
    assert (
        await csms.call("GW-TEST", call.TriggerMessage(requested_message="StatusNotification", connector_id=7))
    ).status == "Rejected"
    firmware = call.TriggerMessage(requested_message="FirmwareStatusNotification")
    assert (await csms.call("GW-TEST", firmware)).status == "NotImplemented"


async def test_local_list_and_authorization_of_remote_starts(csms: DemoCsms, running: list) -> None:
    site = make_site()
    site.apply(charger_at(0, VehicleState.A, 10))
    running.append(asyncio.create_task(VirtualChargePoint(site, upstream(csms), memory_outbox()).run()))
    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 2)

    async def change(key: str, value: str) -> str:
        return (await csms.call("GW-TEST", call.ChangeConfiguration(key=key, value=value))).status

    entries = [{"idTag": "LISTED-CARD", "idTagInfo": {"status": "Accepted"}}]
    sent = await csms.call(
        "GW-TEST", call.SendLocalList(list_version=1, update_type="Full", local_authorization_list=entries)
    )
    assert sent.status == "Accepted"
    assert (await csms.call("GW-TEST", call.GetLocalListVersion())).list_version == 1
    stale = await csms.call("GW-TEST", call.SendLocalList(list_version=1, update_type="Differential"))
    assert stale.status == "VersionMismatch"

    assert await change("AuthorizeRemoteTxRequests", "true") == "Accepted"
    assert (
        await csms.call("GW-TEST", call.RemoteStartTransaction(id_tag="APP-1", connector_id=1))
    ).status == "Accepted"
    await csms.wait_for("Authorize", lambda p: p["idTag"] == "APP-1")  # online: the CSMS decides
    site.apply(charger_at(1, VehicleState.B, 10))
    await csms.wait_for("StartTransaction", lambda p: p["idTag"] == "APP-1")

    assert await change("LocalPreAuthorize", "true") == "Accepted"
    assert await change("LocalPreAuthorize", "maybe") == "Rejected"
    remote = call.RemoteStartTransaction(id_tag="LISTED-CARD", connector_id=2)
    assert (await csms.call("GW-TEST", remote)).status == "Accepted"
    site.apply(ChargerSnapshot("right", 1, Reading(at_minute(2), energy_wh=20), vehicle_state=VehicleState.B))
    await csms.wait_for("StartTransaction", lambda p: p["idTag"] == "LISTED-CARD")
    assert [p["idTag"] for p in csms.messages("Authorize")] == ["APP-1"]  # the listed card needed no Authorize
    assert (await csms.call("GW-TEST", call.ClearCache())).status == "Accepted"


async def test_availability_reset_unlock_and_data_transfer(csms: DemoCsms, running: list) -> None:
    site = make_site({1: ConnectorPolicy(AuthPolicy.FREE, "CARPORT"), 2: REMOTE})
    site.apply(charger_at(0, VehicleState.A, 10))
    site.apply(ChargerSnapshot("right", 1, Reading(at_minute(0), energy_wh=5), vehicle_state=VehicleState.A))
    running.append(asyncio.create_task(VirtualChargePoint(site, upstream(csms), memory_outbox()).run()))
    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 2 and p["status"] == "Available")

    def availability(connector_id: int, kind: str) -> call.ChangeAvailability:
        return call.ChangeAvailability(connector_id=connector_id, type=kind)

    assert (await csms.call("GW-TEST", availability(2, "Inoperative"))).status == "Accepted"
    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 2 and p["status"] == "Unavailable")
    remote = call.RemoteStartTransaction(id_tag="APP", connector_id=2)
    assert (await csms.call("GW-TEST", remote)).status == "Rejected"  # out of service
    assert (await csms.call("GW-TEST", availability(7, "Inoperative"))).status == "Rejected"
    site.apply(charger_at(1, VehicleState.B, 10))  # a free session on connector 1
    await csms.wait_for("StartTransaction")
    assert (await csms.call("GW-TEST", availability(1, "Inoperative"))).status == "Scheduled"
    assert (await csms.call("GW-TEST", availability(2, "Operative"))).status == "Accepted"
    assert (await csms.call("GW-TEST", call.UnlockConnector(connector_id=1))).status == "NotSupported"
    assert (await csms.call("GW-TEST", call.DataTransfer(vendor_id="acme"))).status == "UnknownVendorId"

    assert (await csms.call("GW-TEST", call.Reset(type="Soft"))).status == "Accepted"
    stop = await csms.wait_for("StopTransaction")
    assert stop["reason"] == "SoftReset"
    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 1 and p["status"] == "Unavailable")
    await csms.wait_for("BootNotification", lambda p: len(csms.messages("BootNotification")) == 2, timeout=10)


async def test_clock_aligned_meter_values_carry_the_boundary_and_sample_clock(csms: DemoCsms, running: list) -> None:
    site = make_site()
    site.apply(charger_at(0, VehicleState.A, 777))
    site.apply(MeterSnapshot("grid", Reading(MEASURED_AT, energy_wh=5_000_000)))
    running.append(
        asyncio.create_task(
            VirtualChargePoint(site, upstream(csms, meter_value_sample_interval_s=0), memory_outbox()).run()
        )
    )
    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 2)
    change = call.ChangeConfiguration(key="MeterValuesAlignedData", value="Energy.Active.Import.Register")
    assert (await csms.call("GW-TEST", change)).status == "Accepted"
    change = call.ChangeConfiguration(key="ClockAlignedDataInterval", value="1")
    assert (await csms.call("GW-TEST", change)).status == "Accepted"
    site_meter = await csms.wait_for("MeterValues", lambda p: p["connectorId"] == 0, timeout=5)
    value = site_meter["meterValue"][0]
    assert value["timestamp"].endswith(".000Z")  # the interval boundary, not the poll time
    assert value["sampledValue"] == [
        {
            "value": "5000000",
            "context": "Sample.Clock",
            "measurand": "Energy.Active.Import.Register",
            "location": "Inlet",
            "unit": "Wh",
        }
    ]


def test_next_boundary_is_aligned_to_midnight_utc() -> None:
    assert next_boundary(datetime(2026, 1, 1, 10, 7, 30, tzinfo=UTC), 900) == datetime(2026, 1, 1, 10, 15, tzinfo=UTC)
    assert next_boundary(datetime(2026, 1, 1, 23, 59, 59, tzinfo=UTC), 3600) == datetime(2026, 1, 2, 0, 0, tzinfo=UTC)
