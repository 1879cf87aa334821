"""Benchmark: the local OCPP server's passthrough relay (added latency) and merged mode (throughput).

(a) CALL round trips (a Heartbeat-like CALL, answered ``[3, id, {...}]``) from a raw websocket
    client to a minimal CSMS, directly and through the gateway's passthrough relay, in alternate
    blocks of the same run, so both see the same machine; the table shows what the relay adds.
(b) Merged mode: many chargers connected at once to LocalOcppServer with MergedSessions (the
    ocpp library's schema checks in both directions), each in a transaction, sending MeterValues
    as fast as they are answered: messages/s in total and round-trip percentiles.

Both are run once per upstream version in the same run: the gateway's own station speaks OCPP
1.6 (VirtualChargePoint) or 2.0.1 (ChargingStation201) to the demo CSMS of that version, with a
1 s sample interval, so each merged charger's session goes upstream as it does in ``run`` (1.6
MeterValues, or 2.0.1 TransactionEvents through the outbox on disk). The passthrough relay copies
frames and does not depend on the station's version: its row per version shows it unchanged
with the other station running in the same process.

The CSMSs and the gateway each run in their own process (this file with ``--role``), so the
gateway's CPU% is its own (read with psutil); the clients run here.

    .venv/bin/python bench/proxy.py [--calls 2000] [--block 200] [--chargers 50] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.typing import Subprotocol

OCPP16 = [Subprotocol("ocpp1.6")]
PASSTHROUGH_ID = "BENCH-P"
NOW = "2025-01-01T00:00:00Z"
VERSIONS = ("1.6", "2.0.1")


# -- the processes ---------------------------------------------------------------------------------
async def _until_stdin_closes() -> None:
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def serve_csms() -> None:
    """A minimal CSMS: answers every CALL with a CALLRESULT holding a current time."""

    async def answer(connection: ServerConnection) -> None:
        async for message in connection:
            unique_id = json.loads(message)[1]
            await connection.send(f'[3,"{unique_id}",{{"currentTime":"{NOW}"}}]')

    async with serve(answer, "127.0.0.1", 0, subprotocols=OCPP16) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await _until_stdin_closes()


async def serve_demo_csms(version: str) -> None:
    """The demo CSMS of ``version`` (the ocpp library, schemas checked): the gateway station's back office."""
    from adapters.demo_csms.csms import DemoCsms
    from adapters.demo_csms.csms201 import DemoCsms201

    logging.basicConfig(level=logging.ERROR)
    csms = (DemoCsms201 if version == "2.0.1" else DemoCsms)("127.0.0.1", 0)
    await csms.start()
    print(csms.port, flush=True)
    await _until_stdin_closes()
    await csms.stop()
    counts: dict[str, int] = {}
    for message in csms.received:
        counts[message.action] = counts.get(message.action, 0) + 1
    print(json.dumps(counts), flush=True)  # what the station sent, for the report


def upstream_station(site: Any, version: str, port: int, state: Path) -> Any:
    """The gateway's own station of ``version``, its outbox on disk, sampling every second."""
    from adapters.ocpp201_upstream.station import ChargingStation201
    from adapters.ocpp_upstream.charge_point import VirtualChargePoint
    from adapters.storage.outbox_store import SegmentedOutboxStore
    from gateway.config import UpstreamConfig
    from gateway.services.outbox import Outbox

    settings = UpstreamConfig.model_validate(
        {
            "url": f"ws://127.0.0.1:{port}/ocpp",
            "charge_point_id": "BENCH-GW",
            "ocpp_version": version,
            "meter_value_sample_interval_s": 1,
        }
    )
    station = ChargingStation201 if version == "2.0.1" else VirtualChargePoint
    return station(site, settings, Outbox(SegmentedOutboxStore(state / "outbox")))


async def serve_gateway(csms_port: int, chargers: int, version: str, upstream_port: int) -> None:
    """LocalOcppServer: one passthrough charger towards the CSMS, ``chargers`` merged ones feeding a
    Site as `ocpp-gateway run` does (MergedSessions: statuses and readings into the domain), and
    the Site's own station of ``version`` towards the demo CSMS at ``upstream_port``."""
    from adapters.ocpp_local.merge import MergedSessions
    from adapters.ocpp_local.passthrough import PassthroughRelays
    from adapters.ocpp_local.server import LocalOcppServer
    from gateway.config import OcppChargerConfig, OcppServerConfig
    from gateway.domain.model import Connector
    from gateway.services.site import Site

    logging.basicConfig(level=logging.ERROR)  # not 50 "has no password" warnings
    configs = [OcppChargerConfig(identity=PASSTHROUGH_ID, mode="passthrough", connectors=[1])]
    configs += [OcppChargerConfig(identity=f"BENCH-M{i}", connectors=[i + 2]) for i in range(chargers)]
    relays = PassthroughRelays(f"ws://127.0.0.1:{csms_port}/ocpp", configs)
    with socket.socket() as probe:  # the config wants a real port number: one the OS says is free
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    merged_configs = configs[1:]
    site = Site([Connector(c.connectors[0], c.identity) for c in merged_configs], [])
    merged = MergedSessions(site, merged_configs, 300)
    server = LocalOcppServer(OcppServerConfig(port=port), configs, merged, passthrough=relays)
    with tempfile.TemporaryDirectory() as state:
        station = upstream_station(site, version, upstream_port, Path(state))
        tasks = [asyncio.create_task(station.run()), asyncio.create_task(merged.run())]
        await asyncio.wait_for(station.accepted.wait(), 30)
        await server.start()
        print(server.port, flush=True)
        await _until_stdin_closes()
        await server.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def spawn(*args: str) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__)), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    return process, int(process.stdout.readline())


# -- measuring -------------------------------------------------------------------------------------
@dataclass
class Series:
    round_trips_s: list[float] = field(default_factory=list)
    gateway_cpu_s: float = 0.0
    client_cpu_s: float = 0.0  # this process: the clients (merged mode only)
    wall_s: float = 0.0

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.round_trips_s)
        return 1000 * ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class CpuWatch:
    """CPU seconds and wall time one process (the gateway) spends between ``start()`` and ``stop()``."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self._cpu0 = self._wall0 = 0.0

    def _cpu(self) -> float:
        times = self._process.cpu_times()
        return times.user + times.system

    def start(self) -> None:
        self._cpu0, self._wall0 = self._cpu(), time.perf_counter()

    def stop(self, into: Series) -> None:
        into.gateway_cpu_s += self._cpu() - self._cpu0
        into.wall_s += time.perf_counter() - self._wall0


async def round_trip(ws: ClientConnection, frame: str) -> float:
    started = time.perf_counter()
    await ws.send(frame)
    await ws.recv()
    return time.perf_counter() - started


def heartbeat(n: int) -> str:
    return f'[2,"hb-{n}","Heartbeat",{{}}]'


async def latency(csms_port: int, gateway_port: int, cpu: CpuWatch, calls: int, block: int) -> dict[str, Series]:
    series = {"direct": Series(), "passthrough": Series()}
    urls = {
        "direct": f"ws://127.0.0.1:{csms_port}/ocpp/{PASSTHROUGH_ID}",
        "passthrough": f"ws://127.0.0.1:{gateway_port}/{PASSTHROUGH_ID}",
    }
    async with (
        connect(urls["direct"], subprotocols=OCPP16) as direct,
        connect(urls["passthrough"], subprotocols=OCPP16) as relayed,
    ):
        clients = {"direct": direct, "passthrough": relayed}
        for n in range(200):  # warm up both paths
            await round_trip(direct, heartbeat(n))
            await round_trip(relayed, heartbeat(n))
        n = 0
        while n < calls:
            for label, ws in clients.items():  # alternate blocks: A B A B ...
                cpu.start()
                for i in range(block):
                    series[label].round_trips_s.append(await round_trip(ws, heartbeat(n + i)))
                cpu.stop(series[label])
            n += block
    return series


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def meter_values(n: int, transaction_id: int) -> str:
    """A reading of the session: the register as at its start (no implausible jumps), the power
    changing with every message, so every one is news to the Site, stamped now."""
    sampled = [
        {"value": "1000", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
        {"value": str(7000 + n % 500), "measurand": "Power.Active.Import", "unit": "W"},
    ]
    value = [{"timestamp": now_iso(), "sampledValue": sampled}]
    payload = {"connectorId": 1, "transactionId": transaction_id, "meterValue": value}
    return json.dumps([2, f"mv-{n}", "MeterValues", payload])


async def call_result(ws: ClientConnection, frame: str) -> Any:
    await ws.send(frame)
    return json.loads(await ws.recv())[2]


async def merged_throughput(gateway_port: int, cpu: CpuWatch, chargers: int, seconds: float) -> Series:
    result = Series()
    go, stop = asyncio.Event(), asyncio.Event()

    async def charger(index: int, ready: Callable[[], Awaitable[None]]) -> None:
        url = f"ws://127.0.0.1:{gateway_port}/BENCH-M{index}"
        async with connect(url, subprotocols=OCPP16) as ws:
            await round_trip(ws, '[2,"boot","BootNotification",{"chargePointVendor":"V","chargePointModel":"M"}]')
            start = {"connectorId": 1, "idTag": f"CARD-{index}", "meterStart": 1000, "timestamp": now_iso()}
            answer = await call_result(ws, json.dumps([2, "start", "StartTransaction", start]))
            transaction_id = answer["transactionId"]
            charging = {"connectorId": 1, "errorCode": "NoError", "status": "Charging", "timestamp": now_iso()}
            await round_trip(ws, json.dumps([2, "status", "StatusNotification", charging]))  # as a charger does
            await ready()
            n = 0
            while not stop.is_set():
                elapsed = await round_trip(ws, meter_values(n, transaction_id))
                if go.is_set():
                    result.round_trips_s.append(elapsed)
                n += 1

    connected = 0
    all_connected = asyncio.Event()

    async def ready() -> None:
        nonlocal connected
        connected += 1
        if connected == chargers:
            all_connected.set()

    tasks = [asyncio.create_task(charger(i, ready)) for i in range(chargers)]
    await asyncio.wait_for(all_connected.wait(), 30)
    await asyncio.sleep(1.0)  # every charger in its loop before the clock starts
    client_cpu0 = time.process_time()
    go.set()
    cpu.start()
    await asyncio.sleep(seconds)
    go.clear()
    cpu.stop(result)
    result.client_cpu_s = time.process_time() - client_cpu0
    stop.set()
    await asyncio.gather(*tasks)
    return result


# -- the report ------------------------------------------------------------------------------------
async def run_version(args: argparse.Namespace, version: str) -> tuple[dict[str, Series], Series, dict[str, int]]:
    """Both measurements with the gateway's station on ``version``."""
    csms, csms_port = spawn("--role", "csms")
    upstream, upstream_port = spawn("--role", "demo-csms", "--version", version)
    gateway_args = ["--csms-port", str(csms_port), "--chargers", str(args.chargers), "--version", version]
    gateway, gateway_port = spawn("--role", "gateway", *gateway_args, "--upstream-port", str(upstream_port))
    try:
        cpu = CpuWatch(gateway.pid)
        series = await latency(csms_port, gateway_port, cpu, args.calls, args.block)
        merged = await merged_throughput(gateway_port, cpu, args.chargers, args.seconds)
    finally:
        for process in (gateway, upstream, csms):
            assert process.stdin is not None
            process.stdin.close()
            process.wait(timeout=30)
    assert upstream.stdout is not None
    return series, merged, json.loads(upstream.stdout.readline() or "{}")


async def bench(args: argparse.Namespace) -> None:
    results = {version: await run_version(args, version) for version in VERSIONS}
    print(f"(a) CALL round trips over loopback: {args.calls} per path, alternating blocks of {args.block}")
    print()
    print("| gateway's station | path | p50 ms | p90 ms | p99 ms | max ms | gateway CPU % | added at p99 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for version, (series, _, _) in results.items():
        direct, relayed = series["direct"], series["passthrough"]
        for label, s in series.items():
            cpu_pct = f"{100 * s.gateway_cpu_s / s.wall_s:.1f}" if label == "passthrough" else "-"
            added = f"{relayed.percentile_ms(99) - direct.percentile_ms(99):+.3f} ms" if label == "passthrough" else ""
            print(
                f"| {version} | {label} | {s.percentile_ms(50):.3f} | {s.percentile_ms(90):.3f} | "
                f"{s.percentile_ms(99):.3f} | {max(s.round_trips_s) * 1000:.3f} | {cpu_pct} | {added} |"
            )
    print()
    print(
        f"(b) merged mode: {args.chargers} chargers at once, each in a transaction, MeterValues as fast as "
        f"answered, {args.seconds:g} s; the station samples every second"
    )
    print()
    print("| gateway's station | chargers | messages/s | p50 ms | p99 ms | gateway CPU % | client CPU % | upstream |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for version, (_, merged, sent) in results.items():
        upstream = ", ".join(f"{count} {action}" for action, count in sorted(sent.items()))
        count = len(merged.round_trips_s)
        client_cpu = 100 * merged.client_cpu_s / merged.wall_s
        print(
            f"| {version} | {args.chargers} | {count / merged.wall_s:,.0f} | {merged.percentile_ms(50):.2f} | "
            f"{merged.percentile_ms(99):.2f} | {100 * merged.gateway_cpu_s / merged.wall_s:.1f} | {client_cpu:.1f} | "
            f"{upstream} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--block", type=int, default=200)
    parser.add_argument("--chargers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--role", choices=["csms", "demo-csms", "gateway"], help=argparse.SUPPRESS)
    parser.add_argument("--csms-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--version", choices=VERSIONS, default="1.6", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "csms":
        asyncio.run(serve_csms())
    elif args.role == "demo-csms":
        asyncio.run(serve_demo_csms(args.version))
    elif args.role == "gateway":
        asyncio.run(serve_gateway(args.csms_port, args.chargers, args.version, args.upstream_port))
    else:
        asyncio.run(bench(args))


if __name__ == "__main__":
    main()
