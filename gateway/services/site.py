"""The Site: applies device snapshots, derives connector status and faults, emits domain events.

Data flows one way in (snapshots from device adapters) and one way out (events to the upstream
charge point, MQTT and the status page). Nobody else keeps device state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from gateway.domain.charging_store import ChargingProfileStore
from gateway.domain.events import (
    BacklogChanged,
    ChargingProfilesChanged,
    ConnectorReadingChanged,
    ConnectorStatusChanged,
    CurrentLimitRequested,
    DeviceHealthChanged,
    Event,
    FaultCleared,
    FaultRaised,
    MeterReadingChanged,
    SessionStoppedAtRestart,
    TransactionNumbered,
    UpstreamStateChanged,
    VehicleConnectionChanged,
)
from gateway.domain.metering import DEFAULT_CONNECTOR_MAX_POWER_W, DEFAULT_METER_MAX_POWER_W
from gateway.domain.model import (
    ChargerSnapshot,
    Connector,
    DeviceFailed,
    Fault,
    Meter,
    MeterSnapshot,
    Reading,
    SessionInfo,
    Snapshot,
    VehicleState,
    utc_now,
)
from gateway.domain.outbox import BacklogStats
from gateway.domain.ports import Clock, NoSettingsStore, SettingsStore
from gateway.domain.status import derive_faults, derive_status, evse_offering
from gateway.domain.transactions import (
    AuthStatus,
    Effect,
    StartTransaction,
    StopTransaction,
)
from gateway.services.batteries import Batteries
from gateway.services.billing_registers import BillingRegisters
from gateway.services.event_stream import EventStream
from gateway.services.link_health import DeviceHealth, UpstreamState
from gateway.services.native_chargers import NativeChargers
from gateway.services.sessions import PLUGGED_STATES, ConnectorPolicy, Sessions
from gateway.services.shared_load import SharedLoad
from gateway.services.site_commands import SiteCommands
from gateway.services.site_security import SecurityEvents

log = logging.getLogger(__name__)


class SystemClock:
    """The real clock (UTC)."""

    def now(self) -> datetime:
        return utc_now()


class Site:
    """The domain model of one charging site, with connectors 1..N and its meters.

    Three doors are collaborators of their own (``site_core.py`` says what they may use):
    ``commands`` (what may be asked of the site), ``native`` (chargers that speak OCPP
    themselves) and ``security`` (security events)."""

    def __init__(
        self,
        connectors: Iterable[Connector],
        meters: Iterable[Meter],
        clock: Clock | None = None,
        offline_after_failures: Mapping[str, int] | None = None,
        policies: Mapping[int, ConnectorPolicy] | None = None,
        settings: SettingsStore | None = None,
        soc_targets: Mapping[int, float] | None = None,
    ):
        """``offline_after_failures``: consecutive failed polls before a device counts as lost (default 1);
        ``policies``: how sessions are authorised per connector (default: free, with a site-wide tag);
        ``soc_targets``: per connector, the SoC in percent at which charging pauses (the config's;
        ``set_soc_target`` replaces them at runtime)."""
        self.clock: Clock = clock or SystemClock()
        self.connectors: dict[int, Connector] = {c.connector_id: c for c in connectors}
        self.meters: dict[str, Meter] = {m.name: m for m in meters}
        self.upstream = UpstreamState()
        self._backlog_stats: Callable[[], BacklogStats] = lambda: BacklogStats(0, 0, None, 0, 0)
        self._by_socket = {(c.device, c.socket): c for c in self.connectors.values()}
        self._health: dict[str, DeviceHealth] = {}
        self._offline_after = dict(offline_after_failures or {})
        self._failures: dict[str, int] = {}
        self._car_told: dict[int, bool] = {}  # connector -> whether a car is plugged, as last told
        self._subscribers: list[EventStream] = []
        self._settlers: list[Callable[[], None]] = []
        self.settings: SettingsStore = settings or NoSettingsStore()
        self.registers = BillingRegisters(self._register_ceilings(), self.settings)
        self.connection_timeout_s = 60.0  # ConnectionTimeOut: how long an authorised start waits for the car
        self.charging_profiles = ChargingProfileStore(len(self.upstream_connectors))  # the back office's limits
        self.sessions = Sessions(sorted(self.connectors), policies or {}, self.billing_energy_wh, self.session_effect)
        # a passthrough charger's connectors run no sessions of the gateway's (its CSMS has them)
        self.sessions.out_of_service.update(cid for cid, c in self.connectors.items() if not c.upstream)
        self.load = SharedLoad(self.emit)  # power sharing: the MQTT site limit and the last decision
        self.batteries = Batteries(self.connectors, soc_targets, self.billing_register, self.emit, self.settings)
        self.native = NativeChargers(self)
        self.commands = SiteCommands(self, self.native.owns)
        self.security = SecurityEvents(self)

    # -- subscriptions -------------------------------------------------------------------------
    def subscribe(self) -> EventStream:
        """A new stream that receives every event from now on."""
        stream = EventStream()
        self._subscribers.append(stream)
        return stream

    def unsubscribe(self, stream: EventStream) -> None:
        if stream in self._subscribers:
            self._subscribers.remove(stream)

    def emit(self, event: Event) -> None:
        for stream in self._subscribers:
            stream.put(event)

    def on_settle(self, settle: Callable[[], bool]) -> None:
        """``settle`` takes in, at once, what its subscription has not collected yet (``settle``),
        and says whether all of it is on disk."""
        self._settlers.append(settle)

    def settle(self) -> bool:
        """Have every event emitted so far acted on now: before a native charger is answered, its
        start or stop must be in the upstream's durable queue, or a kill between the answer (the
        charger forgets the message) and the queueing would lose the session's billing. False
        when the disk refused to keep it (it waits in memory): the charger must send it again."""
        return all([settle() for settle in self._settlers])

    # -- queries ---------------------------------------------------------------------------------
    def device_online(self, device: str) -> bool | None:
        """True/False once the device was polled, None before."""
        return self.device_health(device).online

    def device_health(self, device: str) -> DeviceHealth:
        """Whether the device answers, why not, and since when."""
        return self._health.get(device, DeviceHealth())

    def billing_energy_wh(self, connector_id: int) -> int | None:
        """The connector's billing register: its assigned meter if it has one, else the charger's own
        lifetime counter; None when neither answers (a session counter never qualifies)."""
        register = self.billing_register(connector_id)
        return register[0] if register is not None else None

    def billing_register(self, connector_id: int) -> tuple[int, datetime] | None:
        """The billing register (see ``billing_energy_wh``) in Wh and when it was read."""
        for meter in self.meters.values():
            if meter.connector_id == connector_id and meter.connector_id:
                return self._register(f"meter {meter.name}", meter.reading, meter.device_online)
        connector = self.connectors.get(connector_id)
        if connector is None:
            return None
        return self._register(f"connector {connector_id}", connector.reading, connector.device_online)

    def _register(self, where: str, reading: Reading | None, online: bool | None) -> tuple[int, datetime] | None:
        if reading is None:
            return None
        fresh = reading.energy_wh if online else None
        # a device that is away (or went backwards) still has its last good value: bill from that
        if fresh is not None:
            return fresh, reading.measured_at
        last = self.registers.last(where)
        return None if last is None else (last.energy_wh, reading.measured_at)

    @property
    def upstream_connectors(self) -> dict[int, Connector]:
        """The connectors of the site's one charge point (not those of passthrough chargers)."""
        return {cid: c for cid, c in self.connectors.items() if c.upstream}

    def devices(self) -> list[str]:
        names = {c.device for c in self.connectors.values()} | set(self.meters)
        return sorted(names)

    # -- snapshots in ------------------------------------------------------------------------------
    def apply(self, snapshot: Snapshot) -> None:
        """Take one poll result and emit the events it causes."""
        if isinstance(snapshot, DeviceFailed):
            failures = self._failures.get(snapshot.device, 0) + 1
            self._failures[snapshot.device] = failures
            if failures >= self._offline_after.get(snapshot.device, 1):
                self.set_online(snapshot.device, False, snapshot.reason, snapshot.failed_at)
            return
        self._failures[snapshot.device] = 0
        if isinstance(snapshot, ChargerSnapshot):
            self._apply_charger(snapshot)
        elif isinstance(snapshot, MeterSnapshot):
            self._apply_meter(snapshot)
        self.set_online(snapshot.device, True, "", snapshot.reading.measured_at)

    def _apply_charger(self, snap: ChargerSnapshot) -> None:
        connector = self._by_socket.get((snap.device, snap.socket))
        if connector is None:
            return  # a socket the config does not map to a connector
        reading, register_fault = self.guard_register(f"connector {connector.connector_id}", snap.reading)
        car_left = snap.vehicle_state is VehicleState.A and connector.vehicle_state not in (None, VehicleState.A)
        connector.vehicle_state = snap.vehicle_state
        connector.device_faults = (*snap.faults, register_fault) if register_fault else snap.faults
        connector.charging_enabled = snap.charging_enabled
        card, connector.id_tag = (snap.id_tag if snap.id_tag != connector.id_tag else None), snap.id_tag
        previous = connector.reading
        connector.reading = reading
        if previous is None or previous.values() != snap.reading.values():
            self.emit(ConnectorReadingChanged(connector.connector_id, snap.reading))
        self.batteries.charger_polled(connector, car_left)
        if connector.device_online:  # a returning device is handled once, in _set_online
            self._follow_vehicle(connector, snap.reading.measured_at)
            if card is not None:  # a card newly shown at the charger
                self.sessions.id_tag_presented(connector.connector_id, card, snap.reading.measured_at)
                self.update_status(connector, snap.reading.measured_at)  # being authorised: taken

    def _follow_vehicle(self, connector: Connector, at: datetime) -> None:
        """Sessions follow the car, then the status follows both."""
        if connector.vehicle_state is VehicleState.A:
            connector.finishing = False
        for expired in self.sessions.expire_waiting(at, self.connection_timeout_s):
            if expired != connector.connector_id:  # back to Available (that one is updated below)
                self.update_status(self.connectors[expired], at)
            if self.charging_profiles.end_transaction(expired):  # a remote start's TX profile, never used
                self.request(ChargingProfilesChanged())
        plugged = connector.vehicle_state in PLUGGED_STATES
        if connector.vehicle_state is not None and plugged != self._car_told.get(connector.connector_id, False):
            self._car_told[connector.connector_id] = plugged  # told before the session it starts or ends
            energy_wh = self.billing_energy_wh(connector.connector_id)
            self.emit(VehicleConnectionChanged(connector.connector_id, plugged, energy_wh, at))
        self.sessions.vehicle_state(connector.connector_id, connector.vehicle_state, at)
        self.update_status(connector, at)

    def _apply_meter(self, snap: MeterSnapshot) -> None:
        meter = self.meters.get(snap.device)
        if meter is None:
            return
        reading, register_fault = self.guard_register(f"meter {meter.name}", snap.reading)
        faults = (*snap.faults, register_fault) if register_fault else snap.faults
        self._emit_fault_changes(meter.faults, faults, reading.measured_at, None, meter.name)
        faults_changed = faults != meter.faults
        meter.faults = faults
        previous = meter.reading
        meter.reading = reading
        if faults_changed or previous is None or previous.values() != reading.values():
            self.emit(MeterReadingChanged(meter.name, meter.connector_id, reading))
        if meter.connector_id in self.connectors:  # the connector's billing register: estimates move
            self.batteries.refresh(meter.connector_id)

    def guard_register(self, where: str, reading: Reading, *, quiet: bool = False) -> tuple[Reading, Fault | None]:
        """Never let a register that went backwards or jumped through as a billing value."""
        return self.registers.guard(where, reading, quiet=quiet)

    def _register_ceilings(self) -> dict[str, float]:
        """The most each billing source can deliver, in W (see domain.metering): a connector's own
        or the AC default; a meter's own, else its connector's, else a building's."""
        ceilings = {
            f"connector {cid}": c.max_power_w or DEFAULT_CONNECTOR_MAX_POWER_W for cid, c in self.connectors.items()
        }
        for meter in self.meters.values():
            metered = ceilings.get(f"connector {meter.connector_id}") if meter.connector_id else None
            ceilings[f"meter {meter.name}"] = meter.max_power_w or metered or DEFAULT_METER_MAX_POWER_W
        return ceilings

    def set_online(self, device: str, online: bool, reason: str, at: datetime) -> None:
        was = self.device_online(device)
        if was == online:
            return
        self._health[device] = DeviceHealth(online, "" if online else reason, at)
        if online:
            log.info("device %s is answering%s", device, " again" if was is False else "")
        else:
            log.warning("device %s failed: %s", device, reason)
        if device in self.meters:
            self.meters[device].device_online = online
        for connector in self.connectors.values():
            if connector.device == device:
                connector.device_online = online
                if online:
                    self.sessions.device_answers(connector.connector_id)
                    self._follow_vehicle(connector, at)
                else:
                    self.update_status(connector, at)
        self.emit(DeviceHealthChanged(device, online, reason, at))

    def update_status(self, connector: Connector, at: datetime) -> None:
        faults = derive_faults(connector.vehicle_state, connector.device_faults, connector.device_online)
        offered = connector.reading.offered_current_a if connector.reading else None
        status = derive_status(
            connector.vehicle_state,
            faults,
            available=connector.available,
            session_active=connector.session_active,
            offering=evse_offering(connector.charging_enabled, offered),
            finishing=connector.finishing,
            awaiting_car=self.sessions.awaiting_car(connector.connector_id),
        )
        native = self.native.status_of(connector.connector_id)
        if native is not None and connector.device_online:  # a native charger says its own status
            status = native
        if status is connector.status and faults == connector.faults:
            return
        self._emit_fault_changes(connector.faults, faults, at, connector.connector_id, None)
        if status is not connector.status:
            log.info("connector %s: %s -> %s", connector.connector_id, connector.status, status)
            connector.status = status
            connector.status_since = at
        connector.faults = faults
        self.emit(ConnectorStatusChanged(connector.connector_id, status, faults, at))

    def _emit_fault_changes(
        self,
        before: tuple[Fault, ...],
        after: tuple[Fault, ...],
        at: datetime,
        connector_id: int | None,
        meter: str | None,
    ) -> None:
        """One FaultCleared / FaultRaised event (and log line) per fault that went or came."""
        where = f"meter {meter}" if meter is not None else f"connector {connector_id}"
        for fault in before:
            if fault not in after:
                log.info("%s fault cleared: %s %s", where, fault.kind, fault.vendor_code)
                self.emit(FaultCleared(connector_id, fault, at, meter=meter))
        for fault in after:
            if fault not in before:
                log.warning("%s fault raised: %s %s %s", where, fault.kind, fault.vendor_code, fault.info)
                self.emit(FaultRaised(connector_id, fault, at, meter=meter))

    # -- battery ---------------------------------------------------------------------------------
    def report_battery(
        self, connector_id: int, soc_percent: float | None, capacity_wh: float | None, at: datetime | None = None
    ) -> None:
        """A car integration's report for the car on ``connector_id``: its SoC in percent measured at
        ``at`` (default now) and/or its usable capacity in Wh. Raises ``CommandRejected`` (nothing
        changes) for an unknown connector or values out of range."""
        now = self.clock.now()
        self.batteries.report(connector_id, soc_percent, capacity_wh, at or now, now)

    def session_connector(self, local_ref: str) -> int | None:
        """The connector whose running session is ``local_ref``."""
        connector = self.running_connector(local_ref)
        return connector.connector_id if connector is not None else None

    def running_connector(self, local_ref: str) -> Connector | None:
        return next((c for c in self.connectors.values() if c.session and c.session.local_ref == local_ref), None)

    # -- sessions ----------------------------------------------------------------------------------
    def session_effect(self, effect: Effect) -> None:
        """Keep the connector's view of its session current, then tell the subscribers."""
        connector = self.connectors[effect.connector_id]
        if isinstance(effect, StartTransaction):
            connector.session_active, connector.finishing = True, False
            connector.session = SessionInfo(effect.local_ref, effect.id_tag, effect.meter_start_wh, effect.started_at)
        elif isinstance(effect, StopTransaction):
            connector.session_active, connector.session = False, None
            connector.finishing = connector.vehicle_state in PLUGGED_STATES
        self.emit(effect)
        if isinstance(effect, StopTransaction):
            self.commands.session_stopped(effect.connector_id)
        if isinstance(effect, StartTransaction | StopTransaction) and connector.device_online:
            self.update_status(connector, self.clock.now())

    def authorization_result(self, connector_id: int, id_tag: str, status: AuthStatus) -> None:
        if self.native.authorization_answered(connector_id, id_tag, status):
            return  # a native charger asked: it decides what to do with the answer
        self._authorization_for_sessions(connector_id, id_tag, status)

    def _authorization_for_sessions(self, connector_id: int, id_tag: str, status: AuthStatus) -> None:
        """The answer to an ``Authorize`` event (from the CSMS, the local list or the cache)."""
        self.sessions.authorization(connector_id, id_tag, status, self.clock.now())
        if connector_id in self.connectors:  # refused: no longer taken; accepted: still waiting for the car
            self.update_status(self.connectors[connector_id], self.clock.now())

    def transaction_numbered(self, local_ref: str, transaction_id: int) -> None:
        """The CSMS numbered the session ``local_ref`` (reported by the upstream adapter)."""
        connector = self.running_connector(local_ref)
        if connector is not None and connector.session is not None:
            connector.session.transaction_id = transaction_id
            self.emit(TransactionNumbered(connector.connector_id, transaction_id))

    def start_rejected(self, local_ref: str, stop_on_invalid_id: bool) -> None:
        """The back office did not accept the id tag of a started session (a native charger's
        session is stopped by the charger itself, asked as the CSMS would: RemoteStopTransaction)."""
        native = self.session_connector(local_ref)
        if native is not None and self.native.owns(native):
            if stop_on_invalid_id:
                answer = self.native.relay(native, "RemoteStopTransaction", {"local_ref": local_ref})
                answer.add_done_callback(_log_refused_stop)
            return
        self.sessions.start_rejected(local_ref, stop_on_invalid_id, self.clock.now())

    def request(self, event: CurrentLimitRequested | ChargingProfilesChanged | SessionStoppedAtRestart) -> None:
        """Pass a command or notice from one service or adapter to the others (one door in)."""
        if isinstance(event, ChargingProfilesChanged):
            self.settings.save("charging_profiles", self.charging_profiles.to_dict())
        self.emit(event)

    def restore(self) -> None:
        """Take back what was set before a restart: availability, charging profiles, SoC targets and
        the last good billing registers."""
        self.registers.restore()
        stored_profiles = self.settings.load("charging_profiles")
        for problem in self.charging_profiles.load_dict(stored_profiles) if stored_profiles is not None else []:
            log.warning("stored charging profile dropped: %s", problem)
        self.batteries.restore()
        for key, current_a in (self.settings.load("current_ceilings") or {}).items():
            if int(key) in self.connectors and isinstance(current_a, int | float):
                self.connectors[int(key)].current_ceiling_a = float(current_a)
        for key, available in (self.settings.load("availability") or {}).items():
            if int(key) in self.connectors and available is False:
                self.connectors[int(key)].available = False
                self.sessions.out_of_service.add(int(key))

    # -- upstream ----------------------------------------------------------------------------------
    @property
    def backlog(self) -> BacklogStats:
        """The outbox's figures now (for MQTT and the status page; worked out on each read)."""
        return self._backlog_stats()

    def follow_backlog(self, stats: Callable[[], BacklogStats]) -> None:
        """Where the backlog figures come from: the outbox's ``stats``."""
        self._backlog_stats = stats
        self.report_backlog()

    def report_backlog(self) -> None:
        """The outbox changed (told by the outbox after every change): readers look again."""
        self.emit(BacklogChanged())

    def set_upstream(self, connected: bool, registration: str, reason: str = "") -> None:
        """Record the CSMS connection state (reported by the upstream adapter) for MQTT and status.

        ``reason``: why the link is down (ignored while connected). A new reason for a link that
        stays down replaces the last one (and is told, for MQTT's retained state); an empty one
        keeps it."""
        reason = "" if connected else reason
        if (connected, registration) == (self.upstream.connected, self.upstream.registration):
            if reason and reason != self.upstream.reason:
                self.upstream = replace(self.upstream, reason=reason)
                self.emit(UpstreamStateChanged(connected, registration, self.upstream.changed_at, reason))
            return
        self.upstream = UpstreamState(connected, registration, self.clock.now(), reason)
        self.emit(UpstreamStateChanged(connected, registration, self.upstream.changed_at, reason))


def _log_refused_stop(answer: asyncio.Future[dict[str, Any]]) -> None:
    """A native charger that could not be asked to stop a rejected session: say so (the CSMS
    already knows the id tag was refused; the charger will report the stop when it comes)."""
    if answer.cancelled():
        return
    if (error := answer.exception()) is not None:
        log.warning("a native charger could not be asked to stop a session the CSMS rejected: %s", error)
