"""Benchmark: from a register change in a simulated charger to the MQTT message that shows it.

A site of 50 one-socket chargers (phoenix-ev-eth simulators) is polled by the real ModbusDevice
tasks into a real Site, which a real MqttBridge publishes to a private Mosquitto. Three processes,
so that CPU% is the gateway's own:

- the farm (``--farm``): the simulators, plus a changer that writes a new value into the power
  register of a random connector ``--rate`` times a second and notes ``time.time()`` of each
  write. Every value is unique per connector, so a message names the change it shows;
- a subscriber (``--subscriber``) on ``<prefix>/connector/+/state`` that notes ``time.time()`` when
  each message arrives;
- this process: the gateway (devices, Site, bridge) and the broker.

Latency = arrival at the subscriber - the write in the simulator, split at the moment the Site
takes the poll (``site``: waiting for the next poll plus the Modbus read; ``mqtt``: the bridge,
the broker and the subscriber's socket). Modes alternate (A B C A B C ...) against the same
farm and broker: the 1 s poll interval asked for, the same at 0.2 s (latency is mostly the wait
for the next poll: what does a 5x faster poll buy, and cost?), and 1 s without the bridge (what
MQTT adds to the gateway's CPU).

    .venv/bin/python bench/mqtt.py [--connectors 50] [--seconds 15] [--rounds 2] [--rate 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from socket import socket
from typing import IO, Any

import aiomqtt

from adapters.modbus.device import ModbusDevice
from adapters.modbus.profile import load_profile
from adapters.modbus.simulator import ModbusSimulator
from adapters.mqtt import MqttBridge
from gateway.domain.events import ConnectorReadingChanged
from gateway.domain.model import Connector
from gateway.services.site import Site

PROFILE = "phoenix-ev-eth"  # one socket, power in W (i32), no watchdog writes that rewrite power
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
# Modes: (label, poll interval s, with the MQTT bridge).
MODES = (("poll 1 s + MQTT", 1.0, True), ("poll 0.2 s + MQTT", 0.2, True), ("poll 1 s, no MQTT", 1.0, False))
# A connector is changed again only after this long, so no change is overwritten before a 1 s poll sees it.
REUSE_AFTER_S = 1.5
TICKS_PER_S = 1 / os.sysconf("SC_CLK_TCK")
QOS = [1]  # of the state topics; --qos changes it


# -- the farm process ----------------------------------------------------------------------------
async def farm(count: int) -> None:
    """Simulators; on ``go SECONDS RATE`` change power registers, then print the changes as JSON."""
    simulators = [ModbusSimulator(PROFILE) for _ in range(count)]
    for simulator in simulators:
        await simulator.start("127.0.0.1", 0)
        simulator.plug_in()
        simulator.start_charging(1_000.0)
    print(json.dumps([s.port for s in simulators]), flush=True)
    loop = asyncio.get_running_loop()
    serial = [0] * count
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        _go, seconds, rate = line.split()
        changes: list[tuple[int, int, float]] = []
        last_change = [0.0] * count
        period, deadline = 1 / float(rate), time.monotonic() + float(seconds)
        next_at = time.monotonic()
        while next_at < deadline:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += period
            now = time.monotonic()
            index = random.choice([i for i in range(count) if now - last_change[i] >= REUSE_AFTER_S])
            serial[index] += 1
            power_w = 2_000 + serial[index]  # unique per connector for the whole run
            simulators[index].set("power_w", power_w)
            changes.append((index + 1, power_w, time.time()))
            last_change[index] = now
        print(json.dumps(changes), flush=True)
    for simulator in simulators:
        await simulator.stop()


# -- the subscriber process ----------------------------------------------------------------------
async def subscriber(port: int) -> None:
    """Note each state message's arrival; on a line from stdin print them as JSON and forget them."""
    seen: list[tuple[str, int, float, float]] = []
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-subscriber") as client:
        await client.subscribe("bench/+/connector/+/state", qos=1)
        print("ready", flush=True)

        async def pump() -> None:
            async for message in client.messages:
                arrived = time.time()
                payload = message.payload if isinstance(message.payload, bytes | bytearray) else b"{}"
                state = json.loads(payload)
                topic = str(message.topic)
                seen.append((topic.split("/")[1], state["connector_id"], state["power_w"], arrived))

        task = asyncio.create_task(pump())
        loop = asyncio.get_running_loop()
        while await loop.run_in_executor(None, sys.stdin.readline):
            print(json.dumps(seen), flush=True)
            seen.clear()
        task.cancel()


# -- the gateway (this process) ------------------------------------------------------------------
@dataclass
class Result:
    total_s: list[float] = field(default_factory=list)
    site_s: list[float] = field(default_factory=list)
    mqtt_s: list[float] = field(default_factory=list)
    changes: int = 0
    lost: int = 0
    cpu_s: float = 0.0
    broker_cpu_s: float = 0.0
    wall_s: float = 0.0


class Child:
    """A child process of this script, spoken to by lines on stdin/stdout."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self._in: IO[str] = self.process.stdin
        self._out: IO[str] = self.process.stdout

    def send(self, line: str) -> None:
        self._in.write(line + "\n")
        self._in.flush()

    async def receive(self) -> Any:
        line = await asyncio.get_running_loop().run_in_executor(None, self._out.readline)
        return json.loads(line) if line.strip() != "ready" else "ready"

    def close(self) -> None:
        self._in.close()
        self.process.wait(timeout=30)


def start_broker(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    with socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    config = workdir / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n")
    broker = subprocess.Popen([MOSQUITTO, "-c", str(config)])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return broker, port
        time.sleep(0.02)
    broker.kill()
    raise RuntimeError("mosquitto did not start")


def process_cpu_s(pid: int) -> float:
    """utime + stime of another process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICKS_PER_S


async def run_mode(
    ports: list[int],
    farm_process: Child,
    watcher: Child,
    broker: subprocess.Popen[bytes],
    broker_port: int,
    mode: tuple[str, float, bool],
    name: str,
    seconds: float,
    rate: float,
) -> Result:
    label, poll_s, with_mqtt = mode
    profile = load_profile(PROFILE)
    site = Site([Connector(i + 1, f"c{i}") for i in range(len(ports))], [])
    devices = [
        ModbusDevice(f"c{i}", profile, host="127.0.0.1", port=port, poll_interval_s=poll_s, timeout_s=2.0, sink=site)
        for i, port in enumerate(ports)
    ]
    prefix = f"bench/{name}"
    bridge = MqttBridge(
        site, host="127.0.0.1", port=broker_port, topic_prefix=prefix, client_id=f"gw-{name}", qos=QOS[0]
    )
    # The moment the Site takes each new power value (the split between polling and MQTT).
    site_times: dict[tuple[int, float], float] = {}
    events = site.subscribe()

    async def note_site_times() -> None:
        async for event in events:
            if isinstance(event, ConnectorReadingChanged):
                power = site.connectors[event.connector_id].reading
                if power is not None and power.power_w is not None:
                    site_times.setdefault((event.connector_id, power.power_w), time.time())

    tasks = [asyncio.create_task(d.run()) for d in devices] + [asyncio.create_task(note_site_times())]
    if with_mqtt:
        tasks.append(asyncio.create_task(bridge.run()))
        await asyncio.wait_for(bridge.connected.wait(), 10)
    await asyncio.sleep(2 * poll_s + 1)  # every device polled and published once: the steady state
    result = Result()
    cpu0, wall0, broker0 = time.process_time(), time.perf_counter(), process_cpu_s(broker.pid)
    farm_process.send(f"go {seconds} {rate}")
    changes = await farm_process.receive()
    await asyncio.sleep(poll_s + 0.5)  # the last changes reach the broker
    result.cpu_s, result.wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
    result.broker_cpu_s = process_cpu_s(broker.pid) - broker0
    watcher.send("dump")
    arrivals: dict[tuple[int, float], float] = {}
    for topic_name, connector_id, power_w, arrived in await watcher.receive():
        if topic_name == name and power_w is not None:
            arrivals.setdefault((connector_id, power_w), arrived)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    result.changes = len(changes)
    for connector_id, power_w, changed in changes:
        seen_by_site = site_times.get((connector_id, float(power_w)))
        arrived = arrivals.get((connector_id, float(power_w)))
        if seen_by_site is not None:
            result.site_s.append(seen_by_site - changed)
        if not with_mqtt:
            result.lost += seen_by_site is None
            continue
        if arrived is None:
            result.lost += 1
            continue
        result.total_s.append(arrived - changed)
        if seen_by_site is not None:
            result.mqtt_s.append(arrived - seen_by_site)
    print(f"  {label}: {result.changes} changes, {100 * result.cpu_s / result.wall_s:.1f} % CPU", file=sys.stderr)
    return result


def percentile(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def ms(values: list[float], q: int) -> str:
    return "-" if not values else f"{percentile(values, q) * 1000:.0f}"


def ms_fine(values: list[float], q: int) -> str:
    return "-" if not values else f"{percentile(values, q) * 1000:.1f}"


async def bench(count: int, seconds: float, rounds: int, rate: float) -> None:
    farm_process = Child("--farm", str(count))
    with tempfile.TemporaryDirectory() as workdir:
        broker, broker_port = start_broker(Path(workdir))
        watcher = Child("--subscriber", str(broker_port))
        try:
            ports = await farm_process.receive()
            assert await watcher.receive() == "ready"
            runs: dict[str, list[Result]] = {mode[0]: [] for mode in MODES}
            for round_no in range(rounds):
                for index, mode in enumerate(MODES):
                    name = f"r{round_no}m{index}"
                    result = await run_mode(
                        ports, farm_process, watcher, broker, broker_port, mode, name, seconds, rate
                    )
                    runs[mode[0]].append(result)
        finally:
            farm_process.close()
            watcher.close()
            broker.terminate()
            broker.wait(timeout=5)
    report(runs, count, seconds, rounds, rate)


def report(runs: dict[str, list[Result]], count: int, seconds: float, rounds: int, rate: float) -> None:
    rows: dict[str, Result] = {}
    for label, results in runs.items():
        total = Result()
        for r in results:
            total.total_s += r.total_s
            total.site_s += r.site_s
            total.mqtt_s += r.mqtt_s
            total.changes += r.changes
            total.lost += r.lost
            total.cpu_s += r.cpu_s
            total.broker_cpu_s += r.broker_cpu_s
            total.wall_s += r.wall_s
        rows[label] = total
    print(
        f"{count} simulated chargers ({PROFILE}, one connector each) over loopback Modbus TCP, Mosquitto "
        f"{mosquitto_version()} on loopback, QoS {QOS[0]} retained; {rate:g} power changes/s on random connectors; "
        f"{rounds} x {seconds:g} s per mode, alternating; {os.cpu_count()} CPUs"
    )
    print()
    print(
        "| mode | change → MQTT p50 ms | p99 ms | of which poll wait + read p50 ms | MQTT path p50 ms | p99 ms "
        "| changes | lost | gateway CPU % | broker CPU % |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, r in rows.items():
        print(
            f"| {label} | {ms(r.total_s, 50)} | {ms(r.total_s, 99)} | {ms(r.site_s, 50)} | "
            f"{ms_fine(r.mqtt_s, 50)} | {ms_fine(r.mqtt_s, 99)} | {r.changes} | {r.lost} | "
            f"{100 * r.cpu_s / r.wall_s:.1f} | {100 * r.broker_cpu_s / r.wall_s:.1f} |"
        )
    one, fast, bare = rows.values()
    print()
    print(
        f"0.2 s vs 1 s poll: p50 latency {percentile(fast.total_s, 50) / percentile(one.total_s, 50):.2f}x, "
        f"gateway CPU {(fast.cpu_s / fast.wall_s) / (one.cpu_s / one.wall_s):.1f}x; "
        f"the MQTT bridge at 1 s costs {100 * (one.cpu_s / one.wall_s - bare.cpu_s / bare.wall_s):.1f} "
        "percentage points of one CPU"
    )


def mosquitto_version() -> str:
    out = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0].removeprefix("mosquitto version ").strip() if out else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connectors", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=float, default=20.0, help="power register changes per second")
    parser.add_argument("--qos", type=int, default=1, choices=(0, 1, 2), help="QoS of the state topics")
    parser.add_argument("--farm", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--subscriber", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    QOS[0] = args.qos
    if args.farm:
        asyncio.run(farm(args.farm))
    elif args.subscriber:
        asyncio.run(subscriber(args.subscriber))
    else:
        asyncio.run(bench(args.connectors, args.seconds, args.rounds, args.rate))


if __name__ == "__main__":
    main()
