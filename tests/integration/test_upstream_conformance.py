"""OCPP 1.6 rules an independent strict CSMS found broken, each against the real ``ocpp`` CSMS on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

import pytest
from ocpp.exceptions import OCPPError
from ocpp.v16 import call

from adapters.demo_csms.csms import DemoCsms
from adapters.ocpp_upstream import statuses
from adapters.ocpp_upstream.charge_point import VirtualChargePoint
from gateway.domain.model import ChargerSnapshot, Reading, VehicleState
from gateway.domain.transactions import AuthPolicy
from gateway.services.sessions import ConnectorPolicy
from gateway.services.site import Site
from tests.fixtures.memory_outbox import memory_outbox
from tests.integration.test_upstream import REMOTE, make_site, running, upstream

__all__ = ["running"]  # the fixture, shared with test_upstream
pytestmark = pytest.mark.usefixtures("short_status_grace")


@pytest.fixture
def short_status_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statuses, "FIRST_STATUS_GRACE_S", 0.5)


def poll(device: str, state: VehicleState, energy_wh: int = 1000, at: datetime | None = None) -> ChargerSnapshot:
    reading = Reading(at or datetime.now(UTC), energy_wh=energy_wh, power_w=0.0)
    return ChargerSnapshot(device, 1, reading, vehicle_state=state)


def both_read(site: Site) -> None:
    site.apply(poll("left", VehicleState.A))
    site.apply(poll("right", VehicleState.A))


def start(site: Site, csms: DemoCsms, running: list, **overrides: object) -> VirtualChargePoint:
    cp = VirtualChargePoint(site, upstream(csms, **overrides), memory_outbox())
    running.append(asyncio.create_task(cp.run()))
    return cp


async def booted(csms: DemoCsms) -> None:
    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 2)


async def registered(site: Site, status: str) -> None:
    """Until the gateway has the CSMS's answer ``status`` to its BootNotification."""
    events = site.subscribe()
    try:
        async with asyncio.timeout(5):
            while site.upstream.registration != status:
                await events.get()  # any event: the registration is read again after each
    finally:
        site.unsubscribe(events)


def status_of(csms: DemoCsms, connector_id: int) -> list[str]:
    return [p["status"] for p in csms.messages("StatusNotification") if p["connectorId"] == connector_id]


@pytest.mark.parametrize(
    "request_",
    [
        call.GetDiagnostics(location="ftp://example.invalid/diag"),
        call.UpdateFirmware(location="https://example.invalid/fw.bin", retrieve_date="2026-01-01T00:00:00Z"),
        call.ReserveNow(connector_id=1, expiry_date="2026-01-01T00:00:00Z", id_tag="CARD", reservation_id=7),
        call.CancelReservation(reservation_id=7),
    ],
    ids=lambda r: type(r).__name__,
)
async def test_an_unsupported_16_action_is_notsupported_in_one_log_line(
    csms: DemoCsms, running: list, request_: object, caplog: pytest.LogCaptureFixture
) -> None:
    site = make_site()
    both_read(site)
    start(site, csms, running)
    await booted(csms)
    with pytest.raises(OCPPError) as refused:
        await csms.call("GW-TEST", request_)
    assert refused.value.code == "NotSupported"  # OCPP-J 1.6: recognised but not supported
    assert refused.value.description == "Requested Action is recognized but not supported by the receiver"
    lines = [r for r in caplog.records if type(request_).__name__ in r.getMessage()]
    ours = [r for r in lines if r.name == "ocpp" or r.name.startswith("adapters.ocpp_upstream")]  # not the CSMS's
    assert [(r.levelno, r.exc_info) for r in ours] == [(logging.WARNING, None)]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert (await csms.call("GW-TEST", call.ClearCache())).status == "Accepted"  # the connection carries on


async def test_configuration_keys_are_case_insensitive_and_answered_in_canonical_spelling(
    csms: DemoCsms, running: list
) -> None:
    site = make_site()
    both_read(site)
    cp = start(site, csms, running)
    await booted(csms)
    asked = await csms.call("GW-TEST", call.GetConfiguration(key=["heartbeatinterval", "NOSUCHKEY"]))
    assert asked.configuration_key == [{"key": "HeartbeatInterval", "readonly": False, "value": "60"}]
    assert asked.unknown_key == ["NOSUCHKEY"]
    changed = await csms.call("GW-TEST", call.ChangeConfiguration(key="heartBeatInterval", value="1"))
    assert changed.status == "Accepted"
    assert cp.configuration.heartbeat_interval_s == 1
    await csms.wait_for("Heartbeat", timeout=5)  # the canonical key changed: the loop follows it
    assert site.settings is not None and cp.configuration.to_dict()["HeartbeatInterval"] == "1"


async def test_every_required_core_key_is_reported_with_an_honest_value(csms: DemoCsms, running: list) -> None:
    site = make_site()
    both_read(site)
    start(site, csms, running)
    await booted(csms)
    every = {k["key"]: k for k in (await csms.call("GW-TEST", call.GetConfiguration())).configuration_key}
    required_core = {  # OCPP 1.6, 9.1: the Core keys marked Required
        "AuthorizeRemoteTxRequests", "ClockAlignedDataInterval", "ConnectionTimeOut", "ConnectorPhaseRotation",
        "GetConfigurationMaxKeys", "HeartbeatInterval", "LocalAuthorizeOffline", "LocalPreAuthorize",
        "MeterValuesAlignedData", "MeterValuesSampledData", "MeterValueSampleInterval", "NumberOfConnectors",
        "ResetRetries", "StopTransactionOnEVSideDisconnect", "StopTransactionOnInvalidId", "StopTxnAlignedData",
        "StopTxnSampledData", "SupportedFeatureProfiles", "TransactionMessageAttempts",
        "TransactionMessageRetryInterval", "UnlockConnectorOnEVSideDisconnect",
    }  # fmt: skip
    assert required_core <= set(every), required_core - set(every)
    rotation = every["ConnectorPhaseRotation"]
    assert (rotation["value"], rotation["readonly"]) == ("0.Unknown,1.Unknown,2.Unknown", True)
    assert (every["ResetRetries"]["value"], every["ResetRetries"]["readonly"]) == ("0", True)
    assert every["StopTransactionOnEVSideDisconnect"]["value"] == "true"
    assert every["UnlockConnectorOnEVSideDisconnect"]["value"] == "false"
    refused = await csms.call(
        "GW-TEST", call.ChangeConfiguration(key="StopTransactionOnEVSideDisconnect", value="false")
    )
    assert refused.status == "Rejected"  # the gateway cannot do otherwise


async def test_after_a_reset_the_reconnect_reports_finishing_not_the_old_charging(
    csms: DemoCsms, running: list
) -> None:
    site = make_site({1: ConnectorPolicy(AuthPolicy.FREE, "CARPORT"), 2: REMOTE})
    both_read(site)
    site.apply(poll("left", VehicleState.B))  # a free session starts
    site.apply(poll("left", VehicleState.C))  # and charges
    start(site, csms, running)
    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 1 and p["status"] == "Charging")
    assert (await csms.call("GW-TEST", call.Reset(type="Soft"))).status == "Accepted"
    await csms.wait_for("BootNotification", lambda p: len(csms.messages("BootNotification")) == 2, timeout=10)
    second_boot = max(i for i, m in enumerate(csms.received) if m.action == "BootNotification")

    def connector_1_after_reboot(payload: dict[str, object]) -> bool:
        return payload["connectorId"] == 1 and any(m.payload is payload for m in csms.received[second_boot:])

    first = await csms.wait_for("StatusNotification", connector_1_after_reboot, timeout=5)
    assert (first["status"], first["errorCode"]) == ("Finishing", "NoError")  # the session is over, not Charging
    assert (await csms.wait_for("StopTransaction"))["reason"] == "SoftReset"


async def test_a_meter_values_trigger_while_pending_is_sent_and_nothing_else(running: list) -> None:
    csms = DemoCsms("127.0.0.1", 0, boot_answers=[("Pending", 60)])
    await csms.start()
    try:
        site = make_site()
        both_read(site)
        start(site, csms, running)
        await registered(site, "Pending")
        answer = await csms.call("GW-TEST", call.TriggerMessage(requested_message="MeterValues", connector_id=1))
        assert answer.status == "Accepted"
        sent = await csms.wait_for("MeterValues", timeout=5)
        assert sent["connectorId"] == 1 and "transactionId" not in sent
        assert {s["context"] for s in sent["meterValue"][0]["sampledValue"]} == {"Trigger"}
        assert {m.action for m in csms.received} == {"BootNotification", "MeterValues"}  # only what was triggered
    finally:
        await csms.stop()


async def test_a_triggered_boot_notification_applies_its_heartbeat_interval(csms: DemoCsms, running: list) -> None:
    site = make_site()
    both_read(site)
    cp = start(site, csms, running)
    await booted(csms)
    assert cp.configuration.heartbeat_interval_s == 60
    csms.boot_answers = [("Accepted", 1)]
    answer = await csms.call("GW-TEST", call.TriggerMessage(requested_message="BootNotification"))
    assert answer.status == "Accepted"
    await csms.wait_for("BootNotification", lambda p: len(csms.messages("BootNotification")) == 2)
    await csms.wait_for("Heartbeat", timeout=5)  # every second now, as after a normal boot
    asked = await csms.call("GW-TEST", call.GetConfiguration(key=["HeartbeatInterval"]))
    assert asked.configuration_key[0]["value"] == "1"


async def test_a_triggered_boot_accepted_while_pending_opens_the_gate(running: list) -> None:
    csms = DemoCsms("127.0.0.1", 0, boot_answers=[("Pending", 60)])
    await csms.start()
    try:
        site = make_site()
        both_read(site)
        cp = start(site, csms, running)
        await registered(site, "Pending")
        csms.boot_answers = [("Accepted", 60)]
        answer = await csms.call("GW-TEST", call.TriggerMessage(requested_message="BootNotification"))
        assert answer.status == "Accepted"
        await asyncio.wait_for(cp.accepted.wait(), 5)
        await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 2, timeout=5)  # not after 60 s
        assert len(csms.messages("BootNotification")) == 2
    finally:
        await csms.stop()


async def test_an_accepted_remote_start_without_a_car_is_preparing_until_connection_timeout(
    csms: DemoCsms, running: list
) -> None:
    site = make_site()
    both_read(site)
    start(site, csms, running)
    await booted(csms)
    change = call.ChangeConfiguration(key="ConnectionTimeOut", value="1")
    assert (await csms.call("GW-TEST", change)).status == "Accepted"
    started = await csms.call("GW-TEST", call.RemoteStartTransaction(id_tag="APP-1", connector_id=1))
    assert started.status == "Accepted"
    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 1 and p["status"] == "Preparing", 5)
    site.apply(poll("left", VehicleState.A, at=datetime.now(UTC) + timedelta(seconds=2)))  # a poll after the timeout
    back = ["Available", "Preparing", "Available"]  # ConnectionTimeOut: the connector is free again
    await csms.wait_for("StatusNotification", lambda p: status_of(csms, 1) == back, 5)
    assert not csms.messages("StartTransaction")


async def test_while_rejected_csms_requests_get_no_answer(running: list, caplog: pytest.LogCaptureFixture) -> None:
    csms = DemoCsms("127.0.0.1", 0, boot_answers=[("Rejected", 60)])
    await csms.start()
    try:
        site = make_site()
        both_read(site)
        start(site, csms, running)
        await registered(site, "Rejected")
        csms.sessions["GW-TEST"]._response_timeout = 1
        with pytest.raises(TimeoutError):  # OCPP 1.6, 4.2: no answer at all, not even a CALLERROR
            await csms.call("GW-TEST", call.GetConfiguration(key=["HeartbeatInterval"]))
        assert "CSMS sent GetConfiguration while the gateway is Rejected: not answered" in caplog.text
        assert [m.action for m in csms.received] == ["BootNotification"]
    finally:
        await csms.stop()


async def test_a_connector_is_reported_once_its_device_is_read_not_unavailable_first(
    csms: DemoCsms, running: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(statuses, "FIRST_STATUS_GRACE_S", 1.5)
    site = make_site()  # nothing polled yet: a gateway that has just started
    cp = start(site, csms, running)
    await asyncio.wait_for(cp.accepted.wait(), 5)
    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 0)
    with contextlib.suppress(TimeoutError):  # the statuses sent at boot, if any (none for devices never read)
        await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 2, timeout=0.5)
    site.apply(poll("left", VehicleState.A))  # the first poll, a moment after the boot
    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 1)
    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 2, timeout=5)  # after the grace
    assert status_of(csms, 1) == ["Available"]  # no Unavailable -> Available flap
    assert status_of(csms, 2) == ["Unavailable"]  # never read: reported as it is once the grace is over
