"""``ocpp-gateway demo``: a whole simulated site on this machine, with a live table.

It starts a Modbus simulator for every device in the config (built from the same profiles the
gateway reads), the built-in CSMS (unless ``--csms-url``), an embedded MQTT broker when none
answers at the configured address (unless ``--mqtt``), and the gateway itself; a small script
plugs cars in and out so values move.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import urlsplit

from adapters.demo_csms.csms import DemoCsms
from adapters.modbus.profile import load_profile
from adapters.modbus.sim_charger import NOMINAL_VOLTAGE_V
from adapters.modbus.simulator import ModbusSimulator
from adapters.mqtt.embedded_broker import EmbeddedBroker, broker_answers
from gateway.app import Gateway, site_labels
from gateway.config import ChargerConfig, GatewayConfig, parse_config
from gateway.domain.errors import ConfigError
from gateway.services.site_picture import site_picture
from gateway.status_text import render

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
TICK_S = 1.0
SITE_BASE_LOAD_W = 2_500.0


class DemoError(Exception):
    """Something the user can fix (a busy port, a remote device address); printed without a traceback."""


@dataclass
class _Car:
    """One simulated car on one charger socket: arrives, charges, leaves."""

    simulator: ModbusSimulator
    socket: int
    power_w: float
    phase: str = "away"
    left_s: float = 0.0

    def step(self, rng: random.Random) -> None:
        self.left_s -= TICK_S
        if self.left_s > 0:
            return
        if self.phase == "away":
            self.simulator.plug_in(socket=self.socket)
            self.phase, self.left_s = "plugged", rng.uniform(3, 6)
        elif self.phase == "plugged":
            self.simulator.start_charging(self.power_w, socket=self.socket)
            self.phase, self.left_s = "charging", rng.uniform(25, 45)
        elif self.phase == "charging":
            self.simulator.stop_charging(socket=self.socket)
            self.phase, self.left_s = "full", rng.uniform(4, 8)
        else:
            self.simulator.unplug(socket=self.socket)
            self.phase, self.left_s = "away", rng.uniform(8, 20)


def with_overrides(config: GatewayConfig, csms_url: str | None, mqtt: str | None) -> GatewayConfig:
    """The config with the demo's command-line overrides applied and validated again."""
    data: dict[str, Any] = config.model_dump(mode="python", exclude_unset=True)
    for section in ("upstream", "mqtt"):
        for key, value in list(data.setdefault(section, {}).items()):
            if hasattr(value, "get_secret_value"):
                data[section][key] = value.get_secret_value()
    # A simulated site keeps what a CSMS changes only for this run, not in the working directory.
    data.setdefault("site", {})["state_dir"] = tempfile.mkdtemp(prefix="ocpp-gateway-demo-")
    if csms_url:
        data["upstream"]["url"] = csms_url
    if mqtt:
        host, _, port = mqtt.rpartition(":")
        if not host or not port.isdigit():
            raise DemoError(f"--mqtt must be HOST:PORT, got {mqtt!r}")
        data["mqtt"]["host"], data["mqtt"]["port"] = host, int(port)
    try:
        return parse_config(data)
    except ConfigError as exc:
        raise DemoError("; ".join(f"{k}: {r}" for k, r in exc.problems)) from None


async def _start_simulators(config: GatewayConfig) -> dict[str, ModbusSimulator]:
    simulators: dict[str, ModbusSimulator] = {}
    for device in [*config.chargers, *config.meters]:
        if device.serial is not None or device.host not in LOCAL_HOSTS:
            where = f"serial = {device.serial!r}" if device.serial is not None else f"host = {device.host!r}"
            raise DemoError(f"the demo simulates Modbus TCP devices on 127.0.0.1; {device.name} has {where}")
        sockets = len(device.connectors) if isinstance(device, ChargerConfig) else 1
        simulator = ModbusSimulator(load_profile(device.profile), unit_id=device.unit_id, sockets=sockets)
        try:
            await simulator.start("127.0.0.1", device.port, framer=device.framer)
        except OSError as exc:
            raise DemoError(f"cannot simulate {device.name} on port {device.port}: {exc.strerror or exc}") from None
        if "energy_wh" in simulator.profile.values:  # a lived-in site: registers do not start at zero
            simulator.set("energy_wh", 250_000 + 7_919 * len(device.name) ** 2)
        simulators[device.name] = simulator
    return simulators


async def _drive(config: GatewayConfig, simulators: dict[str, ModbusSimulator], seed: int = 1) -> None:
    """Plug cars in and out and advance every simulator's energy counters once a second; the site
    meter sees the building and what the chargers really draw, per phase (load management reads it)."""
    rng = random.Random(seed)
    cars = [
        _Car(simulators[charger.name], socket, power_w=rng.choice([3_680.0, 7_360.0, 11_040.0]), left_s=2 + 6 * i)
        for i, charger in enumerate(config.chargers)
        for socket in range(1, len(charger.connectors) + 1)
    ]
    meters = [simulators[m.name] for m in config.meters]
    while True:
        for car in cars:
            car.step(rng)
        building_w = SITE_BASE_LOAD_W + rng.uniform(-300, 300)
        phases_a = [building_w / NOMINAL_VOLTAGE_V / 3] * 3
        chargers_w = 0.0
        for car in cars:
            drawn = car.simulator.get("current_a", car.socket)
            for phase, amps in enumerate(drawn if isinstance(drawn, tuple) else ()):
                phases_a[phase] += amps if isinstance(amps, int | float) else 0.0
            power = car.simulator.get("power_w", car.socket)
            chargers_w += power if isinstance(power, int | float) else 0.0
        for meter in meters:
            meter.set("power_w", building_w + chargers_w)
            meter.set("current_a", [round(a, 2) for a in phases_a])
        for simulator in simulators.values():
            simulator.tick(TICK_S)
        await asyncio.sleep(TICK_S)


class _LogTail(logging.Handler):
    """Keeps the last lines of the log to show under the live table."""

    def __init__(self, size: int = 10) -> None:
        super().__init__()
        self.lines: collections.deque[str] = collections.deque(maxlen=size)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def render_table(gateway: Gateway, page: str, csms_note: str, mqtt_note: str) -> str:
    """The same picture as ``ocpp-gateway status`` and the status page, taken in this process."""
    picture = site_picture(gateway.site, gateway.telemetry, site_labels(gateway.config))
    return f"ocpp-gateway demo: status page {page}\n" + render(picture, csms_note, mqtt_note)


async def _show(gateway: Gateway, tail: _LogTail, notes: tuple[str, str, str], out: TextIO) -> None:
    tty = out.isatty()
    while True:
        table = render_table(gateway, *notes)
        if tty:
            log_lines = "\n".join(f"  {line}" for line in tail.lines)
            out.write(f"\x1b[H\x1b[2J{table}\n\n  recent log:\n{log_lines}\n\n  Ctrl-C to stop\n")
        else:
            out.write(f"{table}\n\n")
        out.flush()
        await asyncio.sleep(1.0 if tty else 5.0)


async def run_demo(
    config: GatewayConfig,
    *,
    csms_url: str | None = None,
    mqtt: str | None = None,
    duration_s: float | None = None,
    out: TextIO = sys.stdout,
) -> None:
    """Run the simulated site until Ctrl-C (or ``duration_s``)."""
    config = with_overrides(config, csms_url, mqtt)
    tail = _LogTail()
    if out.isatty():  # the table owns the screen; log lines go under it
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        root.addHandler(tail)
    logging.getLogger("adapters.demo_csms").setLevel(logging.INFO)

    async with contextlib.AsyncExitStack() as stack:
        simulators = await _start_simulators(config)
        for simulator in simulators.values():
            stack.push_async_callback(simulator.stop)

        csms_note = "external"
        if not csms_url:
            parts = urlsplit(config.upstream.url)
            csms = DemoCsms(parts.hostname or "127.0.0.1", parts.port or 80)
            try:
                await csms.start()
            except OSError as exc:
                raise DemoError(f"cannot start the demo CSMS on port {parts.port}: {exc.strerror or exc}") from None
            stack.push_async_callback(csms.stop)
            csms_note = "built-in demo CSMS"

        mqtt_note = "external broker"
        if not mqtt and not await broker_answers(config.mqtt.host, config.mqtt.port):
            if config.mqtt.host not in LOCAL_HOSTS:
                raise DemoError(f"no MQTT broker answers at {config.mqtt.host}:{config.mqtt.port}")
            broker = EmbeddedBroker(config.mqtt.host, config.mqtt.port)
            await broker.start()
            stack.push_async_callback(broker.stop)
            mqtt_note = "embedded broker"

        gateway = Gateway.build(config)
        try:
            await gateway.listen()
        except ConfigError as exc:
            raise DemoError("; ".join(f"{k}: {r}" for k, r in exc.problems)) from None
        page = "off"
        if gateway.status_page is not None:  # a taken port: the page says so in the log and keeps trying
            page = gateway.status_page.url if gateway.status_page.port else "not served (port in use)"
        async with asyncio.TaskGroup() as tasks:
            run = tasks.create_task(gateway.run())
            driver = tasks.create_task(_drive(config, simulators))
            show = tasks.create_task(_show(gateway, tail, (page, csms_note, mqtt_note), out))
            if duration_s is not None:
                await asyncio.sleep(duration_s)
                out.write(render_table(gateway, page, csms_note, mqtt_note) + "\n")
                for task in (run, driver, show):
                    task.cancel()
