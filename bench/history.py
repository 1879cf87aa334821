"""Benchmark: what keeping the operator's history costs a polling gateway, per minute.

A site of 50 simulated Modbus chargers and a grid meter (bench/simulators.py, in their own
process so that the CPU measured is the gateway's) is polled at 1 Hz into a real Site, as
``bench/poll.py`` does: that is the gateway's idle work. Two modes alternate in rounds of the same
run (A B A B ...), so the ratio holds on a shared, noisy machine:

* ``polling only``: no history (``[history] enabled = false``);
* ``polling + history``: the real ``History`` service on a real ``SqliteHistoryStore`` in a
  temporary folder: every event the polls cause is taken once a second, the one-minute series
  (51 rows) is written at each minute mark, one transaction per second, fsynced.

Reported: the gateway's CPU in each mode, the history's own CPU (its calls on the event loop plus
its writer thread, timed with ``thread_time``) per minute and against the idle CPU, the write
latency (one transaction, fsync included), and the bytes the file and its WAL grow by per minute.

    .venv/bin/python bench/history.py [--chargers 50] [--seconds 120] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from poll import POLL_INTERVAL_S, Result, percentile, poll_forever
from simulators import farm

from adapters.modbus.device import ModbusDevice
from adapters.modbus.profile import load_profile
from adapters.storage.history_db import SqliteHistoryStore
from gateway.domain.history import HistoryWrite
from gateway.domain.model import Connector, Meter
from gateway.services.history import History
from gateway.services.site import Site


@dataclass
class HistoryCost:
    """What the history itself spent: CPU on the loop and in its writer, each write's latency."""

    loop_cpu_s: float = 0.0
    writer_cpu_s: float = 0.0
    writes_s: list[float] = field(default_factory=list)
    rows: int = 0


class MeasuredHistory(History):
    """The real History, with its three pieces of work timed (nothing else changed)."""

    def __init__(self, site: Site, store: SqliteHistoryStore, cost: HistoryCost) -> None:
        super().__init__(site, store)
        self.cost = cost

    def take_events(self) -> None:
        started = time.thread_time()
        super().take_events()
        self.cost.loop_cpu_s += time.thread_time() - started

    def sample_series(self, now):  # type: ignore[no-untyped-def]
        started = time.thread_time()
        super().sample_series(now)
        self.cost.loop_cpu_s += time.thread_time() - started

    def _write(self, batch: list[HistoryWrite]) -> OSError | None:
        cpu, wall = time.thread_time(), time.perf_counter()
        error = super()._write(batch)
        self.cost.writes_s.append(time.perf_counter() - wall)
        self.cost.writer_cpu_s += time.thread_time() - cpu
        self.cost.rows += len(batch)
        return error


def build(farm: list[tuple[str, int]]) -> tuple[Site, list[ModbusDevice]]:
    """Connectors 1..N for the chargers; the one meter is the grid meter (connector 0)."""
    devices, connectors, meters = [], [], []
    for index, (profile_id, port) in enumerate(farm):
        profile = load_profile(profile_id)
        name = f"d{index}"
        if profile.kind == "charger":
            connectors.append(Connector(len(connectors) + 1, name))
        else:
            meters.append(Meter(name, 0))
        devices.append(ModbusDevice(name, profile, host="127.0.0.1", port=port, timeout_s=2.0, sink=None))  # type: ignore[arg-type]
    return Site(connectors, meters), devices


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.iterdir())


async def run_mode(farm: list[tuple[str, int]], with_history: bool, seconds: float) -> tuple[Result, HistoryCost, int]:
    site, devices = build(farm)
    result = Result(requests_per_cycle=sum(len(d.read_blocks) for d in devices))
    cost = HistoryCost()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "history"
        history = MeasuredHistory(site, SqliteHistoryStore(folder), cost) if with_history else None
        for device in devices:  # connect outside the measurement
            for snapshot in await device.poll_once():
                site.apply(snapshot)
        tasks = [
            asyncio.create_task(poll_forever(d, site, result, POLL_INTERVAL_S * i / len(devices)))
            for i, d in enumerate(devices)
        ]
        if history is not None:
            await history.flush()  # the file exists before the measurement: growth only
            tasks.append(asyncio.create_task(history.run()))
        size_before = folder_bytes(folder) if history is not None else 0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        result.cpu_s, result.wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
        grown = folder_bytes(folder) - size_before if history is not None else 0
        for task in tasks:
            task.cancel()
        # (bounded: a pymodbus read that meets an answer it did not ask for can ignore the cancel)
        await asyncio.wait(tasks, timeout=10)
        for device in devices:
            device.close()
    return result, cost, grown


async def bench(farm: list[tuple[str, int]], seconds: float, rounds: int) -> None:
    chargers = sum(1 for p, _ in farm if load_profile(p).kind == "charger")
    idle: list[Result] = []
    kept: list[tuple[Result, HistoryCost, int]] = []
    for _ in range(rounds):
        idle.append((await run_mode(farm, False, seconds))[0])
        kept.append(await run_mode(farm, True, seconds))
    minutes = sum(r.wall_s for r, _, _ in kept) / 60
    idle_cpu = sum(r.cpu_s for r in idle) / sum(r.wall_s for r in idle)
    with_cpu = sum(r.cpu_s for r, _, _ in kept) / sum(r.wall_s for r, _, _ in kept)
    loop_s = sum(c.loop_cpu_s for _, c, _ in kept)
    writer_s = sum(c.writer_cpu_s for _, c, _ in kept)
    writes = sorted(w for _, c, _ in kept for w in c.writes_s)
    rows = sum(c.rows for _, c, _ in kept)
    grown = sum(g for _, _, g in kept)
    idle_per_minute_ms = idle_cpu * 60_000
    history_per_minute_ms = (loop_s + writer_s) * 1000 / minutes
    print(
        f"{chargers} simulated chargers and a grid meter polled at 1 Hz over loopback; "
        f"{rounds} x {seconds:g} s per mode, alternating"
    )
    print()
    print("| | polling only | polling + history |")
    print("|---|---:|---:|")
    print(f"| gateway CPU | {100 * idle_cpu:.1f} % | {100 * with_cpu:.1f} % |")
    print(f"| gateway CPU per minute | {idle_per_minute_ms:,.0f} ms | {with_cpu * 60_000:,.0f} ms |")
    print(f"| history's own CPU per minute (loop + writer) | | {history_per_minute_ms:.1f} ms |")
    print(f"| ... of which the writer thread (SQLite, fsync) | | {writer_s * 1000 / minutes:.1f} ms |")
    print(f"| history's CPU against the idle gateway's | | {100 * history_per_minute_ms / idle_per_minute_ms:.1f} % |")
    print(f"| rows written per minute | | {rows / minutes:,.0f} |")
    print(f"| write (one transaction, fsync) p50 / p99 | | {_ms(writes, 50)} / {_ms(writes, 99)} ms |")
    print(f"| transactions per minute | | {len(writes) / minutes:.0f} |")
    print(f"| file + WAL growth per minute | | {grown / minutes / 1024:,.1f} kB |")
    polls_idle, polls_kept = _polls(idle), _polls(r for r, _, _ in kept)
    print(f"| poll p50 | {_ms(polls_idle, 50)} ms | {_ms(polls_kept, 50)} ms |")


def _polls(results: object) -> list[float]:
    return sorted(p for r in results for p in r.polls_s)  # type: ignore[attr-defined]


def _ms(values: list[float], q: int) -> str:
    return f"{percentile(values, q) * 1000:.2f}" if values else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chargers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=120.0, help="per mode and round (a minute mark or two)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    logging.disable(logging.INFO)  # the Site says every connector's change of status: not the point here
    with farm(args.chargers, "charger", 1) as devices:
        asyncio.run(bench(devices, args.seconds, args.rounds))


if __name__ == "__main__":
    main()
