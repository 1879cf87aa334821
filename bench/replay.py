"""Benchmark: draining an outage's backlog over a slow uplink, batched MeterValues against one by one.

OCPP 1.6 allows one outstanding CALL, so a backlog drains at one round trip per request. A site of
20 connectors is run on a simulated clock while the CSMS is away: 45-minute sessions with 15
minutes between them, staggered, one sample a minute (MeterValueSampleInterval 60) and the
clock-aligned values every 15 minutes, all queued on disk by the real gateway code (Site,
VirtualChargePoint, Outbox on a SegmentedOutboxStore). The backlog is built once per length and
copied for every run. Then the demo CSMS (the ``ocpp`` library, schema validation on in both
directions; in a process of its own, bench/replay_csms.py, so that its work is not counted as the
gateway's) comes back with every answer held back by 0, 25, 50 or 100 ms, the round trip of a
loopback, a good DSL line, 4G, a poor 4G link; the gateway drains the copy, and the time until the
outbox is empty is measured, with ``meter_values_per_request`` at its default against 1 (one
sample per request, as before), in the same run.

A 24-hour backlog drained one by one takes most of an hour at 100 ms: one by one is measured on the
1-hour backlog and projected for 24 hours from its time per request (marked "projected"), unless
``--full`` is given.

The same backlog, built by the OCPP 2.0.1 station (``ChargingStation201``) and drained to the 2.0.1
demo CSMS, is measured beside them in the same run: one TransactionEvent per event
(``meter_values_per_request`` 1) and batched (its default: a transaction's queued Updated events in
one TransactionEvent, adapters/ocpp201_upstream/replay_batches.py).

``--batched-only`` leaves the one-by-one runs out (their cells read "-"): the long delays and
backlogs in a few minutes.

    .venv/bin/python bench/replay.py [--hours 1 24] [--delays-ms 0 25 50 100] [--full] [--batched-only]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from adapters.ocpp201_upstream.station import ChargingStation201
from adapters.ocpp_upstream.charge_point import VirtualChargePoint
from adapters.storage.outbox_store import SegmentedOutboxStore
from gateway.config import UpstreamConfig
from gateway.domain.model import ChargerSnapshot, Connector, Reading, VehicleState
from gateway.domain.transactions import AuthPolicy
from gateway.services.outbox import Outbox, OutboxSettings
from gateway.services.sessions import ConnectorPolicy
from gateway.services.site import Site

CONNECTORS = 20
SESSION_MIN, GAP_MIN = 45, 15
POWER_W = 11_000
START = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)
DEFAULT_PER_REQUEST = UpstreamConfig.model_fields["meter_values_per_request"].default
CSMS = Path(__file__).with_name("replay_csms.py")  # runs in a process of its own, as a real CSMS would
NO_THINNING = OutboxSettings(thin_after_records=10**9)  # every sample is kept: the bench counts them all


@dataclass
class Clock:
    at: datetime = START

    def now(self) -> datetime:
        return self.at


@dataclass(frozen=True)
class Run:
    hours: int
    delay_ms: int
    per_request: int
    messages: int  # records in the backlog
    requests: int  # CALLs the CSMS answered for them
    seconds: float
    projected: bool = False
    cpu_ms_per_message: float | None = None  # of the gateway's process (the CSMS runs in another)
    version: str = "1.6"


def upstream(port: int, per_request: int, version: str = "1.6") -> UpstreamConfig:
    return UpstreamConfig(
        ocpp_version=version,
        url=f"ws://127.0.0.1:{port}/ocpp",
        charge_point_id="GW-BENCH",
        heartbeat_interval_s=3600,
        meter_value_sample_interval_s=0,  # samples are taken by the bench, on its clock
        reconnect_max_s=0.5,
        response_timeout_s=30,
        meter_values_per_request=per_request,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def charging(connector_id: int, minute: int) -> bool:
    """45 minutes of charging, 15 idle, each connector shifted by a few minutes."""
    return (minute + 3 * connector_id) % (SESSION_MIN + GAP_MIN) < SESSION_MIN


def make_site(clock: Clock) -> Site:
    connectors = [Connector(cid, f"charger{cid}") for cid in range(1, CONNECTORS + 1)]
    policies = {cid: ConnectorPolicy(AuthPolicy.FREE, f"FLEET-{cid:02d}") for cid in connectors_ids()}
    return Site(connectors, [], clock=clock, policies=policies)


def connectors_ids() -> range:
    return range(1, CONNECTORS + 1)


def upstream_side(site: Site, port: int, per_request: int, outbox: Outbox, version: str) -> Any:
    """The 1.6 charge point or the 2.0.1 station; clock-aligned values are taken by the bench."""
    if version == "2.0.1":
        station = ChargingStation201(site, upstream(port, per_request, version), outbox)
        station.aligned_interval_s = 0
        return station
    return VirtualChargePoint(site, upstream(port, per_request), outbox)


async def build_backlog(directory: Path, hours: int, version: str = "1.6") -> int:
    """Run the site for ``hours`` with no CSMS; every connector ends idle. Returns the records queued."""
    clock = Clock()
    site = make_site(clock)
    outbox = Outbox(SegmentedOutboxStore(directory), NO_THINNING)
    cp = upstream_side(site, free_port(), DEFAULT_PER_REQUEST, outbox, version)
    if isinstance(cp, VirtualChargePoint):
        cp.configuration.set("ClockAlignedDataInterval", "900")
    task = asyncio.create_task(cp.run())  # finds nobody listening: the backlog grows
    register_wh = dict.fromkeys(connectors_ids(), 5_000_000)
    try:
        minutes = hours * 60
        for minute in range(minutes + 1):
            clock.at = START + timedelta(minutes=minute)
            for cid in connectors_ids():
                on = minute < minutes and charging(cid, minute)
                if on and charging(cid, minute - 1):
                    register_wh[cid] += POWER_W // 60
                state = VehicleState.C if on else VehicleState.A
                reading = Reading(clock.at, energy_wh=register_wh[cid], power_w=float(POWER_W if on else 0))
                site.apply(ChargerSnapshot(f"charger{cid}", 1, reading, vehicle_state=state))
            await cp.take_samples()
            if minute % 15 == 0:
                await cp.take_aligned(clock.at)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return len(outbox.store)


async def drain(backlog: Path, work: Path, hours: int, delay_ms: int, per_request: int, version: str = "1.6") -> Run:
    """A copy of ``backlog`` delivered to a CSMS answering after ``delay_ms``; timed until empty."""
    copy = work / f"h{hours}-d{delay_ms}-n{per_request}-v{version}"
    shutil.copytree(backlog, copy)
    outbox = Outbox(SegmentedOutboxStore(copy), NO_THINNING)
    messages = len(outbox.store)
    port = free_port()
    summary = work / "csms-summary.json"
    csms = await asyncio.create_subprocess_exec(
        sys.executable, str(CSMS), str(port), str(delay_ms), str(summary), version, stdout=asyncio.subprocess.PIPE
    )
    assert csms.stdout is not None and (await csms.stdout.readline()).strip() == b"ready"
    site = make_site(Clock(START + timedelta(hours=hours)))
    cp = upstream_side(site, port, per_request, outbox, version)
    task = asyncio.create_task(cp.run())
    began, cpu_began = time.perf_counter(), time.process_time()
    try:
        await outbox.wait_empty()
        seconds = time.perf_counter() - began
        cpu_s = time.process_time() - cpu_began
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        csms.terminate()
        await csms.wait()
        shutil.rmtree(copy, ignore_errors=True)
    received = json.loads(summary.read_text())
    summary.unlink()
    assert received["entries"] == messages, f"{received['entries']} delivered of {messages}"  # each exactly once
    cpu_ms = cpu_s * 1000 / messages
    requests = received["requests"]
    return Run(hours, delay_ms, per_request, messages, requests, seconds, cpu_ms_per_message=cpu_ms, version=version)


def projected(measured: Run, messages: int, hours: int) -> Run:
    """One by one, scaled from a measured run by messages (one request each)."""
    seconds = measured.seconds / measured.requests * messages
    return Run(hours, measured.delay_ms, 1, messages, messages, seconds, projected=True, version=measured.version)


def table(runs: list[Run]) -> str:
    lines = [
        f"| backlog | CSMS answer delay | 1.6 one by one | 1.6 batched ({DEFAULT_PER_REQUEST} per request) | speed-up "
        "| 2.0.1 (one TransactionEvent each) | 2.0.1 / 1.6 one by one "
        f"| 2.0.1 batched ({DEFAULT_PER_REQUEST} per request) | 2.0.1 speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def cell(run: Run) -> str:
        mark = " (projected)" if run.projected else ""
        rate = run.messages / run.seconds
        cpu = f", CPU {run.cpu_ms_per_message:.2f} ms/msg" if run.cpu_ms_per_message is not None else ""
        return f"{_duration(run.seconds)}{mark}, {run.requests} requests, {rate:.0f} msg/s{cpu}"

    keys = sorted({(r.hours, r.delay_ms) for r in runs})
    for hours, delay_ms in keys:
        mine = [r for r in runs if (r.hours, r.delay_ms) == (hours, delay_ms)]
        single = next((r for r in mine if r.version == "1.6" and r.per_request == 1), None)
        batched = next(r for r in mine if r.version == "1.6" and r.per_request > 1)
        v201 = next((r for r in mine if r.version == "2.0.1" and r.per_request == 1), None)
        v201_batched = next(r for r in mine if r.version == "2.0.1" and r.per_request > 1)
        backlog = f"{hours} h, {batched.messages:,} messages"
        row = f"| {backlog} | {delay_ms} ms | {cell(single) if single else '-'} | {cell(batched)}"
        row += f" | {single.seconds / batched.seconds:.1f}x" if single else " | -"
        row += f" | {cell(v201)} | {v201.seconds / single.seconds:.2f}x" if v201 and single else " | - | -"
        row += f" | {cell(v201_batched)}"
        row += f" | {v201.seconds / v201_batched.seconds:.1f}x |" if v201 else " | - |"
        lines.append(row)
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


async def bench(hours_list: list[int], delays_ms: list[int], full: bool, batched_only: bool = False) -> list[Run]:
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="replay-bench-") as tmp:
        work = Path(tmp)
        shortest: dict[tuple[str, int], Run] = {}  # (version, delay) -> the shortest backlog's run, for projections
        for hours in sorted(hours_list):
            backlogs, counts = {}, {}
            for version in ("1.6", "2.0.1"):
                backlogs[version] = work / f"backlog-{hours}h-{version}"
                began = time.perf_counter()
                counts[version] = await build_backlog(backlogs[version], hours, version)
                built_s = time.perf_counter() - began
                print(f"backlog of {hours} h, {version}: {counts[version]:,} messages, built in {built_s:.0f} s")
            for delay_ms in delays_ms:
                runs.append(await drain(backlogs["1.6"], work, hours, delay_ms, DEFAULT_PER_REQUEST))
                batched_s = runs[-1].seconds
                runs.append(await drain(backlogs["2.0.1"], work, hours, delay_ms, DEFAULT_PER_REQUEST, "2.0.1"))
                print(f"  {delay_ms} ms: 2.0.1 batched {runs[-1].seconds:.1f} s", flush=True)
                one_by_one: tuple[str, ...] = () if batched_only else ("1.6", "2.0.1")
                for version in one_by_one:  # one message per request: measured on the shortest backlog
                    key = (version, delay_ms)
                    if full or key not in shortest:
                        single = await drain(backlogs[version], work, hours, delay_ms, 1, version)
                        shortest.setdefault(key, single)
                    else:
                        single = projected(shortest[key], counts[version], hours)
                    runs.append(single)
                    print(f"  {delay_ms} ms: {version} one by one {single.seconds:.1f} s", flush=True)
                print(f"  {delay_ms} ms: 1.6 batched {batched_s:.1f} s", flush=True)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=int, nargs="+", default=[1, 24])
    parser.add_argument("--delays-ms", type=int, nargs="+", default=[0, 25, 50, 100])
    parser.add_argument("--full", action="store_true", help="also drain the long backlogs one by one")
    parser.add_argument("--batched-only", action="store_true", help="leave the one-by-one runs out")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    runs = asyncio.run(bench(args.hours, args.delays_ms, args.full, args.batched_only))
    print()
    print(table(runs))


if __name__ == "__main__":
    main()
