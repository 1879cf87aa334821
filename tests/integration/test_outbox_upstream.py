"""Billing messages through the outbox, against a real CSMS: away and back, errors, restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from ocpp.v16 import call

from adapters.demo_csms.csms import DemoCsms
from adapters.ocpp_upstream.charge_point import CLEAN_SHUTDOWN, VirtualChargePoint
from adapters.storage.outbox_store import SegmentedOutboxStore
from adapters.storage.settings import JsonSettingsStore
from gateway.domain.model import ChargerSnapshot, Connector, Meter, Reading, VehicleState
from gateway.domain.outbox import RecordKind
from gateway.domain.transactions import AuthPolicy, StopTransaction
from gateway.services.outbox import Outbox
from gateway.services.sessions import ConnectorPolicy
from gateway.services.site import Site
from tests.fixtures.memory_outbox import memory_outbox
from tests.fixtures.net import free_port
from tests.integration.test_upstream import REMOTE, at_minute, charger_at, make_site, running, upstream, upstream_at

__all__ = ["running"]  # the fixture, shared with test_upstream

FREE = {1: ConnectorPolicy(AuthPolicy.FREE, "CARPORT"), 2: REMOTE}


@pytest.mark.parametrize("per_request", [1, 50])
async def test_meter_values_taken_while_away_arrive_in_order_with_the_csms_id(running: list, per_request: int) -> None:
    """One by one with ``meter_values_per_request = 1``; batched into one request otherwise."""
    port = free_port()
    site = make_site(FREE)
    settings = upstream_at(port, meter_value_sample_interval_s=0, meter_values_per_request=per_request)
    cp = VirtualChargePoint(site, settings, memory_outbox())
    running.append(asyncio.create_task(cp.run()))
    site.apply(charger_at(0, VehicleState.A, 100))
    site.apply(charger_at(1, VehicleState.B, 100))
    for minute, energy_wh in ((2, 300), (3, 500), (4, 700)):
        site.apply(charger_at(minute, VehicleState.C, energy_wh))
        await cp.take_samples()
    site.apply(charger_at(5, VehicleState.A, 800))
    await cp.take_samples()  # (no session now: nothing more is queued)
    assert len(cp.outbox.store) == 5  # start, three samples, stop: all waiting
    csms = DemoCsms("127.0.0.1", port)
    await csms.start()
    try:
        await csms.wait_for("StopTransaction", timeout=15)
        billing = [m for m in csms.received if m.action in ("StartTransaction", "MeterValues", "StopTransaction")]
        requests = 3 if per_request == 1 else 1
        assert [m.action for m in billing] == ["StartTransaction"] + ["MeterValues"] * requests + ["StopTransaction"]
        samples = [m.payload for m in billing[1:-1]]
        assert all(p["transactionId"] == csms.last_transaction_id for p in samples)
        stamps = [entry["timestamp"] for p in samples for entry in p["meterValue"]]
        assert stamps == ["2026-11-29T12:02:00.000Z", "2026-11-29T12:03:00.000Z", "2026-11-29T12:04:00.000Z"]
        assert billing[-1].payload["transactionId"] == csms.last_transaction_id
        await asyncio.wait_for(cp.outbox.wait_empty(), 5)
    finally:
        await csms.stop()


async def test_a_failing_message_is_dropped_after_its_attempts_but_a_stop_is_kept(
    csms: DemoCsms, running: list
) -> None:
    site = make_site(FREE)
    settings = upstream(
        csms, meter_value_sample_interval_s=0, transaction_message_attempts=2, transaction_message_retry_interval_s=1
    )
    cp = VirtualChargePoint(site, settings, memory_outbox())
    site.apply(charger_at(0, VehicleState.A, 100))
    running.append(asyncio.create_task(cp.run()))
    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 2)
    csms.failing.update({"MeterValues", "StopTransaction"})
    site.apply(charger_at(1, VehicleState.B, 100))
    await csms.wait_for("StartTransaction")
    site.apply(charger_at(2, VehicleState.C, 400))
    await cp.take_samples()
    site.apply(charger_at(3, VehicleState.A, 500))
    await csms.wait_for("StopTransaction", lambda p: len(csms.messages("StopTransaction")) == 3, timeout=15)
    assert len(csms.messages("MeterValues")) == 2  # two attempts, then given up
    assert cp.outbox.stats().dropped == 1
    assert [r.action for r in (cp.outbox.store.head(),) if r] == ["StopTransaction"]  # kept past its attempts
    csms.failing.clear()
    await asyncio.wait_for(cp.outbox.wait_empty(), 15)
    assert csms.messages("StopTransaction")[-1]["meterStop"] == 500


async def test_stop_txn_sampled_data_goes_into_transaction_data(csms: DemoCsms, running: list) -> None:
    site = make_site(FREE)
    cp = VirtualChargePoint(site, upstream(csms, meter_value_sample_interval_s=0), memory_outbox())
    site.apply(charger_at(0, VehicleState.A, 100))
    running.append(asyncio.create_task(cp.run()))
    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 2)
    change = call.ChangeConfiguration(key="StopTxnSampledData", value="Energy.Active.Import.Register")
    assert (await csms.call("GW-TEST", change)).status == "Accepted"
    bad = call.ChangeConfiguration(key="StopTxnAlignedData", value="Bogus.Measurand")
    assert (await csms.call("GW-TEST", bad)).status == "Rejected"
    site.apply(charger_at(1, VehicleState.B, 100))
    await csms.wait_for("StartTransaction")
    for minute, energy_wh in ((2, 250), (3, 400)):
        site.apply(charger_at(minute, VehicleState.C, energy_wh))
        await cp.take_samples()
    site.apply(charger_at(4, VehicleState.A, 450))
    stop = await csms.wait_for("StopTransaction")
    contexts = [(v["sampledValue"][0]["context"], v["sampledValue"][0]["value"]) for v in stop["transactionData"]]
    assert contexts == [
        ("Transaction.Begin", "100"),
        ("Sample.Periodic", "250"),
        ("Sample.Periodic", "400"),
        ("Transaction.End", "450"),
    ]


def _persistent_site(path: Path) -> Site:
    site = Site([Connector(1, "left"), Connector(2, "right")], [Meter("grid", 0)], policies=FREE)
    site.settings = JsonSettingsStore(path)
    return site


async def test_a_session_open_when_the_gateway_died_is_stopped_with_power_loss(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    port = free_port()
    site = _persistent_site(path)
    cp = VirtualChargePoint(site, upstream_at(port, meter_value_sample_interval_s=0), disk_outbox(tmp_path))
    task = asyncio.create_task(cp.run())
    site.apply(charger_at(0, VehicleState.A, 100))
    site.apply(charger_at(1, VehicleState.B, 100))
    site.apply(charger_at(7, VehicleState.C, 2_100))
    await asyncio.sleep(0)
    await cp.take_samples()  # the register the restart will stop with
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert JsonSettingsStore(path).load(CLEAN_SHUTDOWN) is True
    JsonSettingsStore(path).save(CLEAN_SHUTDOWN, False)  # as a kill -9 would have left it

    restarted = VirtualChargePoint(_persistent_site(path), upstream_at(port), disk_outbox(tmp_path))
    queued = [info.kind for info in restarted.outbox.store.index()]
    assert queued == ["start", "sampled", "stop"]  # the start and its sample still wait for the CSMS
    stop = _last_payload(restarted)
    assert (stop["reason"], stop["meter_stop"], stop["timestamp"]) == ("PowerLoss", 2_100, "2026-11-29T12:07:00.000Z")
    assert restarted.transactions.open == {}


async def test_a_clean_restart_stops_an_open_session_with_reboot(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    site = _persistent_site(path)
    cp = VirtualChargePoint(site, upstream_at(free_port()), disk_outbox(tmp_path))
    task = asyncio.create_task(cp.run())
    site.apply(charger_at(0, VehicleState.A, 100))
    site.apply(charger_at(1, VehicleState.B, 100))
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    restarted = VirtualChargePoint(_persistent_site(path), upstream_at(free_port()), disk_outbox(tmp_path))
    stop = _last_payload(restarted)
    assert stop["reason"] == "Reboot" and stop["meter_stop"] == 100


def _last_payload(cp: VirtualChargePoint) -> dict:
    """The payload of the newest queued record (read through delivering the ones before it)."""
    store = cp.outbox.store
    while len(store) > 1:
        head = store.head()
        assert head is not None
        store.remove([head.seq])
    last = store.head()
    assert last is not None and last.action == "StopTransaction"
    return last.payload


async def test_connector_zero_is_unavailable_while_the_whole_site_is_out_of_service(
    csms: DemoCsms, running: list
) -> None:
    site = make_site()
    site.apply(charger_at(0, VehicleState.A, 10))
    site.apply(ChargerSnapshot("right", 1, Reading(at_minute(0), energy_wh=5), vehicle_state=VehicleState.A))
    running.append(asyncio.create_task(VirtualChargePoint(site, upstream(csms), memory_outbox()).run()))
    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 0 and p["status"] == "Available")
    assert (await csms.call("GW-TEST", call.ChangeAvailability(connector_id=0, type="Inoperative"))).status == (
        "Accepted"
    )
    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 0 and p["status"] == "Unavailable")
    assert (await csms.call("GW-TEST", call.ChangeAvailability(connector_id=1, type="Operative"))).status == (
        "Accepted"
    )

    def zero() -> list[str]:
        return [p["status"] for p in csms.messages("StatusNotification") if p["connectorId"] == 0]

    await csms.wait_for("StatusNotification", lambda p: len(zero()) == 3)
    assert zero() == ["Available", "Unavailable", "Available"]


async def test_a_backlog_on_disk_survives_a_restart_and_keeps_its_ids(tmp_path: Path, running: list) -> None:
    port = free_port()
    path = tmp_path / "settings.json"
    site = _persistent_site(path)
    first = VirtualChargePoint(site, upstream_at(port, meter_value_sample_interval_s=0), disk_outbox(tmp_path))
    site.apply(charger_at(0, VehicleState.A, 100))
    site.apply(charger_at(1, VehicleState.B, 100))
    site.apply(charger_at(2, VehicleState.C, 300))
    await first.take_samples()
    site.apply(charger_at(3, VehicleState.A, 400))
    await first.take_samples()  # takes the stop in
    assert [info.kind for info in first.outbox.store.index()] == ["start", "sampled", "stop"]

    restarted = VirtualChargePoint(_persistent_site(path), upstream_at(port), disk_outbox(tmp_path))
    running.append(asyncio.create_task(restarted.run()))
    csms = DemoCsms("127.0.0.1", port)
    await csms.start()
    try:
        await asyncio.wait_for(restarted.outbox.wait_empty(), 15)
    finally:
        await csms.stop()
    billing = [m for m in csms.received if m.action in ("StartTransaction", "MeterValues", "StopTransaction")]
    assert [m.action for m in billing] == ["StartTransaction", "MeterValues", "StopTransaction"]
    start, sample, stop = (m.payload for m in billing)
    assert start["timestamp"] == "2026-11-29T12:01:00.000Z" and start["meterStart"] == 100
    assert sample["transactionId"] == stop["transactionId"] == csms.last_transaction_id
    assert sample["meterValue"][0]["timestamp"] == "2026-11-29T12:02:00.000Z"
    assert (stop["meterStop"], stop["reason"]) == (400, "EVDisconnected")


def disk_outbox(directory: Path) -> Outbox:
    return Outbox(SegmentedOutboxStore(directory / "outbox"))


async def test_after_a_kill_a_session_is_stopped_once_and_only_if_its_start_was_queued(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    site = _persistent_site(path)
    cp = VirtualChargePoint(site, upstream_at(free_port()), disk_outbox(tmp_path))
    site.apply(charger_at(0, VehicleState.A, 100))
    site.apply(charger_at(1, VehicleState.B, 100))
    cp._take_pending()  # the start is queued and the session recorded open
    site.apply(charger_at(2, VehicleState.A, 150))
    stop = next(e for e in iter(cp._effects.get_nowait, None) if isinstance(e, StopTransaction))
    cp._queue(RecordKind.STOP, "StopTransaction", cp.transactions.stop_payload(stop), stop.stopped_at, stop.local_ref)
    # killed here: the stop is queued, the session still recorded open
    restarted = VirtualChargePoint(_persistent_site(path), upstream_at(free_port()), disk_outbox(tmp_path))
    assert [info.kind for info in restarted.outbox.store.index()] == ["start", "stop"]  # no second stop
    assert restarted.transactions.open == {}

    store = JsonSettingsStore(path)  # a session recorded open whose start never reached the queue
    store.save("open_transactions", {"c2-x": {**_open("c2-x"), "connector_id": 2}})
    again = VirtualChargePoint(_persistent_site(path), upstream_at(free_port()), disk_outbox(tmp_path / "other"))
    assert len(again.outbox.store) == 0 and again.transactions.open == {}


def _open(ref: str) -> dict[str, object]:
    at = "2026-11-29T12:00:00.000Z"
    return {
        "local_ref": ref,
        "connector_id": 1,
        "id_tag": "X",
        "meter_start_wh": 1,
        "started_at": at,
        "last_register_wh": 1,
        "last_register_at": at,
    }


async def test_over_a_slow_uplink_a_backlog_goes_in_few_requests_each_sample_with_its_time(running: list) -> None:
    """A CSMS 300 ms away: a session's queued samples arrive in one MeterValues.req, in order."""
    port = free_port()
    site = make_site(FREE)
    cp = VirtualChargePoint(site, upstream_at(port, meter_value_sample_interval_s=0), memory_outbox())
    running.append(asyncio.create_task(cp.run()))
    site.apply(charger_at(0, VehicleState.A, 100))
    site.apply(charger_at(1, VehicleState.B, 100))
    for minute in range(2, 32):
        site.apply(charger_at(minute, VehicleState.C, 100 + 50 * minute))
        await cp.take_samples()
    site.apply(charger_at(32, VehicleState.A, 1_800))
    await cp.take_samples()  # queues the stop (no session now: no sample)
    assert len(cp.outbox.store) == 32  # start, 30 samples, stop
    csms = DemoCsms("127.0.0.1", port)
    csms.answer_delay_s = 0.3
    await csms.start()
    try:
        await csms.wait_for("StopTransaction", timeout=15)
        billing = [m for m in csms.received if m.action in ("StartTransaction", "MeterValues", "StopTransaction")]
        assert [m.action for m in billing] == ["StartTransaction", "MeterValues", "StopTransaction"]
        entries = billing[1].payload["meterValue"]
        assert [e["timestamp"] for e in entries] == [f"2026-11-29T12:{m:02d}:00.000Z" for m in range(2, 32)]
        registers = [int(e["sampledValue"][0]["value"]) for e in entries]
        assert registers == [100 + 50 * m for m in range(2, 32)]
        await asyncio.wait_for(cp.outbox.wait_empty(), 5)
    finally:
        await csms.stop()
