"""A day without the CSMS: 20 connectors charging on a simulated clock, the backlog on disk,
then the CSMS comes back and gets everything once, in order, with the right transaction ids."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from adapters.demo_csms.csms import DemoCsms
from adapters.ocpp_upstream.charge_point import VirtualChargePoint
from adapters.storage.outbox_store import SegmentedOutboxStore
from gateway.domain.model import ChargerSnapshot, Connector, Reading, VehicleState
from gateway.domain.transactions import AuthPolicy
from gateway.services.outbox import Outbox
from gateway.services.sessions import ConnectorPolicy
from gateway.services.site import Site
from tests.fixtures.net import free_port
from tests.integration.test_upstream import upstream_at

CONNECTORS = 20
STEP = timedelta(minutes=15)  # one MeterValueSampleInterval
STEPS = 96  # 24 hours
POWER_W = 11_000
START = datetime(2026, 11, 28, 0, 0, tzinfo=UTC)


@dataclass
class FakeClock:
    now_at: datetime = START

    def now(self) -> datetime:
        return self.now_at


@dataclass
class Simulated:
    """Each connector's sessions as (start step, end step), and the energy each should bill."""

    register_wh: dict[int, int] = field(default_factory=lambda: dict.fromkeys(range(1, CONNECTORS + 1), 1_000_000))
    billed_wh: dict[int, list[int]] = field(default_factory=dict)


def sessions_of(connector_id: int) -> list[tuple[int, int]]:
    """Two sessions a day per connector, staggered so starts and stops interleave across connectors."""
    offset = connector_id % 8
    return [(offset, 40 + offset), (48 + offset, 90 + offset // 2)]


def state_at(connector_id: int, step: int) -> VehicleState:
    return next((VehicleState.C for start, end in sessions_of(connector_id) if start <= step < end), VehicleState.A)


async def test_a_day_away_then_everything_once_in_order(tmp_path: Path) -> None:
    clock = FakeClock()
    site = Site(
        [Connector(cid, f"charger{cid}") for cid in range(1, CONNECTORS + 1)],
        [],
        clock=clock,
        policies={cid: ConnectorPolicy(AuthPolicy.FREE, f"FLEET-{cid:02d}") for cid in range(1, CONNECTORS + 1)},
    )
    port = free_port()
    outbox = Outbox(SegmentedOutboxStore(tmp_path / "outbox"))
    cp = VirtualChargePoint(site, upstream_at(port, meter_value_sample_interval_s=0), outbox)
    task = asyncio.create_task(cp.run())
    simulated = Simulated()
    try:
        for step in range(STEPS + 1):
            clock.now_at = START + step * STEP
            for cid in range(1, CONNECTORS + 1):
                state = state_at(cid, step)
                if state is VehicleState.C and state_at(cid, step - 1) is VehicleState.C:
                    simulated.register_wh[cid] += POWER_W * STEP.seconds // 3600
                reading = Reading(clock.now_at, energy_wh=simulated.register_wh[cid], power_w=float(POWER_W))
                site.apply(ChargerSnapshot(f"charger{cid}", 1, reading, vehicle_state=state))
            await cp.take_samples()
            if step % 4 == 0:
                await cp.take_aligned(clock.now_at)
        queued = len(outbox.store)
        assert queued > 2_000

        csms = DemoCsms("127.0.0.1", port)
        await csms.start()
        began = time.monotonic()
        try:
            await asyncio.wait_for(outbox.wait_empty(), 240)
            elapsed_s = time.monotonic() - began
            print(f"\nreplayed {queued} messages in {elapsed_s:.1f} s ({queued / elapsed_s:.0f}/s)")
        finally:
            await csms.stop()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    billing = [m for m in csms.received if m.action in ("StartTransaction", "StopTransaction", "MeterValues")]
    # each queued message exactly once: a MeterValues.req may carry many of a session's samples
    entries = sum(len(m.payload["meterValue"]) if m.action == "MeterValues" else 1 for m in billing)
    assert entries == queued
    assert len(billing) < queued / 3  # batched: the backlog went in far fewer requests
    ids: dict[int, int] = {}  # transaction id -> connector
    open_on: dict[int, int] = {}  # connector -> transaction id
    meter_start: dict[int, int] = {}
    for number, message in enumerate(m for m in billing if m.action == "StartTransaction"):
        message.payload["transactionId"] = number + 1  # the demo CSMS numbers starts 1, 2, 3 ...
    stamps = []
    for message in billing:
        payload = message.payload
        if message.action == "StartTransaction":
            cid = payload["connectorId"]
            assert cid not in open_on, "a start before the previous session's stop"
            open_on[cid] = payload["transactionId"]
            ids[payload["transactionId"]] = cid
            meter_start[payload["transactionId"]] = payload["meterStart"]
            stamps.append(payload["timestamp"])
        elif message.action == "StopTransaction":
            tid = payload["transactionId"]
            cid = ids[tid]
            assert open_on.pop(cid) == tid
            simulated.billed_wh.setdefault(cid, []).append(payload["meterStop"] - meter_start[tid])
            stamps.append(payload["timestamp"])
        elif "transactionId" in payload:
            assert open_on.get(payload["connectorId"]) == payload["transactionId"]
    assert stamps == sorted(stamps)  # in the order they happened, with the times they happened
    assert stamps[0] == START.isoformat().replace("+00:00", ".000Z")
    for cid in range(1, CONNECTORS + 1):
        expected = [
            (end - start - 1) * POWER_W * STEP.seconds // 3600 for start, end in sessions_of(cid) if end <= STEPS
        ]
        assert simulated.billed_wh[cid] == expected, f"connector {cid}"
