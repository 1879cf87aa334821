"""A farm of Modbus simulators in its own process, so the benchmark measures only the gateway.

Prints one JSON line ``[[profile, port], ...]`` once every simulator listens, then serves until
its standard input closes.

    python bench/simulators.py COUNT [KIND [METERS]]

KIND (``charger`` or ``meter``) takes only the profiles of that kind; METERS adds that many
grid meters (an Eastron SDM630) after them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from adapters.modbus.profile import load_profile, profile_names
from adapters.modbus.simulator import ModbusSimulator


async def serve(count: int, kind: str | None = None, meters: int = 0) -> None:
    names = [n for n in profile_names() if kind is None or load_profile(n).kind == kind]
    simulators = [ModbusSimulator(names[i % len(names)]) for i in range(count)]
    simulators += [ModbusSimulator("eastron-sdm630") for _ in range(meters)]
    for simulator in simulators:
        await simulator.start("127.0.0.1", 0)
        if "energy_wh" in simulator.profile.values:
            simulator.set("energy_wh", 1_234_000)
    print(json.dumps([[s.profile.id, s.port] for s in simulators]), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes us
    for simulator in simulators:
        await simulator.stop()


@contextlib.contextmanager
def farm(count: int, kind: str | None = None, meters: int = 0) -> Iterator[list[tuple[str, int]]]:
    """For a benchmark: the farm in its own process while the block runs, as (profile, port) pairs."""
    command = [sys.executable, str(Path(__file__)), str(count), *([kind or "", str(meters)] if meters or kind else [])]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdin is not None and process.stdout is not None
    try:
        yield [(str(p), int(port)) for p, port in json.loads(process.stdout.readline())]
    finally:
        process.stdin.close()
        process.wait(timeout=30)


if __name__ == "__main__":
    arguments = sys.argv[1:]
    kind = arguments[1] if len(arguments) > 1 and arguments[1] else None
    asyncio.run(serve(int(arguments[0]), kind, int(arguments[2]) if len(arguments) > 2 else 0))
