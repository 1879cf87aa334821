"""After a kill -9, every session is billed once, from what was measured (issue 14, findings 2, 3, 6).

Each test leaves the state a kill at one precise moment leaves (the stores on disk as they were
written), then starts a new charge point on it, against the real ``ocpp`` CSMS where it matters.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from adapters.demo_csms.csms import DemoCsms
from adapters.ocpp_upstream import charge_point
from adapters.ocpp_upstream.charge_point import CLEAN_SHUTDOWN, VirtualChargePoint
from adapters.ocpp_upstream.transactions import move_ledger
from adapters.storage.outbox_store import SegmentedOutboxStore
from adapters.storage.parked import ParkedMessages
from adapters.storage.settings import JsonSettingsStore
from gateway.domain.model import ChargerSnapshot, Reading, VehicleState
from gateway.domain.outbox import NewRecord, RecordKind
from gateway.services.outbox import Outbox
from tests.fixtures.memory_outbox import memory_outbox
from tests.fixtures.net import free_port
from tests.fixtures.settings import DictSettings
from tests.integration.test_outbox_upstream import FREE, _last_payload, _persistent_site, disk_outbox
from tests.integration.test_upstream import at_minute, make_site, running, upstream, upstream_at

__all__ = ["running"]  # the fixture, shared with test_upstream


def left_at(seconds: float, state: VehicleState, energy_wh: int) -> ChargerSnapshot:
    moment = at_minute(1) + timedelta(seconds=seconds)
    return ChargerSnapshot("left", 1, Reading(moment, energy_wh=energy_wh, power_w=11_000.0), vehicle_state=state)


def killed(path: Path) -> None:
    """What a kill -9 leaves of the clean-shutdown flag (a cancelled run sets it)."""
    JsonSettingsStore(path).save(CLEAN_SHUTDOWN, False)


async def stopped(cp: VirtualChargePoint) -> None:
    task = asyncio.create_task(cp.run())
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_power_loss_stop_bills_the_last_reading_already_sent_and_its_time(tmp_path: Path) -> None:
    """Samples 10 s apart: the register of every queued sample is on disk before the sample is."""
    path = tmp_path / "settings.json"
    site = _persistent_site(path)
    cp = VirtualChargePoint(site, upstream_at(free_port(), meter_value_sample_interval_s=0), disk_outbox(tmp_path))
    site.apply(left_at(0, VehicleState.A, 100_000))
    site.apply(left_at(1, VehicleState.C, 100_000))  # the session starts
    for seconds, energy_wh in ((11, 100_030), (21, 100_061), (31, 100_092)):
        site.apply(left_at(seconds, VehicleState.C, energy_wh))
        await cp.take_samples()
    await stopped(cp)
    killed(path)

    restarted = VirtualChargePoint(_persistent_site(path), upstream_at(free_port()), disk_outbox(tmp_path))
    stop = _last_payload(restarted)
    assert stop["reason"] == "PowerLoss"
    assert (stop["meter_stop"], stop["timestamp"]) == (100_092, "2026-11-29T12:01:31.000Z")


async def test_a_start_the_csms_numbered_just_before_a_kill_is_never_sent_again(tmp_path: Path) -> None:
    """The kill came after the CSMS's transactionId was saved and before the start left the queue."""
    path = tmp_path / "settings.json"
    port = free_port()
    site = _persistent_site(path)
    cp = VirtualChargePoint(site, upstream_at(port, meter_value_sample_interval_s=0), disk_outbox(tmp_path))
    site.apply(left_at(0, VehicleState.A, 100_000))
    site.apply(left_at(1, VehicleState.C, 100_000))
    site.apply(left_at(11, VehicleState.C, 100_030))
    await cp.take_samples()
    site.apply(left_at(21, VehicleState.A, 100_061))  # the car leaves: the stop is queued
    await cp.take_samples()
    await stopped(cp)
    [ref] = {info.local_ref for info in cp.outbox.store.index()}
    JsonSettingsStore(path).save("transaction_ids", {ref: 4242})  # what the CSMS had answered

    csms = DemoCsms("127.0.0.1", port)
    await csms.start()
    restarted = VirtualChargePoint(_persistent_site(path), upstream_at(port), disk_outbox(tmp_path))
    task = asyncio.create_task(restarted.run())
    try:
        stop = await csms.wait_for("StopTransaction", timeout=10)
        await asyncio.wait_for(restarted.outbox.wait_empty(), 5)
        assert csms.messages("StartTransaction") == []  # one CSMS transaction, not two
        assert stop["transactionId"] == 4242 and stop["meterStop"] == 100_061
        assert [p["transactionId"] for p in csms.messages("MeterValues") if "transactionId" in p] == [4242]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await csms.stop()


async def test_readings_stamped_before_a_session_began_never_go_out_under_its_id() -> None:
    """A native charger's late MeterValues of the previous session arrive after the new start."""
    site = make_site(FREE)
    cp = VirtualChargePoint(site, upstream_at(free_port(), meter_value_sample_interval_s=0), memory_outbox())
    site.apply(left_at(0, VehicleState.A, 300_300))
    site.apply(left_at(60, VehicleState.C, 400_000))  # (the register moved while the gateway was away)
    site.connectors[1].reading = Reading(at_minute(1) + timedelta(seconds=30), energy_wh=300_300)  # a late one
    await cp.take_samples()
    await cp.take_samples(context="Trigger")
    queued = [cp.outbox.store.head()]
    assert [r.action for r in queued if r is not None] == ["StartTransaction"]
    assert len(cp.outbox.store) == 1  # no MeterValues of the earlier reading under the new session


async def test_an_idle_reading_that_has_not_changed_is_not_sent_again(csms: DemoCsms, running: list) -> None:
    site = make_site(FREE)
    cp = VirtualChargePoint(site, upstream(csms, meter_value_sample_interval_s=0), memory_outbox())
    running.append(asyncio.create_task(cp.run()))
    site.apply(left_at(0, VehicleState.A, 100_000))
    await cp.accepted.wait()
    await cp.take_samples()
    await cp.take_samples()  # the same reading, its same time: nothing new
    site.apply(left_at(10, VehicleState.A, 100_000))
    await cp.take_samples()
    stamps = [p["meterValue"][0]["timestamp"] for p in csms.messages("MeterValues") if p["connectorId"] == 1]
    assert stamps == ["2026-11-29T12:01:00.000Z", "2026-11-29T12:01:10.000Z"]


async def test_a_record_that_fails_the_schema_locally_is_set_aside_at_once_never_blamed_on_the_csms(
    csms: DemoCsms, running: list, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 14, finding 8: valid JSON on disk that no longer makes a valid CALL blocks nothing."""
    parked = ParkedMessages(tmp_path / "outbox-parked.jsonl")
    outbox = Outbox(SegmentedOutboxStore(tmp_path / "outbox"), park=parked.add)
    stamp = "2026-11-29T12:00:00.000Z"
    bad_sample = {"connector_id": 1, "meter_value": []}  # meterValue needs at least one element
    bad_stop = {"meter_stop": "lots", "timestamp": stamp, "transaction_id": -1}  # not an integer
    good = {"connector_id": 0, "meter_value": [{"timestamp": stamp, "sampled_value": [{"value": "5"}]}]}
    outbox.enqueue(NewRecord(RecordKind.SAMPLED, "MeterValues", bad_sample, stamp, "tx-x"))
    outbox.enqueue(NewRecord(RecordKind.STOP, "StopTransaction", bad_stop, stamp, "tx-x"))
    outbox.enqueue(NewRecord(RecordKind.ALIGNED, "MeterValues", good, stamp, None))
    cp = VirtualChargePoint(make_site(FREE), upstream(csms, meter_value_sample_interval_s=0), outbox)
    running.append(asyncio.create_task(cp.run()))
    await asyncio.wait_for(outbox.wait_empty(), 5)  # no retry delays: set aside at once
    assert [p["connectorId"] for p in csms.messages("MeterValues")] == [0]
    assert csms.messages("StopTransaction") == []
    assert [record["action"] for record in parked.records()] == ["StopTransaction"]
    never_left = [r.getMessage() for r in caplog.records if "never left the gateway" in r.getMessage()]
    assert len(never_left) == 2 and all("schema" in line for line in never_left)
    assert not any("CSMS answered" in r.getMessage() for r in caplog.records)


async def test_a_damaged_settings_file_cannot_turn_stops_into_transaction_id_minus_one(tmp_path: Path) -> None:
    """Issue 14, finding 8: the sessions' CSMS ids live in transactions.json, apart from the settings."""
    port = free_port()
    ledger = tmp_path / "transactions.json"
    csms = DemoCsms("127.0.0.1", port)
    await csms.start()
    site = _persistent_site(tmp_path / "settings.json")
    cp = VirtualChargePoint(
        site, upstream_at(port, meter_value_sample_interval_s=0), disk_outbox(tmp_path), None, JsonSettingsStore(ledger)
    )
    task = asyncio.create_task(cp.run())
    try:
        site.apply(left_at(0, VehicleState.A, 100_000))
        site.apply(left_at(1, VehicleState.C, 100_000))
        start = await csms.wait_for("StartTransaction", timeout=10)
        await asyncio.wait_for(cp.outbox.wait_empty(), 5)
        numbered = csms.last_transaction_id
    finally:
        await csms.stop()
    site.apply(left_at(30, VehicleState.A, 100_200))  # the car leaves while the CSMS is away
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    for name in ("settings.json", "settings.json.prev"):
        (tmp_path / name).write_bytes(b"\x00garbage{")  # a disk that went bad under both copies

    csms = DemoCsms("127.0.0.1", port)
    await csms.start()
    restarted = VirtualChargePoint(
        _persistent_site(tmp_path / "settings.json"),
        upstream_at(port),
        disk_outbox(tmp_path),
        None,
        JsonSettingsStore(ledger),
    )
    task = asyncio.create_task(restarted.run())
    try:
        stop = await csms.wait_for("StopTransaction", timeout=10)
        assert stop["transactionId"] == numbered != -1
        assert stop["meterStop"] == 100_200 and start["meterStart"] == 100_000
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await csms.stop()


def test_an_upgrade_moves_the_session_ledger_out_of_the_settings_file_once(tmp_path: Path) -> None:
    """Before issue 14 the CSMS ids and open sessions lived in settings.json."""
    settings = JsonSettingsStore(tmp_path / "settings.json")
    settings.save("transaction_ids", {"c1-old": 77})
    settings.save("open_transactions", {})
    ledger = JsonSettingsStore(tmp_path / "transactions.json")
    move_ledger(settings, ledger)
    move_ledger(settings, ledger)  # the next start: nothing more to move, nothing lost
    assert JsonSettingsStore(tmp_path / "transactions.json").load("transaction_ids") == {"c1-old": 77}
    assert JsonSettingsStore(tmp_path / "settings.json").load("transaction_ids") is None


class RefusingLedger(DictSettings):
    """A ledger whose disk refuses writes while ``full`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.full = False

    def save(self, section: str, data: object) -> bool:
        return False if self.full else super().save(section, data)


async def test_a_start_leaves_the_queue_only_once_its_csms_id_is_on_disk(
    csms: DemoCsms, running: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in review: a refused ledger write must not let the start go (a kill would make -1)."""
    monkeypatch.setattr(charge_point, "DISK_RETRY_S", 0.05)
    ledger = RefusingLedger()
    site = make_site(FREE)
    cp = VirtualChargePoint(site, upstream(csms, meter_value_sample_interval_s=0), memory_outbox(), None, ledger)
    running.append(asyncio.create_task(cp.run()))
    await cp.accepted.wait()
    ledger.full = True
    site.apply(left_at(0, VehicleState.A, 100_000))
    site.apply(left_at(1, VehicleState.C, 100_000))
    await csms.wait_for("StartTransaction", timeout=5)
    await asyncio.sleep(0.2)  # several delivery turns while the disk refuses
    assert [info.kind for info in cp.outbox.store.index()] == [RecordKind.START]  # kept, not sent again
    ledger.full = False
    await asyncio.wait_for(cp.outbox.wait_empty(), 5)
    assert ledger.load("transaction_ids") == {cp.transactions.running[1]: csms.last_transaction_id}
    assert len(csms.messages("StartTransaction")) == 1
