"""``ocpp-gateway demo``: a whole simulated site on this machine, with a live table.

It starts a Modbus simulator for every device in the config (built from the same profiles the
gateway reads), the built-in CSMS (unless ``--csms-url``), an embedded MQTT broker when none
answers at the configured address (unless ``--mqtt``), and the gateway itself; a small script
plugs cars in and out so values move, and the site meter sees the building plus what the cars
draw, so that the shipped site's load management has something to share.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import random
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from adapters.demo_csms.csms import DemoCsms
from adapters.demo_csms.csms201 import DemoCsms201
from adapters.modbus.profile import load_profile
from adapters.modbus.sim_charger import NOMINAL_VOLTAGE_V
from adapters.modbus.simulator import ModbusSimulator
from adapters.mqtt.embedded_broker import EmbeddedBroker, broker_answers
from gateway.app import Gateway, site_labels
from gateway.config import ChargerConfig, GatewayConfig, parse_config
from gateway.demo_fault import DEMO_FAULT, FaultSchedule, overheating_charger
from gateway.domain.errors import ConfigError
from gateway.services.site_picture import site_picture
from gateway.status_text import render

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
TICK_S = 1.0  # the script: cars arrive, start, finish and leave, and the building's load changes
STEP_S = 0.2  # the electrics: each car's current and the site meter follow five times a second
# A car moves its current towards what its charger offers at most this fast (A per second, per
# phase): a real car takes a second or more to follow a new offer (IEC 61851-1 gives it 5 s) and
# tapers off at the end of its charge. A car that jumped would show its new current at its charger
# up to a poll before the site meter shows it, and the gateway would take the step for building
# load (held for building_hold_s): a cut would then breed another cut, and the demo would pause cars.
CAR_RAMP_A_PER_S = 3.0
# The building behind the demo's 25 A connection (a small office with the carport): 2.5 kW on
# average, spread over the three phases, wandering by up to 0.3 kW from second to second:
# 3.2 to 4.1 A per phase, so one 11 kW car (16 A) fits beside it and two cars must share.
SITE_BASE_LOAD_W = 2_500.0
SITE_LOAD_WANDER_W = 300.0


class DemoError(Exception):
    """Something the user can fix (a busy port, a remote device address); printed without a traceback."""


@dataclass
class _Car:
    """One simulated car on one charger socket: arrives, charges, leaves.

    While it charges it draws what its charger offers, up to its own maximum, and gets there at
    ``CAR_RAMP_A_PER_S``; when it is full (or paused) its current runs down the same way, and it
    leaves only once it draws nothing."""

    simulator: ModbusSimulator
    socket: int
    power_w: float  # what it takes when offered enough, spread over its charger's phases
    phase: str = "away"
    left_s: float = 0.0
    current_a: float = 0.0  # what it draws now on each of its charger's phases

    @property
    def phases(self) -> int:
        spec = self.simulator.profile.values.get("current_a")
        return spec.phases if spec is not None else 1

    @property
    def max_a(self) -> float:
        """The most it draws per phase (A): an 11 kW car on a three-phase charger takes 16 A."""
        return self.power_w / NOMINAL_VOLTAGE_V / self.phases

    def step(self, rng: random.Random) -> None:
        """The script, once a ``TICK_S``: plug in, start, finish, leave, each after a while. A car
        whose charger has tripped gets no energy: its time to charge waits for the charger."""
        if not (self.phase == "charging" and self.simulator.charger_state(self.socket).tripped):
            self.left_s -= TICK_S
        if self.left_s > 0:
            return
        if self.phase == "away":
            self.simulator.plug_in(socket=self.socket)
            self.phase, self.left_s = "plugged", rng.uniform(3, 6)
        elif self.phase == "plugged":
            self.phase, self.left_s = "charging", rng.uniform(25, 45)
        elif self.phase == "charging":
            self.phase, self.left_s = "full", rng.uniform(4, 8)
        elif self.current_a == 0:  # full and no longer drawing: it leaves
            self.simulator.draw(None, socket=self.socket)
            self.simulator.unplug(socket=self.socket)
            self.phase, self.left_s = "away", rng.uniform(8, 20)

    def follow(self, seconds: float) -> None:
        """Let ``seconds`` pass: the car's current moves towards what it wants now, and its
        charger shows it (current per phase, power, vehicle state)."""
        if self.phase == "away":
            return
        if self.simulator.charger_state(self.socket).tripped:  # its charger opened the contactor: nothing flows
            self.current_a = 0.0
        offered = self.simulator.offered_current_a(self.socket)
        wants = self.phase == "charging" and self.simulator.may_charge(self.socket)
        target = (self.max_a if offered is None else min(self.max_a, offered)) if wants else 0.0
        room = CAR_RAMP_A_PER_S * seconds
        if target >= self.current_a:
            self.current_a = min(target, self.current_a + room)
        else:
            self.current_a = max(target, self.current_a - room)
        self.simulator.draw([self.current_a] * self.phases, socket=self.socket)


class DemoSite:
    """The demo's simulated site: its cars, its building and what its site meters measure.

    ``tick`` runs the script once a ``TICK_S``; ``step`` advances the electrics by a few tenths of
    a second. Every meter sees the building plus what the chargers show they draw, per phase, in
    the same step as the chargers change, so that load management reads a site that adds up.
    Now and then one charger overheats (``fault``, on the script's own seconds: gateway.demo_fault).
    """

    def __init__(
        self,
        config: GatewayConfig,
        simulators: dict[str, ModbusSimulator],
        seed: int = 1,
        fault: FaultSchedule | None = DEMO_FAULT,
    ) -> None:
        self.rng = random.Random(seed)
        self.elapsed_s = 0.0  # how far the electrics have been stepped
        self.cars = [
            _Car(simulators[charger.name], socket, self.rng.choice([3_680.0, 7_360.0, 11_040.0]), left_s=2 + 6 * i)
            for i, charger in enumerate(config.chargers)
            for socket in range(1, len(charger.connectors) + 1)
        ]
        self.meters = [simulators[m.name] for m in config.meters]
        self.simulators = list(simulators.values())
        self.building_w = SITE_BASE_LOAD_W
        self.overheating = overheating_charger([(c.name, simulators[c.name]) for c in config.chargers], fault)

    def tick(self) -> None:
        """The script: cars come and go, the building's load wanders."""
        for car in self.cars:
            car.step(self.rng)
        self.building_w = SITE_BASE_LOAD_W + self.rng.uniform(-SITE_LOAD_WANDER_W, SITE_LOAD_WANDER_W)

    def step(self, seconds: float) -> None:
        """The electrics: a charger overheats or recovers, cars follow their offers, meters add
        them up, energy counters grow."""
        self.elapsed_s += seconds
        if (hot := self.overheating) is not None:
            charging = any(
                c.phase == "charging" for c in self.cars if (c.simulator, c.socket) == (hot.simulator, hot.socket)
            )
            hot.step(self.elapsed_s, charging)
        for car in self.cars:
            car.follow(seconds)
        phases_a = [self.building_w / NOMINAL_VOLTAGE_V / 3] * 3
        chargers_w = 0.0
        for car in self.cars:
            drawn = car.simulator.get("current_a", car.socket)
            for phase, amps in enumerate(drawn if isinstance(drawn, tuple) else ()):
                phases_a[phase] += amps if isinstance(amps, int | float) else 0.0
            power = car.simulator.get("power_w", car.socket)
            chargers_w += power if isinstance(power, int | float) else 0.0
        for meter in self.meters:
            meter.set("power_w", self.building_w + chargers_w)
            meter.set("current_a", [round(a, 2) for a in phases_a])
        for simulator in self.simulators:
            simulator.tick(seconds)


def with_overrides(
    config: GatewayConfig,
    csms_url: str | None,
    mqtt: str | None,
    state_dir: Path | None = None,
    ocpp_version: str | None = None,
) -> GatewayConfig:
    """The config with the demo's command-line overrides applied and validated again; its state in
    ``state_dir``, else in a new temporary directory."""
    data: dict[str, Any] = config.model_dump(mode="python", exclude_unset=True)
    for section in ("upstream", "mqtt"):
        for key, value in list(data.setdefault(section, {}).items()):
            if hasattr(value, "get_secret_value"):
                data[section][key] = value.get_secret_value()
    # A simulated site keeps what a CSMS changes only for this run, not in the working directory.
    data.setdefault("site", {})["state_dir"] = str(state_dir or tempfile.mkdtemp(prefix="ocpp-gateway-demo-"))
    if csms_url:
        data["upstream"]["url"] = csms_url
    if ocpp_version:
        data["upstream"]["ocpp_version"] = ocpp_version
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


async def _drive(
    config: GatewayConfig, simulators: dict[str, ModbusSimulator], seed: int = 1, fault: FaultSchedule | None = None
) -> None:
    """Run the demo site in real time: the script once a ``TICK_S``, the electrics every ``STEP_S``."""
    site = DemoSite(config, simulators, seed, fault)
    steps_per_tick = round(TICK_S / STEP_S)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for count in itertools.count():
        if count % steps_per_tick == 0:
            site.tick()
        site.step(STEP_S)
        # on the clock, not STEP_S after the work: the script keeps its times however busy the box is
        await asyncio.sleep(max(0.0, started + (count + 1) * STEP_S - loop.time()))


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
    fault: FaultSchedule | None = DEMO_FAULT,
    state_dir: Path | None = None,
    ocpp_version: str | None = None,
) -> None:
    """Run the simulated site until Ctrl-C (or ``duration_s``); a charger overheats on ``fault``'s
    schedule (None: never). ``ocpp_version``: the upstream's instead of the config's (the built-in
    CSMS speaks it too)."""
    config = with_overrides(config, csms_url, mqtt, state_dir, ocpp_version)
    tail = _LogTail()
    if out.isatty():  # the table owns the screen; log lines go under it
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        root.addHandler(tail)
    logging.getLogger("adapters.demo_csms").setLevel(logging.INFO)
    logging.getLogger("gateway.demo_fault").setLevel(logging.INFO)  # says when the overheating is staged

    async with contextlib.AsyncExitStack() as stack:
        simulators = await _start_simulators(config)
        for simulator in simulators.values():
            stack.push_async_callback(simulator.stop)

        csms_note = "external"
        if not csms_url:
            parts = urlsplit(config.upstream.url)
            built_in = DemoCsms201 if config.upstream.ocpp_version == "2.0.1" else DemoCsms
            csms = built_in(parts.hostname or "127.0.0.1", parts.port or 80)
            try:
                await csms.start()
            except OSError as exc:
                raise DemoError(f"cannot start the demo CSMS on port {parts.port}: {exc.strerror or exc}") from None
            stack.push_async_callback(csms.stop)
            csms_note = f"built-in demo CSMS (OCPP {config.upstream.ocpp_version})"

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
            driver = tasks.create_task(_drive(config, simulators, fault=fault))
            show = tasks.create_task(_show(gateway, tail, (page, csms_note, mqtt_note), out))
            if duration_s is not None:
                await asyncio.sleep(duration_s)
                out.write(render_table(gateway, page, csms_note, mqtt_note) + "\n")
                for task in (run, driver, show):
                    task.cancel()
