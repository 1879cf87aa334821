"""Benchmark: one poll of every shipped profile through the engine, against a naive baseline.

The baseline is the same engine with reads limited to one value each (what a hand-written
poller does: one request per register). Both run side by side in the same process against the
same loopback simulator, so the ratio is meaningful on a shared, noisy machine.

    .venv/bin/python bench/poll.py [--polls 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from adapters.modbus.codec import width
from adapters.modbus.device import ModbusDevice
from adapters.modbus.profile import Profile, load_profile, profile_names
from adapters.modbus.simulator import ModbusSimulator


class NullSink:
    def apply(self, snapshot: object) -> None:
        pass


def one_value_per_read(profile: Profile) -> Profile:
    widest = max(width(spec) for spec in profile.values.values())
    modbus = profile.modbus.model_copy(update={"max_block_registers": widest, "max_gap_registers": 0})
    return profile.model_copy(update={"modbus": modbus})


async def time_polls(device: ModbusDevice, polls: int) -> list[float]:
    await device.poll_once()  # connect outside the measurement
    samples = []
    for _ in range(polls):
        started = time.perf_counter()
        await device.poll_once()
        samples.append(time.perf_counter() - started)
    device.close()
    return samples


async def bench(polls: int) -> None:
    rows = []
    for name in profile_names():
        profile = load_profile(name)
        async with ModbusSimulator(profile) as simulator:
            devices = {
                kind: ModbusDevice(name, p, host="127.0.0.1", port=simulator.port, sink=NullSink(), timeout_s=2)
                for kind, p in (("engine", profile), ("baseline", one_value_per_read(profile)))
            }
            # interleave the two so both see the same machine load
            results: dict[str, list[float]] = {"engine": [], "baseline": []}
            for _ in range(4):
                for kind, device in devices.items():
                    results[kind] += await time_polls(device, polls // 4)
        engine_ms = statistics.median(results["engine"]) * 1000
        base_ms = statistics.median(results["baseline"]) * 1000
        rows.append(
            (
                name,
                len(devices["engine"].read_blocks),
                len(devices["baseline"].read_blocks),
                engine_ms,
                base_ms,
                base_ms / engine_ms,
            )
        )
    print(f"poll of one device over loopback, median of {polls} polls each (engine vs one-read-per-value baseline)")
    print()
    print("| profile | requests/poll | baseline requests | engine ms | baseline ms | speed-up |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, requests, base_requests, engine_ms, base_ms, ratio in rows:
        print(f"| {name} | {requests} | {base_requests} | {engine_ms:.2f} | {base_ms:.2f} | {ratio:.1f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--polls", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(bench(args.polls))


if __name__ == "__main__":
    main()
