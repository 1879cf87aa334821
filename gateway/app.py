"""The composition root: builds the Site and the adapters from the config and runs them together.

This, config_checks.py and cli.py are the only modules that import ``adapters``. Every long-lived loop runs in one
TaskGroup; each loop handles its own expected failures (devices, network, peers), so a task that
ends with an exception is a programming error and ends the process loudly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from adapters.modbus.device import ModbusDevice
from adapters.modbus.profile import load_profile
from adapters.modbus.transport import ModbusLines
from adapters.mqtt.bridge import MqttBridge
from adapters.ocpp201_upstream.station import ChargingStation201
from adapters.ocpp_local.merge import MergedSessions, PassthroughFeed
from adapters.ocpp_local.passthrough import PassthroughRelays
from adapters.ocpp_local.server import LocalOcppServer
from adapters.ocpp_upstream.charge_point import VirtualChargePoint
from adapters.ocpp_upstream.transactions import move_ledger
from adapters.storage.history_db import SqliteHistoryStore
from adapters.storage.outbox_store import SegmentedOutboxStore
from adapters.storage.parked import ParkedMessages
from adapters.storage.private import secure_state_dir
from adapters.storage.settings import JsonSettingsStore
from adapters.web.server import StatusServer
from gateway.config import GatewayConfig
from gateway.config_checks import transport_for, validate
from gateway.config_devices import ChargerConfig
from gateway.domain.errors import CommandRejected, ConfigError, DeviceError
from gateway.domain.events import CurrentLimitRequested
from gateway.domain.history import Retention
from gateway.domain.load_sharing import SharingSettings
from gateway.domain.model import Connector, Meter
from gateway.domain.phase_limits import Phase
from gateway.domain.ports import Clock
from gateway.domain.security import SecurityEventKind
from gateway.domain.transactions import AuthPolicy, EnableCharging
from gateway.services.charging_limits import LimitKeeper
from gateway.services.history import History
from gateway.services.load_management import GridConnection, LoadSettings
from gateway.services.outbox import Outbox, OutboxSettings
from gateway.services.session_tally import SessionTally
from gateway.services.sessions import DEFAULT_FREE_ID_TAG, ConnectorPolicy
from gateway.services.site import Site
from gateway.services.site_picture import SiteLabels
from gateway.services.tasks import raise_if_cancelling
from gateway.services.telemetry import Telemetry

log = logging.getLogger(__name__)


def _watts(kilowatts: float | None) -> float | None:
    return None if kilowatts is None else kilowatts * 1000


def build_site(config: GatewayConfig, clock: Clock | None = None) -> Site:
    max_power_w = {c.id: _watts(c.max_power_kw) for c in config.connectors}
    connectors = [
        Connector(number, charger.name, socket=socket)
        for charger in config.chargers
        for socket, number in enumerate(charger.connectors, start=1)
    ]
    connectors += [  # native chargers: merged ones' connectors are the site's; passthrough ones are only shown
        Connector(number, charger.identity, socket=socket, upstream=charger.mode == "merged")
        for charger in config.ocpp_chargers
        for socket, number in enumerate(charger.connectors, start=1)
    ]
    for connector in connectors:
        connector.max_power_w = max_power_w.get(connector.connector_id)
    meters = [Meter(m.name, m.connector, max_power_w=_watts(m.max_power_kw)) for m in config.meters]
    offline_after = {device.name: device.offline_after_failures for device in [*config.chargers, *config.meters]}
    policies = {c.id: ConnectorPolicy(AuthPolicy(c.policy), c.id_tag or DEFAULT_FREE_ID_TAG) for c in config.connectors}
    site = Site(
        sorted(connectors, key=lambda c: c.connector_id),
        meters,
        clock=clock,
        offline_after_failures=offline_after,
        policies=policies,
        settings=JsonSettingsStore(Path(config.site.state_dir) / "settings.json"),
        soc_targets={c.id: c.soc_target_percent for c in config.connectors if c.soc_target_percent is not None},
    )
    site.restore()
    return site


def build_outbox(config: GatewayConfig, site: Site, history: History | None = None) -> Outbox:
    """The durable queue of billing messages, in ``<state_dir>/outbox``; its figures go to the Site,
    the fate of each session's start and stop to the ``history``."""
    bounds = config.outbox
    settings = OutboxSettings(
        max_bytes=int(bounds.max_size_mb * 1024 * 1024),
        thin_after_records=bounds.thin_after_records,
        thin_window_s=bounds.thin_window_s,
    )
    state_dir = Path(config.site.state_dir)
    store = SegmentedOutboxStore(state_dir / "outbox")
    parked = ParkedMessages(state_dir / "outbox-parked.jsonl")
    on_settled = history.outbox_settled if history is not None else None

    def disk_refused(why: str) -> None:
        site.security.report(SecurityEventKind.STORAGE_FULL, f"outbox: {why}", "outbox")

    outbox = Outbox(
        store,
        settings,
        on_change=site.report_backlog,
        park=parked.add,
        on_settled=on_settled,
        on_disk_refused=disk_refused,
    )
    site.follow_backlog(outbox.stats)
    return outbox


def build_history(config: GatewayConfig, site: Site) -> History | None:
    """The operator's history in ``<state_dir>/history`` (docs/history.md), unless
    ``[history] enabled = false``. Built before anything emits: it must see every session start."""
    if not config.history.enabled:
        return None
    days = config.history.retention_days
    store = SqliteHistoryStore(Path(config.site.state_dir) / "history")
    return History(site, store, Retention(sessions_days=days, events_days=days))


def build_status_page(
    config: GatewayConfig, site: Site, telemetry: Telemetry, history: History | None = None
) -> StatusServer | None:
    """The status page and its API (the ``history``'s too), unless ``[status_page] enabled = false``."""
    if not config.status_page.enabled:
        return None
    return StatusServer(site, telemetry, config.status_page, site_labels(config), history=history)


def shown_url(url: str) -> str:
    """``url`` without a user, password or query: what may be shown on a page or in a terminal."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return urlunsplit((parts.scheme, host + (f":{parts.port}" if parts.port else ""), parts.path, "", ""))


def site_labels(config: GatewayConfig) -> SiteLabels:
    """What the site picture tells about the site from its config."""
    return SiteLabels(
        site_id=config.site.id,
        site_name=config.site.name,
        csms_endpoint=shown_url(config.upstream.endpoint),
        mqtt_broker=f"{config.mqtt.host}:{config.mqtt.port}",
        commands=config.status_page.commands,
    )


def max_current_a(site: Site, devices: list[ModbusDevice]) -> dict[int, float]:
    """Each connector's highest settable current, from its charger profile's limit register
    (connectors whose profile has none are left out)."""
    by_name = {device.name: device for device in devices}
    result = {}
    for connector in site.connectors.values():
        device = by_name.get(connector.device)
        limit = device.profile.writes.current_limit if device is not None else None
        if limit is not None:
            result[connector.connector_id] = limit.max_a
    return result


def load_settings(config: GatewayConfig) -> LoadSettings:
    """How the connectors share the site's grid connection (``[load_management]``, priorities, wiring)."""
    section = config.load_management
    grid = None
    sharing = SharingSettings()
    if section is not None:
        grid = GridConnection(section.grid_meter, section.fuse_a, section.margin_a, section.fallback_a)
        rotation_s = section.rotation_min * 60
        sharing = SharingSettings(rotation_s=rotation_s, min_on_s=min(sharing.min_on_s, rotation_s))
    wiring = {
        number: tuple(Phase[name] for name in charger.grid_phases)
        for charger in [*config.chargers, *config.ocpp_chargers]
        if charger.grid_phases is not None
        for number in charger.connectors
    }
    priorities = {c.id: c.priority for c in config.connectors if c.priority}
    return LoadSettings(grid, priorities, wiring, sharing)


@dataclass
class Gateway:
    """Everything one ``ocpp-gateway run`` keeps alive."""

    config: GatewayConfig
    site: Site
    devices: list[ModbusDevice] = field(default_factory=list)
    upstream: VirtualChargePoint | ChargingStation201 | None = None
    mqtt: MqttBridge | None = None
    limits: LimitKeeper | None = None
    # Serves passthrough chargers; merged ones are refused (503) until the Site merge lands.
    ocpp_server: LocalOcppServer | None = None
    ocpp_merged: MergedSessions | None = None  # relays the CSMS's commands to merged chargers
    telemetry: Telemetry = field(default_factory=Telemetry)  # polls, CSMS messages, MQTT link
    status_page: StatusServer | None = None
    # How the connectors share over time; None: the defaults, with [load_management]'s rotation_min.
    # The config allows turns of minutes; tests and the demo may take turns of seconds.
    sharing: SharingSettings | None = None
    history: History | None = None  # sessions, event log and series on the box ([history])

    def __post_init__(self) -> None:
        self._commands = self.site.subscribe()  # from the start: no command may slip before run()
        if self.limits is None:
            max_a = max_current_a(self.site, self.devices)
            native = {n for c in self.config.ocpp_chargers if c.mode == "merged" for n in c.connectors}
            load = load_settings(self.config)
            if self.sharing is not None:
                load = replace(load, sharing=self.sharing)
            self.limits = LimitKeeper(
                self.site,
                self.site.charging_profiles,
                max_a,
                load=load,
                controllable=set(max_a) | native,
            )

    @classmethod
    def build(
        cls, config: GatewayConfig, clock: Clock | None = None, *, sharing: SharingSettings | None = None
    ) -> Gateway:
        """Everything ``config`` describes; ``sharing``: the sharing's timings instead of the defaults."""
        validate(config)
        # 0700 before anything is read or written in it; files an older version left readable by
        # others (they hold id tags) are narrowed to 0600 here, once
        secure_state_dir(Path(config.site.state_dir))
        site = build_site(config, clock)
        telemetry = Telemetry([device.name for device in [*config.chargers, *config.meters]], clock)
        lines = ModbusLines()  # one connection and one turn-taking lock per bus
        profiles = {device.name: load_profile(device.profile) for device in [*config.chargers, *config.meters]}
        devices = [
            ModbusDevice(
                name=device.name,
                profile=profiles[device.name],
                line=lines.line(transport_for(device, profiles[device.name]), device.timeout_s),
                unit_id=device.unit_id,
                poll_interval_s=device.poll_interval_s,
                timeout_s=device.timeout_s,
                sink=site,
                clock=clock,
                sockets=len(device.connectors) if isinstance(device, ChargerConfig) else 1,
                telemetry=telemetry,
            )
            for device in [*config.chargers, *config.meters]
        ]
        history = build_history(config, site)
        if history is not None:
            telemetry.follow_mqtt(history.broker_changed)  # the broker link's ups and downs in the event log
        mqtt = config.mqtt
        bridge = MqttBridge(
            site,
            host=mqtt.host,
            port=mqtt.port,
            topic_prefix=config.topic_prefix,
            client_id=mqtt.client_id or f"ocpp-gateway-{config.site.id}",
            username=mqtt.username,
            password=mqtt.password.get_secret_value() if mqtt.password else None,
            commands=mqtt.commands.enabled,
            discovery_prefix=mqtt.discovery_prefix or None,
            qos=mqtt.qos,
            reconnect_max_s=mqtt.reconnect_max_s,
            protocol=mqtt.protocol,
            tls=mqtt.tls,
            telemetry=telemetry,
            max_current_a=max_current_a(site, devices),
            tally=SessionTally(site, history),  # seeded from the history: a restart keeps today's count
        )
        # native chargers first: the upstream side must know their connectors when it looks at the
        # sessions left open by the last run (a native charger's session goes on, it is not stopped)
        merged = None
        if config.ocpp_chargers:
            merged_chargers = [c for c in config.ocpp_chargers if c.mode == "merged"]
            merged = MergedSessions(site, merged_chargers, config.ocpp_server.heartbeat_interval_s)
        # the sessions' CSMS ids in a file of their own: a damaged settings.json cannot take them down
        ledger = JsonSettingsStore(Path(config.site.state_dir) / "transactions.json")
        move_ledger(site.settings, ledger)
        # the version is the upstream adapter's choice: the Site, outbox and ledger are the same
        station = ChargingStation201 if config.upstream.ocpp_version == "2.0.1" else VirtualChargePoint
        upstream = station(site, config.upstream, build_outbox(config, site, history), telemetry, ledger)
        status_page = build_status_page(config, site, telemetry, history)
        parts = {"telemetry": telemetry, "status_page": status_page, "sharing": sharing, "history": history}
        if merged is not None:
            passthrough_chargers = [c for c in config.ocpp_chargers if c.mode == "passthrough"]
            relays = PassthroughRelays(
                config.upstream.url, config.ocpp_chargers, PassthroughFeed(site, passthrough_chargers)
            )
            ocpp_server = LocalOcppServer(
                config.ocpp_server, config.ocpp_chargers, merged, passthrough=relays, site=site
            )
            return cls(config, site, devices, upstream, bridge, ocpp_server=ocpp_server, ocpp_merged=merged, **parts)
        return cls(config, site, devices, upstream, bridge, **parts)

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
        await self.listen()
        intervals = {device.name: device.poll_interval_s for device in [*self.config.chargers, *self.config.meters]}
        async with asyncio.TaskGroup() as tasks:
            for index, device in enumerate(self.devices):
                # Spread the first polls over one interval: devices polled in step would land
                # their changes on the bus, the CPU and MQTT in one burst every interval.
                delay_s = intervals.get(device.name, 0.0) * index / len(self.devices)
                tasks.create_task(_after(delay_s, device.run()), name=f"device {device.name}")
            if self.upstream is not None:
                tasks.create_task(self.upstream.run(), name="upstream")
            if self.mqtt is not None:
                tasks.create_task(self.mqtt.run(), name="mqtt")
            if self.ocpp_server is not None:
                tasks.create_task(self.ocpp_server.run(), name="ocpp server")
            if self.ocpp_merged is not None:
                tasks.create_task(self.ocpp_merged.run(), name="ocpp command relay")
            if self.status_page is not None:
                tasks.create_task(self.status_page.run(), name="status page")
            if self.history is not None:
                tasks.create_task(self.history.run(), name="history")
            tasks.create_task(self._carry_out_commands(), name="commands")
            if self.limits is not None:
                tasks.create_task(self.limits.run(), name="charging limits")

    async def listen(self) -> None:
        """Open the gateway's own ports before anything runs: a port in use for the local OCPP server is
        the installer's ConfigError naming the key, not a crash inside the tasks (chargers could not
        connect); the status page instead tries again from its task (see StatusServer.run)."""
        if self.ocpp_server is not None:
            await self.ocpp_server.start()
        if self.status_page is not None:  # only for watching: while its port is taken, it keeps trying
            with contextlib.suppress(ConfigError):
                await self.status_page.start()

    async def _carry_out_commands(self) -> None:
        """Enable or disable chargers as sessions start and stop (the Site decides, devices obey).

        A charger that refuses is logged and the gateway carries on; the session stays as it is.
        """
        by_name = {device.name: device for device in self.devices}
        async for event in self._commands:
            if not isinstance(event, EnableCharging | CurrentLimitRequested):
                continue
            connector = self.site.connectors[event.connector_id]
            device = by_name.get(connector.device)
            if device is None:
                continue
            try:
                if isinstance(event, EnableCharging):
                    await device.set_enabled(event.enabled, socket=connector.socket)
                else:
                    await device.set_current_limit_a(event.limit_a, socket=connector.socket)
            except (CommandRejected, DeviceError, OSError, TimeoutError) as exc:
                raise_if_cancelling(exc)
                log.warning("connector %s: the charger did not take %s: %s", event.connector_id, event, exc)


async def _after(delay_s: float, work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` after ``delay_s`` (closed unstarted if cancelled before, so nothing warns)."""
    try:
        await asyncio.sleep(delay_s)
    except asyncio.CancelledError:
        work.close()
        raise
    await work
