"""A farm of Modbus simulators in its own process, so the benchmark measures only the gateway.

Prints one JSON line ``[[profile, port], ...]`` once every simulator listens, then serves until
its standard input closes.

    python bench/simulators.py COUNT
"""

from __future__ import annotations

import asyncio
import json
import sys

from adapters.modbus.profile import profile_names
from adapters.modbus.simulator import ModbusSimulator


async def serve(count: int) -> None:
    names = profile_names()
    simulators = [ModbusSimulator(names[i % len(names)]) for i in range(count)]
    for simulator in simulators:
        await simulator.start("127.0.0.1", 0)
        if "energy_wh" in simulator.profile.values:
            simulator.set("energy_wh", 1_234_000)
    print(json.dumps([[s.profile.id, s.port] for s in simulators]), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes us
    for simulator in simulators:
        await simulator.stop()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
