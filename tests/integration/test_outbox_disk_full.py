"""A disk that refuses writes (full or read-only) while the CSMS is there: billing still goes out,
from memory, and the trouble is shown as a problem wherever the backlog is shown.

Real peers: the ``ocpp`` CSMS, the durable store (with its writes refused), the whole gateway with
its status page and a real Mosquitto.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Iterable
from pathlib import Path

import pytest

from adapters.demo_csms.csms import DemoCsms
from adapters.ocpp_upstream.charge_point import VirtualChargePoint
from adapters.storage.outbox_store import SegmentedOutboxStore
from gateway.domain.model import VehicleState
from gateway.domain.outbox import NewRecord, OutboxRecord
from gateway.services.outbox import Outbox
from tests.fixtures.mosquitto import MosquittoBroker, WatchFactory
from tests.fixtures.status_site import running_gateway, until
from tests.integration.test_outbox_upstream import FREE
from tests.integration.test_status_page import get, metrics, picture
from tests.integration.test_upstream import charger_at, make_site, running, upstream

__all__ = ["running"]  # the fixture, shared with test_upstream

BILLING = ("StartTransaction", "MeterValues", "StopTransaction")


def refused() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class FullDiskStore(SegmentedOutboxStore):
    """The durable store on a disk that refuses every write while ``full`` is set."""

    full = False

    def append(self, record: NewRecord) -> OutboxRecord:
        if self.full:
            raise refused()
        return super().append(record)

    def remove(self, seqs: Iterable[int]) -> None:
        if self.full:
            raise refused()
        super().remove(seqs)

    def set_attempts(self, seq: int, attempts: int) -> None:
        if self.full:
            raise refused()
        super().set_attempts(seq, attempts)


async def test_a_session_reaches_a_connected_csms_while_the_disk_is_full(
    csms: DemoCsms, running: list, tmp_path: Path
) -> None:
    site = make_site(FREE)
    store = FullDiskStore(tmp_path / "outbox")
    outbox = Outbox(store, on_change=site.report_backlog)
    cp = VirtualChargePoint(site, upstream(csms, meter_value_sample_interval_s=0), outbox)
    site.apply(charger_at(0, VehicleState.A, 100))
    running.append(asyncio.create_task(cp.run()))
    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 2)
    store.full = True

    site.apply(charger_at(1, VehicleState.B, 100))
    start = await csms.wait_for("StartTransaction", timeout=10)  # while the disk is full
    assert start["meterStart"] == 100 and len(store) == 0  # it never reached the disk
    site.apply(charger_at(2, VehicleState.C, 400))
    await cp.take_samples()
    site.apply(charger_at(3, VehicleState.A, 500))
    stop = await csms.wait_for("StopTransaction", timeout=10)
    assert stop["meterStop"] == 500 and stop["transactionId"] == csms.last_transaction_id
    sample = await csms.wait_for("MeterValues", lambda p: p.get("transactionId") is not None)
    assert sample["transactionId"] == csms.last_transaction_id
    assert outbox.stats().disk_problem is not None  # delivered, but the disk still refuses

    store.full = False  # the disk is back: the next session is written and sent, nothing again
    site.apply(charger_at(4, VehicleState.B, 500))
    await csms.wait_for("StartTransaction", lambda p: p["meterStart"] == 500, timeout=10)
    await asyncio.wait_for(outbox.wait_empty(), 10)
    billing = [m.action for m in csms.received if m.action in BILLING]
    assert billing == ["StartTransaction", "MeterValues", "StopTransaction", "StartTransaction"]
    assert outbox.stats().disk_problem is None


async def test_disk_trouble_shows_on_the_page_the_api_metrics_and_mqtt_and_clears(
    tmp_path: Path,
    csms: DemoCsms,
    mosquitto: MosquittoBroker,
    mqtt_watch: WatchFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with running_gateway(tmp_path, csms.url, mosquitto, {}) as gateway:
        site, telemetry = gateway.site, gateway.gateway.telemetry
        await until(site, lambda: telemetry.ready and site.upstream.connected and telemetry.mqtt.connected)
        assert gateway.gateway.upstream is not None and gateway.gateway.mqtt is not None
        outbox = gateway.gateway.upstream.outbox
        topic = gateway.gateway.mqtt.topics.outbox
        watcher = await mqtt_watch(topic)
        state = await picture(gateway.url)
        assert state["outbox"]["problems"] == [] and state["outbox"]["disk_problem"] is None

        def refuse(*_: object) -> None:
            raise refused()

        for write in ("append", "remove", "set_attempts"):
            monkeypatch.setattr(outbox.store, write, refuse)
        gateway.right.plug_in()  # a session starts: its StartTransaction meets the full disk
        await csms.wait_for("StartTransaction", lambda p: p["connectorId"] == 2, timeout=10)

        state = await picture(gateway.url)
        problem = state["outbox"]["disk_problem"]
        assert problem is not None and "No space left on device" in problem
        assert problem in state["outbox"]["problems"]
        samples = metrics((await get(f"{gateway.url}/metrics"))[2])
        assert samples[("ocpp_gateway_outbox_disk_failing", ())] == 1
        assert ("ocpp_gateway_outbox_held_in_memory", ()) in samples
        html = (await get(gateway.url + "/"))[2]
        assert "the disk refuses to store billing messages" in html and "class=fault" in html
        published = await watcher.wait_for(topic, lambda m: m.json()["disk_problem"] is not None)
        assert published.json()["problems"] != []
        since_problem = watcher.mark()

        monkeypatch.undo()  # the disk takes writes again; the next message is written
        gateway.right.unplug()
        await csms.wait_for("StopTransaction", lambda p: p["reason"] == "EVDisconnected", timeout=10)
        await until(site, lambda: outbox.stats().disk_problem is None)
        state = await picture(gateway.url)
        assert state["outbox"]["problems"] == [] and state["outbox"]["disk_problem"] is None
        samples = metrics((await get(f"{gateway.url}/metrics"))[2])
        assert samples[("ocpp_gateway_outbox_disk_failing", ())] == 0
        assert samples[("ocpp_gateway_outbox_held_in_memory", ())] == 0
        assert "the disk refuses" not in (await get(gateway.url + "/"))[2]
        cleared = await watcher.wait_for(topic, lambda m: m.json()["disk_problem"] is None, after=since_problem)
        assert cleared.json()["problems"] == []
