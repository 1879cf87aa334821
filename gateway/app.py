"""The composition root: builds the Site and the adapters from the config and runs them together.

This and cli.py are the only modules that import ``adapters``. Every long-lived loop runs in one
TaskGroup; each loop handles its own expected failures (devices, network, peers), so a task that
ends with an exception is a programming error and ends the process loudly.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from adapters.modbus.device import ModbusDevice
from adapters.modbus.profile import load_profile, profile_names
from adapters.mqtt.bridge import MqttBridge
from adapters.ocpp_upstream.charge_point import VirtualChargePoint
from gateway.config import ChargerConfig, DeviceConfig, GatewayConfig
from gateway.domain.errors import ConfigError
from gateway.domain.model import Connector, Meter
from gateway.domain.ports import Clock
from gateway.services.site import Site

log = logging.getLogger(__name__)


def check_profiles(config: GatewayConfig) -> list[tuple[str, str]]:
    """Problems with the devices' profiles (missing, wrong kind, too few sockets), by key path."""
    problems: list[tuple[str, str]] = []
    devices: list[tuple[str, DeviceConfig, str]] = [
        (f"chargers[{i}]", c, "charger") for i, c in enumerate(config.chargers)
    ]
    devices += [(f"meters[{i}]", m, "meter") for i, m in enumerate(config.meters)]
    for path, device, kind in devices:
        try:
            profile = load_profile(device.profile)
        except ConfigError as exc:
            if exc.problems and exc.problems[0][1].startswith("no profile named"):
                known = ", ".join(profile_names())
                problems.append((f"{path}.profile", f"no profile named {device.profile!r} (known: {known})"))
            else:
                problems.extend((f"{path}.profile ({key})", reason) for key, reason in exc.problems)
            continue
        if profile.kind != kind:
            problems.append((f"{path}.profile", f"{device.profile!r} is a {profile.kind} profile, not a {kind}"))
        if isinstance(device, ChargerConfig) and len(device.connectors) > profile.sockets:
            reason = f"{device.profile!r} has {profile.sockets} socket(s), not {len(device.connectors)}"
            problems.append((f"{path}.connectors", reason))
    return problems


def validate(config: GatewayConfig) -> None:
    """Cross-checks that need the profiles; raises ConfigError naming every problem."""
    problems = check_profiles(config)
    if problems:
        raise ConfigError(problems)


def build_site(config: GatewayConfig, clock: Clock | None = None) -> Site:
    connectors = [
        Connector(number, charger.name, socket=socket)
        for charger in config.chargers
        for socket, number in enumerate(charger.connectors, start=1)
    ]
    meters = [Meter(meter.name, meter.connector) for meter in config.meters]
    return Site(sorted(connectors, key=lambda c: c.connector_id), meters, clock=clock)


@dataclass
class Gateway:
    """Everything one ``ocpp-gateway run`` keeps alive."""

    config: GatewayConfig
    site: Site
    devices: list[ModbusDevice] = field(default_factory=list)
    upstream: VirtualChargePoint | None = None
    mqtt: MqttBridge | None = None

    @classmethod
    def build(cls, config: GatewayConfig, clock: Clock | None = None) -> Gateway:
        validate(config)
        site = build_site(config, clock)
        devices = [
            ModbusDevice(
                name=device.name,
                profile=load_profile(device.profile),
                host=device.host,
                port=device.port,
                unit_id=device.unit_id,
                poll_interval_s=device.poll_interval_s,
                timeout_s=device.timeout_s,
                sink=site,
                clock=clock,
                sockets=len(device.connectors) if isinstance(device, ChargerConfig) else 1,
            )
            for device in [*config.chargers, *config.meters]
        ]
        mqtt = config.mqtt
        bridge = MqttBridge(
            site,
            host=mqtt.host,
            port=mqtt.port,
            topic_prefix=config.topic_prefix,
            client_id=mqtt.client_id or f"ocpp-gateway-{config.site.id}",
            username=mqtt.username,
            password=mqtt.password.get_secret_value() if mqtt.password else None,
        )
        return cls(config, site, devices, VirtualChargePoint(site, config.upstream), bridge)

    async def run(self) -> None:
        log.info(
            "gateway %s: %d connector(s), %d device(s), CSMS %s, MQTT %s:%s",
            self.config.site.id,
            len(self.site.connectors),
            len(self.devices),
            self.config.upstream.endpoint,
            self.config.mqtt.host,
            self.config.mqtt.port,
        )
        async with asyncio.TaskGroup() as tasks:
            for device in self.devices:
                tasks.create_task(device.run(), name=f"device {device.name}")
            if self.upstream is not None:
                tasks.create_task(self.upstream.run(), name="upstream")
            if self.mqtt is not None:
                tasks.create_task(self.mqtt.run(), name="mqtt")
