"""ChargingStation201: the whole site as ONE OCPP 2.0.1 Charging Station towards the CSMS.

One websocket (subprotocol ``ocpp2.0.1``), one identity; each site connector is an EVSE (evseId =
the connector number, connectorId 1) and the grid meter belongs to EVSE 0. The same constructor
as the 1.6 ``VirtualChargePoint``, so the app picks one or the other.

Rules kept: nothing but BootNotification before Accepted (retried at the CSMS's interval), except
answering the CSMS; one BootNotification per process start (PowerUp after a clean stop or at the
first start, Unknown after a process that did not end on purpose, RemoteReset after a CSMS Reset,
Triggered when the CSMS asks), not per reconnect: 2.0.1 boots a station when it (re)starts, and a
link that comes back is not a restart. After Accepted a StatusNotification per EVSE, then one per
change; Heartbeat at the CSMS's interval. Transaction events go through the durable outbox, one at
a time, in order (see session_effects.py, sampling.py, ledger.py for seqNo).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from ocpp.exceptions import OCPPError
from ocpp.v201 import call
from websockets.asyncio.client import ClientConnection

from adapters.ocpp201_upstream import native_relay
from adapters.ocpp201_upstream.authorization import Authorization201, auth_status
from adapters.ocpp201_upstream.charging_control import SmartCharging201
from adapters.ocpp201_upstream.device_model import DeviceModel201
from adapters.ocpp201_upstream.ledger import Ledger201
from adapters.ocpp201_upstream.peer import Peer201
from adapters.ocpp201_upstream.problems import ProblemEvents
from adapters.ocpp201_upstream.replay_batches import numbered_request
from adapters.ocpp201_upstream.resets import Resets201
from adapters.ocpp201_upstream.sampling import Sampler201, evse_meter_values
from adapters.ocpp201_upstream.security_events import SecurityEvents201, settings_watch, startup_events
from adapters.ocpp201_upstream.session_effects import LOCAL_TOKEN, SessionFeed
from adapters.ocpp201_upstream.statuses import StatusReports201
from adapters.ocpp201_upstream.tx_points import TxPoints
from adapters.ocpp_link import CLEAN_SHUTDOWN, UpstreamLink, first_to_finish, run_marked, send_call
from gateway.config import UpstreamConfig
from gateway.domain.events import (
    ConnectorReadingChanged,
    ConnectorStatusChanged,
    DeviceHealthChanged,
    FaultCleared,
    FaultRaised,
    MeterReadingChanged,
    SecurityEventSeen,
    VehicleConnectionChanged,
)
from gateway.domain.outbox import OutboxRecord
from gateway.domain.ports import SettingsStore
from gateway.domain.security import SecurityEventKind
from gateway.domain.transactions import Authorize, AuthStatus, StartTransaction, StopReason, StopTransaction
from gateway.services.outbox import DISK_RETRY_S, Outbox, Retry
from gateway.services.site import Site
from gateway.services.telemetry import Telemetry

log = logging.getLogger(__name__)

SUBPROTOCOL = "ocpp2.0.1"
BOOT_RETRY_FALLBACK_S = 30  # a Pending/Rejected with interval 0, or a boot that failed


def next_boundary(now: datetime, interval_s: int) -> datetime:
    """The next multiple of ``interval_s`` after midnight UTC."""
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight + timedelta(seconds=(int((now - midnight).total_seconds() // interval_s) + 1) * interval_s)


class ChargingStation201:
    """Keeps the 2.0.1 link alive and speaks for the Site."""

    def __init__(
        self,
        site: Site,
        settings: UpstreamConfig,
        outbox: Outbox,
        telemetry: Telemetry | None = None,
        ledger: SettingsStore | None = None,
    ) -> None:
        """``ledger`` keeps the sessions and their seqNo across restarts (default: the Site's settings)."""
        self.site = site
        self.settings = settings
        self._link = UpstreamLink(site, settings, SUBPROTOCOL)
        self.outbox = outbox
        self.telemetry = telemetry or Telemetry()
        self.registration = "none"
        self.accepted = asyncio.Event()
        self.device_model = DeviceModel201(site, settings, site.settings)  # the intervals and measurands
        clean = site.settings.load(CLEAN_SHUTDOWN)
        self.boot_reason = "PowerUp" if clean in (None, True) else "Unknown"
        self._peer: Peer201 | None = None
        self._authorizations: asyncio.Queue[Authorize] = asyncio.Queue()
        self.ledger = Ledger201(ledger or site.settings)
        self.statuses = StatusReports201(site, send_call)
        self.sessions = SessionFeed(site, self.ledger, outbox, self.online)
        self.tx_points = TxPoints(site, self.sessions, self._tx_points)  # TxStartPoint / TxStopPoint
        self.sampler = Sampler201(site, self.ledger, outbox, [], self.online, self._send_live)
        self._measurands_changed(set())
        self.device_model.on_change(self._measurands_changed)
        self.problems = ProblemEvents(site)
        self.authorization = Authorization201(site.settings, self.device_model.auth_settings())
        self.device_model.on_change(self._auth_changed)  # the CSMS's SetVariables of AuthCtrlr and the like
        entries = "LocalAuthListCtrlr.Entries"
        self.device_model.provide(entries, lambda: str(len(self.authorization.authorizer.local_list)))
        self.security = SecurityEvents201(site, self.online)
        self.resets = Resets201(site, self.reset)
        self.device_model.on_change(settings_watch(site))
        self.smart_charging = SmartCharging201(
            site, self.ledger.running
        )  # the CSMS's charging profiles, in the Site's store
        self.device_model.provide(
            "SmartChargingCtrlr.Entries[ChargingProfiles]", lambda: str(len(site.charging_profiles))
        )
        self._effects = site.subscribe()
        startup_events(site, clean)  # (after subscribing: they are this station's to send)
        site.on_settle(self._settle)
        self.sessions.stop_orphans(clean_shutdown=clean is True)

    # -- what the device model decides (device_model.py; SetVariables applies at once) -------------
    @property
    def heartbeat_interval_s(self) -> int:
        return self.device_model.integer("OCPPCommCtrlr.HeartbeatInterval")

    @heartbeat_interval_s.setter
    def heartbeat_interval_s(self, seconds: int) -> None:
        self.device_model.set_by_gateway("OCPPCommCtrlr.HeartbeatInterval", str(seconds))

    @property
    def sample_interval_s(self) -> int:
        """SampledDataCtrlr.TxUpdatedInterval while it is Enabled (0: no periodic values)."""
        enabled = self.device_model.boolean("SampledDataCtrlr.Enabled")
        return self.device_model.integer("SampledDataCtrlr.TxUpdatedInterval") if enabled else 0

    @sample_interval_s.setter
    def sample_interval_s(self, seconds: int) -> None:
        self.device_model.set_by_gateway("SampledDataCtrlr.TxUpdatedInterval", str(seconds))

    @property
    def aligned_interval_s(self) -> int:
        """AlignedDataCtrlr.Interval while it is Enabled (default 900 s after midnight UTC; 0: none)."""
        enabled = self.device_model.boolean("AlignedDataCtrlr.Enabled")
        return self.device_model.integer("AlignedDataCtrlr.Interval") if enabled else 0

    @aligned_interval_s.setter
    def aligned_interval_s(self, seconds: int) -> None:
        self.device_model.set_by_gateway("AlignedDataCtrlr.Interval", str(seconds))

    def _measurands_changed(self, keys: set[str]) -> None:
        self.sampler.measurands = self.device_model.measurands("SampledDataCtrlr.TxUpdatedMeasurands")
        self.sampler.aligned_measurands = self.device_model.measurands("AlignedDataCtrlr.Measurands")

    def _tx_points(self) -> tuple[frozenset[str], frozenset[str]]:
        points = self.device_model.measurands  # a MemberList, as the measurands
        return frozenset(points("TxCtrlr.TxStartPoint")), frozenset(points("TxCtrlr.TxStopPoint"))

    def _auth_changed(self, keys: set[str]) -> None:
        self.authorization.authorizer.settings = self.device_model.auth_settings()

    def online(self) -> bool:
        """Whether an event now is sent live: linked, and Accepted."""
        return self._peer is not None and self.accepted.is_set()

    # -- the Site's effects ------------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, talk and reconnect until cancelled; effects are collected all the while."""
        await run_marked(
            self.site.settings,
            self._link.stay_connected(self._session, lambda: self.registration, self._closed),
            self._effects.feed(self._take),
            self._sampled(),
            self._clock_aligned(),
        )

    def _take_pending(self) -> None:
        self._effects.take_pending(self._take)

    def _settle(self) -> bool:
        self._take_pending()
        return self.outbox.stored()

    def _take(self, event: object) -> None:
        if isinstance(event, StartTransaction | StopTransaction | ConnectorStatusChanged | VehicleConnectionChanged):
            self.tx_points.take(event)
            if isinstance(event, StopTransaction):
                self.resets.session_ended(event.connector_id)
        elif isinstance(event, ConnectorReadingChanged | MeterReadingChanged):
            self.sampler.note_registers()
            self.tx_points.take(event)
        elif isinstance(event, FaultRaised | FaultCleared | DeviceHealthChanged):
            self.problems.take(event)
        elif isinstance(event, SecurityEventSeen):
            self.security.take(event)
        elif isinstance(event, Authorize):
            self.sessions.card_tags[event.connector_id] = event.id_tag
            self._authorize_locally_or_ask(event, self.online())

    def _authorize_locally_or_ask(self, request: Authorize, online: bool) -> None:
        """The local list and the cache answer where the rules allow (always while the CSMS is away)."""
        now = self.site.clock.now()
        status = self.authorization.decide(request.id_tag, request.connector_id, online=online, at=now)
        if status is None:
            self._authorizations.put_nowait(request)
        else:
            self._authorization_result(request, status)

    def _authorization_result(self, request: Authorize, status: AuthStatus) -> None:
        self.site.authorization_result(request.connector_id, request.id_tag, status)
        if status is AuthStatus.ACCEPTED:  # a transaction may start here (TxStartPoint Authorized)
            self.tx_points.authorized(request.connector_id, request.id_tag, LOCAL_TOKEN, None)

    def remote_start_accepted(self, evse_id: int | None, id_tag: str, token_type: str, remote_start_id: int) -> None:
        self.sessions.remote_starts[evse_id] = (id_tag, token_type, remote_start_id)
        self.tx_points.authorized(evse_id, id_tag, token_type, remote_start_id)

    # -- the connection ----------------------------------------------------------------------------
    def _closed(self) -> None:
        self._peer = None

    async def _session(self, connection: ClientConnection) -> None:
        peer = Peer201(self, connection, self.settings.response_timeout_s)
        self._peer = peer
        await first_to_finish(peer.start(), self._converse(peer))

    async def _converse(self, peer: Peer201) -> None:
        await self._boot(peer)
        events = self.site.subscribe()  # before the first statuses: no change slips between
        try:
            unread = await self.statuses.send_all(peer)
            await first_to_finish(
                self._every(
                    "OCPPCommCtrlr", lambda: self.heartbeat_interval_s, lambda: send_call(peer, call.Heartbeat())
                ),
                self.statuses.follow(peer, events, unread),
                self._deliver(peer),
                self._authorize(peer),
                self.problems.deliver(peer),
                self.security.deliver(peer),
            )
        finally:
            self.site.unsubscribe(events)

    async def _boot(self, peer: Peer201) -> None:
        """BootNotification until Accepted; once accepted in this process, a reconnect does not boot."""
        while not self.accepted.is_set():
            try:
                result = await peer.call(self._boot_request(self.boot_reason), suppress=False)
            except (OCPPError, TimeoutError) as exc:
                log.warning("BootNotification failed: %s; retrying in %s s", exc, BOOT_RETRY_FALLBACK_S)
                await asyncio.sleep(BOOT_RETRY_FALLBACK_S)
                continue
            wait_s = self._booted(result)
            if wait_s == 0:
                return
            log.warning("CSMS answered BootNotification %s; retrying in %s s", result.status, wait_s)
            with contextlib.suppress(TimeoutError):  # a triggered BootNotification may be Accepted meanwhile
                await asyncio.wait_for(self.accepted.wait(), wait_s)

    def _boot_request(self, reason: str) -> call.BootNotification:
        station = {"model": self.settings.model, "vendor_name": self.settings.vendor}
        return call.BootNotification(charging_station=station, reason=reason)

    def _booted(self, result: Any) -> float:
        """Take a BootNotification's answer: the wait before the next boot (0: Accepted, none)."""
        self.registration = str(result.status)
        self.site.set_upstream(True, self.registration)
        interval = int(result.interval) if result.interval else 0
        if result.status != "Accepted":
            return interval or BOOT_RETRY_FALLBACK_S
        if interval > 0:
            self.heartbeat_interval_s = interval
        log.info("CSMS accepted BootNotification (%s; heartbeat %s s)", self.boot_reason, self.heartbeat_interval_s)
        self.accepted.set()
        return 0

    async def _deliver(self, peer: Peer201) -> None:
        """The outbox, head first, one CALL at a time, each until the CSMS has answered it.

        A record is checked against the schema before it takes a seqNo (one that can never be
        sent takes none); its seqNo is on disk before the frame leaves (see ledger.py). While a
        backlog drains, Updated events of one transaction go together (replay_batches.py)."""
        while True:
            record = await self.outbox.next()
            per_request = self.settings.meter_values_per_request  # a backlog's Updated go together
            batch, request, problem = await numbered_request(self.outbox, self.ledger, record, per_request)
            if problem is not None:
                if isinstance(self.outbox.set_aside(record, problem), Retry):
                    await asyncio.sleep(DISK_RETRY_S)
                continue
            result = await send_call(peer, request)
            if result is None:
                attempts = self.device_model.integer("OCPPCommCtrlr.MessageAttempts[TransactionEvent]")
                interval_s = self.device_model.integer("OCPPCommCtrlr.MessageAttemptInterval[TransactionEvent]")
                outcome = self.outbox.failed(record, attempts, interval_s)
                if isinstance(outcome, Retry):
                    await asyncio.sleep(outcome.delay_s)
                continue
            self.outbox.delivered_together(batch)
            self._answered(record, result)

    def _answered(self, record: OutboxRecord, result: Any) -> None:
        """Act on the CSMS's answer to a delivered TransactionEvent."""
        if record.action != "TransactionEvent" or record.local_ref is None:
            return
        event_type = record.payload.get("event_type")
        if event_type == "Ended":
            self.ledger.finished(record.local_ref)
        elif "id_token" in record.payload and isinstance(result.id_token_info, dict):  # Started, or authorised
            token = record.payload.get("id_token") or {}
            if token.get("type") == LOCAL_TOKEN:  # a card's answer: cached (an app's or free charging's: not)
                self.authorization.remember(str(token.get("id_token")), result.id_token_info, self.site.clock.now())
            status = auth_status(result.id_token_info.get("status"))
            session_ref = self.tx_points.domain_ref(record.local_ref)
            if status is not AuthStatus.ACCEPTED and session_ref is not None:  # StopTxOnInvalidId: true
                self.site.start_rejected(session_ref, stop_on_invalid_id=True)
            elif status is not AuthStatus.ACCEPTED:  # a transaction begun at the authorisation, no car yet
                self.tx_points.refused(record.local_ref)

    async def _authorize(self, peer: Peer201) -> None:
        """A card shown at a charger, asked of the CSMS (Authorize)."""
        while True:
            request = await self._authorizations.get()
            token = {"id_token": request.id_tag, "type": LOCAL_TOKEN}
            try:
                result = await send_call(peer, call.Authorize(id_token=token))
            except asyncio.CancelledError:
                self._authorizations.put_nowait(request)  # the link went: ask again after the reconnect
                raise
            if result is None:  # no answer (timeout, CALLERROR): as if the CSMS were away
                self._authorize_locally_or_ask(request, online=False)
                continue
            self.authorization.remember(request.id_tag, result.id_token_info, self.site.clock.now())
            status = auth_status(result.id_token_info.get("status"))
            self._take_pending()  # the transactions know every plug-in and start so far
            self._authorization_result(request, status)

    # -- meter values ------------------------------------------------------------------------------
    async def _sampled(self) -> None:
        await self._every("SampledDataCtrlr", lambda: self.sample_interval_s, self.take_samples)

    async def take_samples(self, context: str = "Sample.Periodic", only: int | None = None) -> None:
        self._take_pending()  # a sample sees every start emitted so far
        await self.sampler.take(context, only=only)

    async def take_aligned(self, boundary: datetime) -> None:
        self._take_pending()
        await self.sampler.take("Sample.Clock", stamp=boundary)

    async def _clock_aligned(self) -> None:
        while True:
            interval_s = self.aligned_interval_s
            if interval_s <= 0:
                await self.device_model.wait_changed("AlignedDataCtrlr", None)
                continue
            now = self.site.clock.now()
            boundary = next_boundary(now, interval_s)
            if not await self.device_model.wait_changed("AlignedDataCtrlr", (boundary - now).total_seconds()):
                await self.take_aligned(boundary)

    async def _send_live(self, evse_id: int, entries: list[dict[str, Any]]) -> None:
        """Values outside a session: to a CSMS that is there, or nowhere."""
        if self._peer is not None and self.online():
            await send_call(self._peer, call.MeterValues(evse_id=evse_id, meter_value=entries))

    # -- what the CSMS asks ------------------------------------------------------------------------
    async def reset(self, hard: bool) -> None:
        """Reset the native chargers (their own Reset), end every session, deliver the Ended events,
        then reconnect and boot again (RemoteReset)."""
        await native_relay.reset_chargers(self.site, "Immediate" if hard else "OnIdle")
        reason = StopReason.HARD_RESET if hard else StopReason.SOFT_RESET
        self.site.commands.stop_all_sessions(reason)
        self._take_pending()
        self.tx_points.end_without_session(reason)  # a transaction begun at the plug-in, or kept after a stop
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.response_timeout_s):
                await self.outbox.wait_empty()
        self.accepted.clear()
        self.registration = "none"
        self.boot_reason = "RemoteReset"
        kind = "an Immediate" if hard else "an OnIdle"
        self.site.security.report(SecurityEventKind.RESET, f"{kind} reset of the station asked by the CSMS")
        self.site.set_upstream(self._peer is not None, self.registration)
        if self._peer is not None:
            await self._peer.close()
        self.accepted.clear()  # (a boot answered while the link closed does not count: boot again)

    async def send_triggered(self, peer: Peer201, message: str, evse_id: int | None) -> None:
        """What a TriggerMessage asked for, sent after its answer."""
        if message == "Heartbeat":
            await send_call(peer, call.Heartbeat())
        elif message == "StatusNotification":
            for target in [evse_id] if evse_id else sorted(self.site.upstream_connectors):
                await self.statuses.send(peer, target, at=self.site.clock.now())
        elif message == "MeterValues":
            measurands = self.sampler.measurands
            for target, entries in evse_meter_values(self.site, measurands, "Trigger").items():
                if evse_id is None or target == evse_id:
                    await send_call(peer, call.MeterValues(evse_id=target, meter_value=entries))
        elif message == "TransactionEvent":
            await self.take_samples("Trigger", only=evse_id)
        elif message == "BootNotification" and (result := await send_call(peer, self._boot_request("Triggered"))):
            self._booted(result)

    async def _every(self, component: str, interval_s: Callable[[], int], send: Callable[[], Awaitable[Any]]) -> None:
        """Call ``send`` every ``interval_s()`` seconds (never while it is 0); a change of ``component``'s
        variables starts the interval over at once (a CSMS that shortens it need not wait out the old one)."""
        while True:
            seconds = interval_s()
            if not await self.device_model.wait_changed(component, seconds if seconds > 0 else None):
                await send()
