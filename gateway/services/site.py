"""The Site: applies device snapshots, derives connector status and faults, emits domain events.

Data flows one way in (snapshots from device adapters) and one way out (events to the upstream
charge point, MQTT and the status page). Nobody else keeps device state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.domain.charging_store import ChargingProfileStore
from gateway.domain.errors import CommandRejected
from gateway.domain.events import (
    BacklogChanged,
    ChargingProfilesChanged,
    ConnectorReadingChanged,
    ConnectorStatusChanged,
    CurrentCeilingChanged,
    CurrentLimitRequested,
    DeviceHealthChanged,
    Event,
    FaultCleared,
    FaultRaised,
    MeterReadingChanged,
    RelayToCharger,
    TransactionNumbered,
    UpstreamStateChanged,
)
from gateway.domain.metering import check_register
from gateway.domain.model import (
    ChargerSnapshot,
    Connector,
    ConnectorStatus,
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
    Authorize,
    AuthPolicy,
    AuthStatus,
    Effect,
    EnableCharging,
    StartTransaction,
    StopReason,
    StopTransaction,
    new_local_ref,
)
from gateway.services.batteries import Batteries
from gateway.services.sessions import DEFAULT_FREE_ID_TAG, PLUGGED_STATES, ConnectorPolicy, Sessions

log = logging.getLogger(__name__)

MAX_CEILING_A = 80.0  # the highest per-phase current a Mode 3 AC connector carries


class SystemClock:
    """The real clock (UTC)."""

    def now(self) -> datetime:
        return utc_now()


class EventStream:
    """One subscriber's queue of events; iterate it with ``async for``."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Event] = asyncio.Queue()

    def put(self, event: Event) -> None:
        self._queue.put_nowait(event)

    async def get(self) -> Event:
        return await self._queue.get()

    def get_nowait(self) -> Event | None:
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            yield await self._queue.get()


@dataclass(frozen=True, slots=True)
class UpstreamState:
    """The CSMS link as the upstream adapter last reported it."""

    connected: bool = False
    registration: str = "none"
    changed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class DeviceHealth:
    """Whether a field device answers: ``online`` is None before its first poll; ``reason`` while down."""

    online: bool | None = None
    reason: str = ""
    since: datetime | None = None


class Site:
    """The domain model of one charging site, with connectors 1..N and its meters."""

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
        self._native_status: dict[int, ConnectorStatus] = {}  # native chargers' own statuses
        self._native_connectors: set[int] = set()
        self._native_authorizations: dict[tuple[int, str], list[asyncio.Future[AuthStatus]]] = {}
        self._backlog_stats: Callable[[], BacklogStats] = lambda: BacklogStats(0, 0, None, 0, 0)
        self._by_socket = {(c.device, c.socket): c for c in self.connectors.values()}
        self._health: dict[str, DeviceHealth] = {}
        self._offline_after = dict(offline_after_failures or {})
        self._failures: dict[str, int] = {}
        self._last_good_wh: dict[str, int | None] = {}  # highest register value seen, per connector/meter
        self._register_alarm: set[str] = set()
        self._availability_after_session: dict[int, bool] = {}  # ChangeAvailability that waits for a stop
        self._subscribers: list[EventStream] = []
        self.settings: SettingsStore = settings or NoSettingsStore()
        self.connection_timeout_s = 60.0  # ConnectionTimeOut: how long an authorised start waits for the car
        self.charging_profiles = ChargingProfileStore(len(self.upstream_connectors))  # the back office's limits
        self.sessions = Sessions(sorted(self.connectors), policies or {}, self.billing_energy_wh, self._session_effect)
        # a passthrough charger's connectors run no sessions of the gateway's (its CSMS has them)
        self.sessions.out_of_service.update(cid for cid, c in self.connectors.items() if not c.upstream)
        self.batteries = Batteries(self.connectors, soc_targets, self.billing_register, self._emit, self.settings)

    # -- subscriptions -------------------------------------------------------------------------
    def subscribe(self) -> EventStream:
        """A new stream that receives every event from now on."""
        stream = EventStream()
        self._subscribers.append(stream)
        return stream

    def unsubscribe(self, stream: EventStream) -> None:
        if stream in self._subscribers:
            self._subscribers.remove(stream)

    def _emit(self, event: Event) -> None:
        for stream in self._subscribers:
            stream.put(event)

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
        value = fresh if fresh is not None else self._last_good_wh.get(where)
        return None if value is None else (value, reading.measured_at)

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
                self._set_online(snapshot.device, False, snapshot.reason, snapshot.failed_at)
            return
        self._failures[snapshot.device] = 0
        if isinstance(snapshot, ChargerSnapshot):
            self._apply_charger(snapshot)
        elif isinstance(snapshot, MeterSnapshot):
            self._apply_meter(snapshot)
        self._set_online(snapshot.device, True, "", snapshot.reading.measured_at)

    def _apply_charger(self, snap: ChargerSnapshot) -> None:
        connector = self._by_socket.get((snap.device, snap.socket))
        if connector is None:
            return  # a socket the config does not map to a connector
        reading, register_fault = self._guard_register(f"connector {connector.connector_id}", snap.reading)
        car_left = snap.vehicle_state is VehicleState.A and connector.vehicle_state not in (None, VehicleState.A)
        connector.vehicle_state = snap.vehicle_state
        connector.device_faults = (*snap.faults, register_fault) if register_fault else snap.faults
        connector.charging_enabled = snap.charging_enabled
        card, connector.id_tag = (snap.id_tag if snap.id_tag != connector.id_tag else None), snap.id_tag
        previous = connector.reading
        connector.reading = reading
        if previous is None or previous.values() != snap.reading.values():
            self._emit(ConnectorReadingChanged(connector.connector_id, snap.reading))
        self.batteries.charger_polled(connector, car_left)
        if connector.device_online:  # a returning device is handled once, in _set_online
            self._follow_vehicle(connector, snap.reading.measured_at)
            if card is not None:  # a card newly shown at the charger
                self.sessions.id_tag_presented(connector.connector_id, card, snap.reading.measured_at)

    def _follow_vehicle(self, connector: Connector, at: datetime) -> None:
        """Sessions follow the car, then the status follows both."""
        if connector.vehicle_state is VehicleState.A:
            connector.finishing = False
        self.sessions.expire_waiting(at, self.connection_timeout_s)
        self.sessions.vehicle_state(connector.connector_id, connector.vehicle_state, at)
        self._update_status(connector, at)

    def _apply_meter(self, snap: MeterSnapshot) -> None:
        meter = self.meters.get(snap.device)
        if meter is None:
            return
        reading, register_fault = self._guard_register(f"meter {meter.name}", snap.reading)
        faults = (*snap.faults, register_fault) if register_fault else snap.faults
        self._emit_fault_changes(meter.faults, faults, reading.measured_at, None, meter.name)
        faults_changed = faults != meter.faults
        meter.faults = faults
        previous = meter.reading
        meter.reading = reading
        if faults_changed or previous is None or previous.values() != reading.values():
            self._emit(MeterReadingChanged(meter.name, meter.connector_id, reading))
        if meter.connector_id in self.connectors:  # the connector's billing register: estimates move
            self.batteries.refresh(meter.connector_id)

    def _guard_register(self, where: str, reading: Reading) -> tuple[Reading, Fault | None]:
        """Never let a register that went backwards through as a billing value (see domain.metering)."""
        last = self._last_good_wh.get(where)
        checked, fault, self._last_good_wh[where] = check_register(last, reading)
        if fault is not None and where not in self._register_alarm:
            self._register_alarm.add(where)
            log.warning(
                "%s: energy register fell from %s to %s Wh; not used for billing", where, last, reading.energy_wh
            )
        elif fault is None and where in self._register_alarm:
            self._register_alarm.discard(where)
            log.info("%s: energy register back at %s Wh", where, reading.energy_wh)
        return checked, fault

    def _set_online(self, device: str, online: bool, reason: str, at: datetime) -> None:
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
                    self._update_status(connector, at)
        self._emit(DeviceHealthChanged(device, online, reason, at))

    def _update_status(self, connector: Connector, at: datetime) -> None:
        faults = derive_faults(connector.vehicle_state, connector.device_faults, connector.device_online)
        offered = connector.reading.offered_current_a if connector.reading else None
        status = derive_status(
            connector.vehicle_state,
            faults,
            available=connector.available,
            session_active=connector.session_active,
            offering=evse_offering(connector.charging_enabled, offered),
            finishing=connector.finishing,
        )
        native = self._native_status.get(connector.connector_id)
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
        self._emit(ConnectorStatusChanged(connector.connector_id, status, faults, at))

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
                self._emit(FaultCleared(connector_id, fault, at, meter=meter))
        for fault in after:
            if fault not in before:
                log.warning("%s fault raised: %s %s %s", where, fault.kind, fault.vendor_code, fault.info)
                self._emit(FaultRaised(connector_id, fault, at, meter=meter))

    # -- battery ---------------------------------------------------------------------------------
    def report_battery(
        self, connector_id: int, soc_percent: float | None, capacity_wh: float | None, at: datetime | None = None
    ) -> None:
        """A car integration's report for the car on ``connector_id``: its SoC in percent measured at
        ``at`` (default now) and/or its usable capacity in Wh. Raises ``CommandRejected`` (nothing
        changes) for an unknown connector or values out of range."""
        now = self.clock.now()
        self.batteries.report(connector_id, soc_percent, capacity_wh, at or now, now)

    def set_soc_target(self, connector_id: int, percent: float | None) -> None:
        """Pause charging on ``connector_id`` once its SoC reaches ``percent`` (None: charge to full).

        Replaces the config's target and is kept across restarts. Raises ``CommandRejected`` for an
        unknown connector or a target out of range (above 0, at most 100)."""
        self.batteries.set_target(connector_id, percent)

    # -- native OCPP chargers (merged mode) ----------------------------------------------------------
    def native_status(
        self, connector_id: int, status: ConnectorStatus, faults: tuple[Fault, ...], at: datetime
    ) -> None:
        """A native charger's StatusNotification for one of its connectors (site numbering)."""
        connector = self.connectors[connector_id]
        car_left = status is ConnectorStatus.AVAILABLE and self._native_status.get(connector_id) is not status
        self._native_status[connector_id] = status
        connector.device_faults = faults
        if car_left:  # what was known of the last car's battery goes with it
            self.batteries.charger_polled(connector, car_left=True)
        self._set_online(connector.device, True, "", at)
        self._update_status(connector, at)

    def native_reading(self, connector_id: int, reading: Reading) -> None:
        """A native charger's MeterValues for one of its connectors: its registers, as read."""
        connector = self.connectors[connector_id]
        reading, register_fault = self._guard_register(f"connector {connector_id}", reading)
        previous = connector.reading
        connector.reading = reading
        if previous is None or previous.values() != reading.values():
            self._emit(ConnectorReadingChanged(connector_id, reading))
        self.batteries.charger_polled(connector, car_left=False)  # its SoC, as a charger register's
        if register_fault is not None and register_fault not in connector.device_faults:
            connector.device_faults = (*connector.device_faults, register_fault)
            self._update_status(connector, reading.measured_at)

    def register_native(self, connector_ids: Iterable[int]) -> None:
        """These connectors belong to native OCPP chargers: back-office commands for them are
        relayed to the charger (``relay``) instead of being carried out here."""
        self._native_connectors.update(connector_ids)

    @property
    def upstream_connectors(self) -> dict[int, Connector]:
        """The connectors of the site's one charge point (not those of passthrough chargers)."""
        return {cid: c for cid, c in self.connectors.items() if c.upstream}

    def is_native(self, connector_id: int) -> bool:
        return connector_id in self._native_connectors

    def one_connector_per_native_charger(self) -> list[int]:
        """A connector of each native charger: where a command for a whole charger is relayed."""
        first = {c.device: c.connector_id for c in self.connectors.values() if self.is_native(c.connector_id)}
        return sorted(first.values())

    def relay(self, connector_id: int, action: str, payload: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        """Hand a back-office command to the native charger of ``connector_id``; the future holds
        its answer (a dict of the charger's result)."""
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._emit(RelayToCharger(connector_id, action, payload, answer))
        return answer

    def session_connector(self, local_ref: str) -> int | None:
        """The connector whose running session is ``local_ref``."""
        connector = self._running(local_ref)
        return connector.connector_id if connector is not None else None

    def _running(self, local_ref: str) -> Connector | None:
        return next((c for c in self.connectors.values() if c.session and c.session.local_ref == local_ref), None)

    def native_offline(self, device: str, at: datetime) -> None:
        """A native charger's connection closed: its connectors lose communication."""
        self._set_online(device, False, "the charger's OCPP connection closed", at)

    def native_start(self, connector_id: int, id_tag: str, meter_start_wh: int, at: datetime) -> str:
        """A native charger started a transaction; returns the local reference it goes upstream under."""
        local_ref = new_local_ref(connector_id, at)
        self._session_effect(StartTransaction(connector_id, local_ref, id_tag, meter_start_wh, at))
        return local_ref

    def native_stop(self, local_ref: str, meter_stop_wh: int, at: datetime, reason: StopReason) -> bool:
        """A native charger stopped the transaction ``local_ref``; False if no such session runs."""
        connector = self._running(local_ref)
        if connector is None or connector.session is None:
            return False
        stop = StopTransaction(connector.connector_id, local_ref, connector.session.id_tag, meter_stop_wh, at, reason)
        self._session_effect(stop)
        return True

    def native_authorize(self, connector_id: int, id_tag: str) -> asyncio.Future[AuthStatus]:
        """Ask the gateway's authorisation (the CSMS, or the local list and cache while it is away)
        for a card shown at a native charger; the future holds the answer."""
        future: asyncio.Future[AuthStatus] = asyncio.get_running_loop().create_future()
        self._native_authorizations.setdefault((connector_id, id_tag), []).append(future)
        self._emit(Authorize(connector_id, id_tag))
        return future

    # -- sessions ----------------------------------------------------------------------------------
    def _session_effect(self, effect: Effect) -> None:
        """Keep the connector's view of its session current, then tell the subscribers."""
        connector = self.connectors[effect.connector_id]
        if isinstance(effect, StartTransaction):
            connector.session_active, connector.finishing = True, False
            connector.session = SessionInfo(effect.local_ref, effect.id_tag, effect.meter_start_wh, effect.started_at)
        elif isinstance(effect, StopTransaction):
            connector.session_active, connector.session = False, None
            connector.finishing = connector.vehicle_state in PLUGGED_STATES
        self._emit(effect)
        if isinstance(effect, StopTransaction) and effect.connector_id in self._availability_after_session:
            self._set_available(effect.connector_id, self._availability_after_session.pop(effect.connector_id))
        if isinstance(effect, StartTransaction | StopTransaction) and connector.device_online:
            self._update_status(connector, self.clock.now())

    def authorization_result(self, connector_id: int, id_tag: str, status: AuthStatus) -> None:
        waiting = self._native_authorizations.pop((connector_id, id_tag), None)
        if waiting:  # a native charger asked: it decides what to do with the answer
            for future in waiting:
                if not future.done():
                    future.set_result(status)
            return
        self._authorization_for_sessions(connector_id, id_tag, status)

    def _authorization_for_sessions(self, connector_id: int, id_tag: str, status: AuthStatus) -> None:
        """The answer to an ``Authorize`` event (from the CSMS, the local list or the cache)."""
        self.sessions.authorization(connector_id, id_tag, status, self.clock.now())

    def remote_start(self, connector_id: int | None, id_tag: str, authorize_first: bool = False) -> bool:
        """A remote start: True if accepted (the session starts when the car is plugged in)."""
        return self.sessions.remote_start(connector_id, id_tag, authorize_first, self.clock.now())

    def remote_stop(self, local_ref: str) -> bool:
        """A remote stop of the session recorded under ``local_ref``: True if it was running."""
        return self.sessions.remote_stop(local_ref, self.clock.now())

    def change_availability(self, connector_id: int, available: bool) -> str:
        """Take a connector (0: all) out of service or back: "Accepted", "Scheduled" (a session is
        running; applied when it ends) or "Rejected" (no such connector)."""
        ours = self.upstream_connectors  # a passthrough charger's availability is its CSMS's business
        targets = list(ours) if connector_id == 0 else [connector_id]
        if any(cid not in ours for cid in targets):
            return "Rejected"
        scheduled = False
        for cid in targets:
            if self.connectors[cid].session_active:
                self._availability_after_session[cid] = available
                scheduled = True
            else:
                self._set_available(cid, available)
        return "Scheduled" if scheduled else "Accepted"

    def _set_available(self, connector_id: int, available: bool) -> None:
        connector = self.connectors[connector_id]
        connector.available = available
        stored = {str(cid): c.available for cid, c in self.connectors.items()}
        self.settings.save("availability", stored)
        if available:
            self.sessions.out_of_service.discard(connector_id)
        else:
            self.sessions.out_of_service.add(connector_id)
            self._emit(EnableCharging(connector_id, False))
        self._update_status(connector, self.clock.now())

    def local_start(self, connector_id: int, id_tag: str | None) -> None:
        """Start a session on command (MQTT), as RemoteStartTransaction would: only on connectors
        with the ``remote`` policy (``free`` ones start on plug-in, ``local_list`` ones on a card),
        authorised first like a card. ``id_tag`` defaults to the connector's configured tag.
        Raises ``CommandRejected`` saying why when it cannot."""
        machine = self.sessions.machines.get(connector_id)
        if machine is None:
            raise CommandRejected(f"no connector {connector_id}")
        if machine.policy is not AuthPolicy.REMOTE:
            policy = machine.policy.value
            raise CommandRejected(f"connector {connector_id} has the {policy} policy: only remote ones start so")
        tag = id_tag or machine.free_id_tag or DEFAULT_FREE_ID_TAG
        if not self.remote_start(connector_id, tag, authorize_first=True):
            raise CommandRejected(f"connector {connector_id} is busy or out of service")

    def stop_session(self, connector_id: int, reason: StopReason = StopReason.LOCAL) -> bool:
        """End the session on one connector (a local stop, e.g. over MQTT); False if none runs."""
        return self.sessions.stop_one(connector_id, reason, self.clock.now())

    def transaction_numbered(self, local_ref: str, transaction_id: int) -> None:
        """The CSMS numbered the session ``local_ref`` (reported by the upstream adapter)."""
        connector = self._running(local_ref)
        if connector is not None and connector.session is not None:
            connector.session.transaction_id = transaction_id
            self._emit(TransactionNumbered(connector.connector_id, transaction_id))

    def set_current_ceiling(self, connector_id: int, current_a: float | None) -> None:
        """Cap ``connector_id`` at ``current_a`` (None: no cap) under any charging profile; kept
        across restarts. Raises ``CommandRejected`` for an unknown connector or a negative value."""
        if connector_id not in self.connectors:
            raise CommandRejected(f"no connector {connector_id}")
        if current_a is not None and not 0 <= current_a <= MAX_CEILING_A:
            raise CommandRejected(f"current_a must be between 0 and {MAX_CEILING_A:g} A, not {current_a:g}")
        self.connectors[connector_id].current_ceiling_a = current_a
        stored = {
            str(cid): c.current_ceiling_a for cid, c in self.connectors.items() if c.current_ceiling_a is not None
        }
        self.settings.save("current_ceilings", stored)
        self._emit(CurrentCeilingChanged(connector_id, current_a))

    def stop_all_sessions(self, reason: StopReason) -> None:
        """End every running session (a reset of the gateway)."""
        self.sessions.stop_all(reason, self.clock.now())

    def start_rejected(self, local_ref: str, stop_on_invalid_id: bool) -> None:
        """The back office did not accept the id tag of a started session (a native charger's
        session is stopped by the charger itself, asked as the CSMS would: RemoteStopTransaction)."""
        native = self.session_connector(local_ref)
        if native is not None and self.is_native(native):
            if stop_on_invalid_id:
                answer = self.relay(native, "RemoteStopTransaction", {"local_ref": local_ref})
                answer.add_done_callback(_log_refused_stop)
            return
        self.sessions.start_rejected(local_ref, stop_on_invalid_id, self.clock.now())

    def request(self, event: CurrentLimitRequested | ChargingProfilesChanged) -> None:
        """Pass a command or notice from one service or adapter to the others (one door in)."""
        if isinstance(event, ChargingProfilesChanged):
            self.settings.save("charging_profiles", self.charging_profiles.to_dict())
        self._emit(event)

    def restore(self) -> None:
        """Take back what was set before a restart: availability, charging profiles and SoC targets."""
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
        self._emit(BacklogChanged())

    def set_upstream(self, connected: bool, registration: str) -> None:
        """Record the CSMS connection state (reported by the upstream adapter) for MQTT and status."""
        if (connected, registration) == (self.upstream.connected, self.upstream.registration):
            return
        self.upstream = UpstreamState(connected, registration, self.clock.now())
        self._emit(UpstreamStateChanged(connected, registration, self.upstream.changed_at))


def _log_refused_stop(answer: asyncio.Future[dict[str, Any]]) -> None:
    """A native charger that could not be asked to stop a rejected session: say so (the CSMS
    already knows the id tag was refused; the charger will report the stop when it comes)."""
    if answer.cancelled():
        return
    if (error := answer.exception()) is not None:
        log.warning("a native charger could not be asked to stop a session the CSMS rejected: %s", error)
