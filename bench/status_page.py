"""Benchmark: what the status page, /api/status and /metrics cost to serve, as a site grows.

The gateway process holds a real Site of N connectors (each charging, with a reading, a session
and a billing meter for every fifth) and the real StatusServer on loopback; a client in a second
process asks each path in turn over one keep-alive connection (rounds alternate the paths, so
noise falls on all of them alike). ``/healthz`` renders nothing and is the baseline: the ratio
says what building the picture and rendering it adds. Reported: latency seen by the client and
the gateway's CPU per request (its process CPU time over the requests it served).

Then the same with the operator's history: a real SQLite history of 50 connectors holding 7 days
of one-minute series and 10,000 sessions over a year (written through the store as the gateway
would), and the history's paths beside the page, again against ``/healthz`` in the same run.

    .venv/bin/python bench/status_page.py [--connectors 10 50 200] [--requests 200]
        [--history-connectors 50] [--history-days 7] [--history-sessions 10000] [--history-requests 50]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.storage.history_db import SqliteHistoryStore  # noqa: E402
from adapters.web.server import StatusServer  # noqa: E402
from gateway.config import StatusPageConfig  # noqa: E402
from gateway.domain.history import (  # noqa: E402
    DeliveryState,
    EventKind,
    HistoryEvent,
    HistoryWrite,
    SeriesSample,
    SessionDelivery,
    SessionNumbered,
    SessionStarted,
    SessionStopped,
)
from gateway.domain.model import ChargerSnapshot, Connector, Meter, MeterSnapshot, Reading, VehicleState  # noqa: E402
from gateway.services.history import History  # noqa: E402
from gateway.services.site import Site  # noqa: E402
from gateway.services.site_picture import SiteLabels  # noqa: E402
from gateway.services.telemetry import Telemetry  # noqa: E402

PATHS = ("/healthz", "/api/status", "/", "/metrics")


def build_site(connectors: int) -> tuple[Site, Telemetry]:
    """A busy site: every connector charging with three phases; a billing meter on every fifth."""
    now = datetime.now(UTC)
    devices = [f"wb-{n:03d}" for n in range(1, connectors + 1)]
    meters = [Meter(f"meter-{n:03d}", n) for n in range(5, connectors + 1, 5)]
    site = Site([Connector(n, devices[n - 1]) for n in range(1, connectors + 1)], meters)
    telemetry = Telemetry([*devices, *(m.name for m in meters)])
    for meter in meters:  # first: a session's meterStart is its billing meter's register
        site.apply(MeterSnapshot(meter.name, Reading(now, energy_wh=500_000, power_w=7_400.0)))
        telemetry.poll_finished(meter.name, 0.004, ok=True)
    for n, device in enumerate(devices, start=1):
        reading = Reading(now, energy_wh=1_000_000 + n, power_w=7_400.0, current_a=(10.7,) * 3, voltage_v=(230.0,) * 3)
        site.apply(ChargerSnapshot(device, 1, reading, VehicleState.C, charging_enabled=True))
        telemetry.poll_finished(device, 0.004, ok=True)
    return site, telemetry


def fill_history(folder: Path, connectors: int, now: datetime, days: int, sessions: int) -> SqliteHistoryStore:
    """``days`` of one-minute series for every connector and the grid meter, ``sessions`` stopped
    sessions spread over the last year, and an event every hour: written as the gateway would,
    through the store, in large batches."""
    store = SqliteHistoryStore(folder)
    first = now.replace(second=0, microsecond=0) - timedelta(days=days)
    batch: list[HistoryWrite] = []

    def add(item: HistoryWrite) -> None:
        batch.append(item)
        if len(batch) >= 20_000:
            store.write(batch)
            batch.clear()

    for minute in range(days * 24 * 60):
        at = first + timedelta(minutes=minute)
        add(SeriesSample(at, 0, 30_000.0 + minute % 600, 9_000_000 + minute * 500, None, 40.0))
        for cid in range(1, connectors + 1):
            charging = (minute // 60 + cid) % 3 != 0
            status = "charging" if charging else "available"
            add(SeriesSample(at, cid, 7_400.0 if charging else 0.0, 1_000_000 + minute * 120, status, 16.0))
    step = timedelta(days=365) / sessions
    for n in range(sessions):
        started = now - timedelta(days=365) + step * n
        ref, cid = f"bench-{n}", n % connectors + 1
        add(SessionStarted(ref, cid, f"wb-{cid:03d}", f"CARD-{n % 200:08d}", started, 1_000_000 + n * 20_000))
        add(
            SessionStopped(
                ref,
                cid,
                f"wb-{cid:03d}",
                f"CARD-{n % 200:08d}",
                started + timedelta(hours=2),
                1_000_000 + n * 20_000 + 14_800,
                "ev_disconnected",
                7_400.0,
            )
        )
        add(SessionNumbered(ref, n + 1))
        add(SessionDelivery(ref, DeliveryState.DELIVERED))
    for hour in range(days * 24):
        add(HistoryEvent(first + timedelta(hours=hour), EventKind.DEVICE_LOST, None, "wb-001", {"reason": "timeout"}))
    store.write(batch)
    return store


def client(port: int, requests: int, paths: Sequence[str]) -> None:
    """The second process: ``requests`` rounds over ``paths``, one connection; prints JSON timings."""
    connection = http.client.HTTPConnection("127.0.0.1", port)
    timings: dict[str, list[float]] = {path: [] for path in paths}
    sizes: dict[str, int] = {}
    for _ in range(requests):
        for path in paths:
            started = time.perf_counter()
            connection.request("GET", path)
            answer = connection.getresponse()
            body = answer.read()
            timings[path].append(time.perf_counter() - started)
            assert answer.status == 200, (path, answer.status, body[:200])
            sizes[path] = len(body)
    print(json.dumps({"timings": timings, "sizes": sizes}))


Row = tuple[str, float, float, float, float, int]  # path, p50, p99, max (ms), gateway CPU s, bytes


async def measure(
    connectors: int, requests: int, history: History | None = None, paths: Sequence[str] = PATHS
) -> list[Row]:
    site, telemetry = build_site(connectors)
    config = StatusPageConfig(port=18080 + connectors)
    server = StatusServer(site, telemetry, config, SiteLabels("bench"), history=history)
    await server.start()
    try:
        cpu_before = time.process_time()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--client",
            str(server.port),
            "--requests",
            str(requests),
            "--paths",
            *paths,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await process.communicate()
        cpu_s = time.process_time() - cpu_before
    finally:
        await server.stop()
    result = json.loads(out)
    rows = []
    for path in paths:
        times = sorted(result["timings"][path])
        p50 = statistics.median(times) * 1000
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))] * 1000
        rows.append((path, p50, p99, times[-1] * 1000, cpu_s, result["sizes"][path]))
    return rows


async def measure_history(connectors: int, requests: int, days: int, sessions: int) -> tuple[list[Row], float, int]:
    """The status server of ``connectors`` with ``days`` of series and ``sessions`` sessions on
    disk. Returns the rows, the seconds the filling took and the file's size."""
    now = datetime.now(UTC)
    since_month = (now - timedelta(days=30)).date().isoformat()
    paths = [
        *PATHS,
        "/api/sessions",  # the newest 1000
        f"/api/sessions?connector=7&since={since_month}",
        f"/api/sessions.csv?since={since_month}",
        "/api/events",
        "/api/series?connector=7",  # one connector's day
        f"/api/series?since={(now - timedelta(hours=1)).isoformat(timespec='seconds').replace('+00:00', 'Z')}",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "history"
        started = time.perf_counter()
        store = fill_history(folder, connectors, now, days, sessions)
        filled_s = time.perf_counter() - started
        size = sum(path.stat().st_size for path in folder.iterdir())
        site_history = History(Site([], []), store)  # (only its reads are used: nothing runs it)
        try:
            rows = await measure(connectors, requests, site_history, paths)
        finally:
            store.close()
    return rows, filled_s, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connectors", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--history-connectors", type=int, default=50)
    parser.add_argument("--history-days", type=int, default=7)
    parser.add_argument("--history-sessions", type=int, default=10_000)
    parser.add_argument("--history-requests", type=int, default=50)
    parser.add_argument("--client", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--paths", nargs="+", default=list(PATHS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.disable(logging.INFO)  # the Site says every connector's change of status: not the point here
    if args.client is not None:
        client(args.client, args.requests, args.paths)
        return
    print("| connectors | path | p50 ms | p99 ms | p50 / healthz | bytes |")
    print("|---:|---|---:|---:|---:|---:|")
    for connectors in args.connectors:
        rows = asyncio.run(measure(connectors, args.requests))
        baseline = rows[0][1]
        for path, p50, p99, _max, _cpu, size in rows:
            print(f"| {connectors} | `{path}` | {p50:.2f} | {p99:.2f} | {p50 / baseline:.1f}x | {size:,} |")
        total_cpu_ms = rows[0][4] * 1000 / (args.requests * len(PATHS))
        print(f"| {connectors} | (gateway CPU per request, all paths) | {total_cpu_ms:.2f} | | | |")
    if args.history_connectors <= 0:
        return
    connectors, days, sessions = args.history_connectors, args.history_days, args.history_sessions
    rows, filled_s, size = asyncio.run(measure_history(connectors, args.history_requests, days, sessions))
    print()
    print(
        f"With the history: {connectors} connectors, {days} days of one-minute series "
        f"({days * 1440 * (connectors + 1):,} rows), {sessions:,} sessions over a year; "
        f"file {size / 1e6:.1f} MB, written in {filled_s:.1f} s; {args.history_requests} rounds"
    )
    print()
    print("| path | p50 ms | p99 ms | max ms | p50 / healthz | bytes |")
    print("|---|---:|---:|---:|---:|---:|")
    baseline = rows[0][1]
    for path, p50, p99, most, _cpu, size in rows:
        shown = path.split("?")[0] + (" ?" + path.split("?")[1].split("=")[0] + "=..." if "?" in path else "")
        shown = path if len(path) < 60 else shown
        print(f"| `{shown}` | {p50:.2f} | {p99:.2f} | {most:.2f} | {p50 / baseline:.1f}x | {size:,} |")


if __name__ == "__main__":
    main()
