"""Benchmark: a site of 50 simulated Modbus devices polled at 1 Hz, batched reads vs one request per value.

The simulators run in a separate process (bench/simulators.py) so that CPU% is the gateway's
own. Both modes run in the same process against the same simulators, alternating in rounds
(A B A B ...), so the ratio holds on a shared, noisy machine. Each device is polled by its own
task once a second, as ``ModbusDevice.run`` does, and its snapshots go into a real Site.

    .venv/bin/python bench/poll.py [--devices 50] [--seconds 10] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass, field

from simulators import farm

from adapters.modbus.codec import width
from adapters.modbus.device import ModbusDevice
from adapters.modbus.profile import Profile, load_profile
from gateway.domain.model import Connector, Meter
from gateway.services.site import Site

POLL_INTERVAL_S = 1.0


def one_value_per_read(profile: Profile) -> Profile:
    """The baseline: what a hand-written poller does, one request per mapped value."""
    widest = max(width(spec) for spec in profile.values.values())
    modbus = profile.modbus.model_copy(update={"max_block_registers": widest, "max_gap_registers": 0})
    return profile.model_copy(update={"modbus": modbus})


@dataclass
class Result:
    polls_s: list[float] = field(default_factory=list)
    failures: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    requests_per_cycle: int = 0


def build(farm: list[tuple[str, int]], baseline: bool) -> tuple[Site, list[ModbusDevice]]:
    devices, connectors, meters = [], [], []
    for index, (profile_id, port) in enumerate(farm):
        profile = load_profile(profile_id)
        name = f"d{index}"
        if profile.kind == "charger":
            connectors.append(Connector(len(connectors) + 1, name))
        else:
            meters.append(Meter(name))
        site_profile = one_value_per_read(profile) if baseline else profile
        devices.append(ModbusDevice(name, site_profile, host="127.0.0.1", port=port, timeout_s=2.0, sink=None))  # type: ignore[arg-type]
    return Site(connectors, meters), devices


async def poll_forever(device: ModbusDevice, site: Site, result: Result, offset_s: float) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(offset_s)  # spread the devices over the second, as independent pollers drift
    while True:
        started = loop.time()
        try:
            snapshots = await device.poll_once()
        except Exception:
            result.failures += 1
        else:
            result.polls_s.append(loop.time() - started)
            for snapshot in snapshots:
                site.apply(snapshot)
        await asyncio.sleep(max(0.0, POLL_INTERVAL_S - (loop.time() - started)))


async def run_mode(farm: list[tuple[str, int]], baseline: bool, seconds: float) -> Result:
    site, devices = build(farm, baseline)
    result = Result(requests_per_cycle=sum(len(d.read_blocks) for d in devices))
    for device in devices:  # connect outside the measurement
        await device.poll_once()
    tasks = [
        asyncio.create_task(poll_forever(d, site, result, POLL_INTERVAL_S * i / len(devices)))
        for i, d in enumerate(devices)
    ]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    result.cpu_s, result.wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for device in devices:
        device.close()
    return result


def merge(results: list[Result]) -> Result:
    total = Result(requests_per_cycle=results[0].requests_per_cycle)
    for r in results:
        total.polls_s += r.polls_s
        total.failures += r.failures
        total.cpu_s += r.cpu_s
        total.wall_s += r.wall_s
    return total


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


async def bench(farm: list[tuple[str, int]], seconds: float, rounds: int) -> None:
    count = len(farm)
    runs: dict[str, list[Result]] = {"batched (engine)": [], "one request per value": []}
    for _ in range(rounds):
        for label in runs:
            runs[label].append(await run_mode(farm, label.startswith("one"), seconds))
    profiles = sorted({p for p, _ in farm})
    print(
        f"{count} simulated devices ({len(profiles)} profiles) polled at 1 Hz over loopback, "
        f"{rounds} x {seconds:g} s per mode, alternating"
    )
    print()
    print("| mode | requests/cycle | poll p50 ms | poll p99 ms | polls | failures | gateway CPU % |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    rows = {label: merge(results) for label, results in runs.items()}
    for label, r in rows.items():
        print(
            f"| {label} | {r.requests_per_cycle} | {percentile(r.polls_s, 50) * 1000:.2f} | "
            f"{percentile(r.polls_s, 99) * 1000:.2f} | {len(r.polls_s)} | {r.failures} | "
            f"{100 * r.cpu_s / r.wall_s:.1f} |"
        )
    batched, baseline = rows.values()
    print()
    print(
        f"baseline / batched: requests {baseline.requests_per_cycle / batched.requests_per_cycle:.1f}x, "
        f"p50 {percentile(baseline.polls_s, 50) / percentile(batched.polls_s, 50):.1f}x, "
        f"CPU {(baseline.cpu_s / baseline.wall_s) / (batched.cpu_s / batched.wall_s):.1f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with farm(args.devices) as devices:
        asyncio.run(bench(devices, args.seconds, args.rounds))


if __name__ == "__main__":
    main()
