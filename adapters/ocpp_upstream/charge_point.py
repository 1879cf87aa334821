"""VirtualChargePoint: the whole site as ONE OCPP 1.6J charge point towards the CSMS.

One websocket, one identity, connectors 1..N plus connector 0 (the gateway itself). Rules kept:
nothing but BootNotification before Accepted (retried at the CSMS's interval); after Accepted a
StatusNotification for connector 0 and every connector, then one on every change; Heartbeat;
periodic MeterValues with values stamped when they were read. A lost connection is retried with
exponential backoff and jitter; devices keep being polled meanwhile (that is the Site's job).

Billing messages (StartTransaction, StopTransaction, a session's MeterValues and clock-aligned
readings) go through the durable outbox: they are queued when they happen, connected or not,
and delivered in order, one at a time, by ``_deliver``. Statuses and heartbeats are live only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from ocpp.exceptions import OCPPError
from ocpp.v16 import call
from ocpp.v16.enums import RegistrationStatus
from websockets.asyncio.client import ClientConnection

from adapters.ocpp_link import CLEAN_SHUTDOWN, UpstreamLink, first_to_finish, run_marked, send_call
from adapters.ocpp_upstream.batching import batch_for, combined
from adapters.ocpp_upstream.configuration import OcppConfiguration
from adapters.ocpp_upstream.local_list import id_tag_info_from_ocpp
from adapters.ocpp_upstream.mapping import next_boundary
from adapters.ocpp_upstream.outgoing import call_problem
from adapters.ocpp_upstream.peer import Peer
from adapters.ocpp_upstream.sampling import MeterSampler
from adapters.ocpp_upstream.statuses import StatusReports
from adapters.ocpp_upstream.transactions import (
    OpenTransaction,
    TransactionLog,
    auth_status,
    start_payload,
)
from adapters.ocpp_upstream.triggered import pending_meter_values
from gateway.config import UpstreamConfig
from gateway.domain.authorization import AuthorizationCache, LocalAuthList, UnreadableState, mask_id_tag
from gateway.domain.authorizer import AskBackOffice, Authorizer, RecordOutcome
from gateway.domain.events import ConnectorReadingChanged, MeterReadingChanged, SessionStoppedAtRestart
from gateway.domain.model import iso_utc
from gateway.domain.outbox import NewRecord, RecordKind
from gateway.domain.ports import SettingsStore
from gateway.domain.transactions import Authorize, AuthStatus, StartTransaction, StopReason, StopTransaction
from gateway.services.outbox import DISK_RETRY_S, Outbox, Retry
from gateway.services.site import Site
from gateway.services.telemetry import Telemetry

log = logging.getLogger(__name__)

BOOT_RETRY_FALLBACK_S = 30  # when a CSMS answers Pending/Rejected with interval 0, or errors


class VirtualChargePoint:
    """Keeps the upstream connection alive and speaks for the Site."""

    def __init__(
        self,
        site: Site,
        settings: UpstreamConfig,
        outbox: Outbox,
        telemetry: Telemetry | None = None,
        ledger: SettingsStore | None = None,
    ) -> None:
        """``telemetry`` counts the CALLs the CSMS answered and those that failed (``/metrics``);
        ``ledger`` keeps the sessions' CSMS ids and open sessions across restarts (default: the
        Site's settings store; the gateway gives it a file of its own)."""
        self.site = site
        self.telemetry = telemetry or Telemetry()
        self.settings = settings
        self._link = UpstreamLink(site, settings, "ocpp1.6")
        self.outbox = outbox
        self.configuration = OcppConfiguration(settings, len(site.upstream_connectors))
        self.registration = "none"  # the last BootNotification result
        self.accepted = asyncio.Event()  # set once Boot was Accepted in this process
        self._peer: Peer | None = None
        self.statuses = StatusReports(site, send_call)
        self.transactions = TransactionLog(ledger or site.settings)
        self.sampler = MeterSampler(site, self.configuration, self.transactions, outbox, self._send_live)
        self._authorizations: asyncio.Queue[Authorize] = asyncio.Queue()
        self._effects = site.subscribe()
        site.on_settle(self._settle)  # a native charger is answered only once its message is queued
        self.authorizer = Authorizer(self.configuration.auth_settings(), LocalAuthList(), AuthorizationCache())
        self._restore()
        self.apply_site_settings()
        self._stop_orphaned_sessions()

    # -- connection loop ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, talk, and reconnect forever; only cancellation ends it.

        Session effects are collected for the whole life of the process, connected or not (the
        subscription is made in the constructor, so nothing that happens before ``run`` is lost), and
        it stays after ``run`` ends: a native stop answered while the gateway shuts down is still queued.
        """
        await run_marked(
            self.site.settings,
            self._link.stay_connected(self._session, lambda: self.registration, self._closed),
            self._effects.feed(self._take),
            self._sampled(),
            self._clock_aligned(),
        )

    def _take_pending(self) -> None:
        """Session effects already emitted but not yet collected (so a sample sees every start)."""
        self._effects.take_pending(self._take)

    def _settle(self) -> bool:
        """Queue what the Site emitted so far; True if nothing waits in memory for the disk."""
        self._take_pending()
        return self.outbox.stored()

    def _take(self, event: object) -> None:
        if isinstance(event, StartTransaction):
            self.transactions.started(event)
            start = start_payload(event)
            self._queue(RecordKind.START, "StartTransaction", start, event.started_at, event.local_ref)
        elif isinstance(event, StopTransaction):
            self._queue_stop(event)
        elif isinstance(event, ConnectorReadingChanged | MeterReadingChanged):
            self.sampler.note_session_registers()
        elif isinstance(event, Authorize):
            self._authorize_locally_or_ask(event)

    def _queue(self, kind: RecordKind, action: str, payload: dict[str, Any], at: datetime, ref: str | None) -> None:
        self.outbox.enqueue(NewRecord(kind, action, payload, iso_utc(at), ref))

    def _queue_stop(self, stop: StopTransaction) -> None:
        """Queue the stop first, then forget the open session: a kill in between leaves it open, to
        be stopped after the restart (which sees the queued stop and does not stop it twice)."""
        payload = self.transactions.stop_payload(stop)
        self._queue(RecordKind.STOP, "StopTransaction", payload, stop.stopped_at, stop.local_ref)
        self.transactions.closed(stop.local_ref)

    def _stop_orphaned_sessions(self) -> None:
        """Sessions open when the last process ended are stopped as OCPP 1.6 expects of a charge
        point that lost power (PowerLoss) or was restarted (Reboot), with the last register
        reading seen as meterStop. A car still plugged in starts a new session at the first poll."""
        reason = StopReason.REBOOT if self.site.settings.load(CLEAN_SHUTDOWN) else StopReason.POWER_LOSS
        queued = {(info.kind, info.local_ref) for info in self.outbox.store.index()}
        for orphan in self.transactions.left_open_by_last_run():
            ref = orphan.local_ref
            if (RecordKind.STOP, ref) in queued:  # killed between queueing its stop and closing it
                self.transactions.closed(ref)
                continue
            if (RecordKind.START, ref) not in queued and ref not in self.transactions.csms_ids:
                log.info("connector %s: session %s never reached the queue; nothing to stop", orphan.connector_id, ref)
                self.transactions.closed(ref)
                continue
            if self.site.native.owns(orphan.connector_id):  # the charger did not stop with us
                self._resume_native(orphan)
                continue
            stopped_at = datetime.fromisoformat(orphan.last_register_at)
            stop = StopTransaction(orphan.connector_id, ref, orphan.id_tag, orphan.last_register_wh, stopped_at, reason)
            log.warning(
                "connector %s: session %s was open when the gateway stopped; stopped (%s) at %s Wh",
                orphan.connector_id,
                orphan.local_ref,
                reason.value,
                orphan.last_register_wh,
            )
            self._queue_stop(stop)
            self.site.request(SessionStoppedAtRestart(stop))  # the history keeps its stop values

    def _resume_native(self, orphan: OpenTransaction) -> None:
        """A native charger's session outlives a gateway restart: it is taken up again, to be
        stopped by the charger's own StopTransaction (which it resends until it is answered)."""
        ref, connector_id = orphan.local_ref, orphan.connector_id
        self.transactions.running[connector_id] = ref
        started_at = datetime.fromisoformat(orphan.started_at)
        self.site.native.resume(connector_id, ref, orphan.id_tag, orphan.meter_start_wh, started_at)
        if (csms_id := self.transactions.csms_id(ref)) is not None:
            self.site.transaction_numbered(ref, csms_id)
        log.info("connector %s: the native charger's session %s goes on after the restart", connector_id, ref)

    def _authorize_locally_or_ask(self, request: Authorize) -> None:
        """The local list and cache answer where the rules allow (always when the CSMS is away)."""
        online = self._peer is not None and self.accepted.is_set()
        self.authorizer.settings = self.configuration.auth_settings()
        decision = self.authorizer.decide(request.id_tag, online=online, at=self.site.clock.now())
        if isinstance(decision, AskBackOffice):
            self._authorizations.put_nowait(request)
            return
        verdict = "accepted" if decision.accepted else "refused"
        tag = mask_id_tag(request.id_tag)
        log.info("id tag %s on connector %s %s locally (%s)", tag, request.connector_id, verdict, decision.source)
        self.site.authorization_result(request.connector_id, request.id_tag, decision.status)

    def _restore(self) -> None:
        """Take back what the CSMS set before a restart: configuration keys, local list, cache."""
        store = self.site.settings
        skipped = self.configuration.restore(store.load("ocpp_configuration") or {})
        if skipped:
            log.warning("stored configuration keys ignored: %s", ", ".join(skipped))
        try:
            if (stored_list := store.load("local_list")) is not None:
                self.authorizer.local_list = LocalAuthList.from_dict(stored_list)
            if (stored_cache := store.load("authorization_cache")) is not None:
                self.authorizer.cache = AuthorizationCache.from_dict(stored_cache)
        except UnreadableState as exc:
            log.warning("stored local authorisation list or cache ignored: %s", exc)

    def apply_site_settings(self) -> None:
        """Configuration keys the Site itself follows."""
        self.site.connection_timeout_s = float(self.configuration.integer("ConnectionTimeOut"))

    def save_configuration(self) -> None:
        self.site.settings.save("ocpp_configuration", self.configuration.to_dict())

    def save_authorization(self) -> None:
        self.site.settings.save("local_list", self.authorizer.local_list.to_dict())
        self.site.settings.save("authorization_cache", self.authorizer.cache.to_dict())

    def remember(self, id_tag: str, id_tag_info: Any) -> None:
        """Feed the authorisation cache from a CSMS answer (Authorize or StartTransaction)."""
        try:
            info = id_tag_info_from_ocpp(id_tag_info)
        except ValueError as exc:
            log.warning("unreadable idTagInfo from the CSMS: %s", exc)
            return
        self.authorizer.settings = self.configuration.auth_settings()
        outcome = self.authorizer.record(id_tag, info, self.site.clock.now())
        if outcome is RecordOutcome.LOCAL_LIST_CONFLICT:
            log.warning("the CSMS and the local list disagree about id tag %s", mask_id_tag(id_tag))
        elif outcome is RecordOutcome.CACHED:
            self.save_authorization()

    def _closed(self) -> None:
        self._peer = None

    async def _session(self, connection: ClientConnection) -> None:
        peer = Peer(self, connection, self.settings.response_timeout_s)
        self._peer = peer
        await first_to_finish(peer.start(), self._converse(peer))

    # -- what we say ------------------------------------------------------------------------------------
    async def _converse(self, peer: Peer) -> None:
        await self._boot(peer)
        events = self.site.subscribe()  # subscribe before the initial statuses: no change slips between
        try:
            unread = await self.statuses.send_all(peer)
            await first_to_finish(
                self._heartbeats(peer),
                self.statuses.follow(peer, events, unread),
                self._deliver(peer),
                self._authorize(peer),
            )
        finally:
            self.site.unsubscribe(events)

    async def _boot(self, peer: Peer) -> None:
        """BootNotification until Accepted; once accepted in this process, a reconnect does not reboot."""
        while not self.accepted.is_set():
            try:
                result = await peer.call(self._boot_request(), suppress=False)
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

    def _boot_request(self) -> call.BootNotification:
        return call.BootNotification(charge_point_vendor=self.settings.vendor, charge_point_model=self.settings.model)

    def _booted(self, result: Any) -> float:
        """Take a BootNotification's answer (ours or one the CSMS triggered): Accepted applies the
        heartbeat interval and opens the gate; returns the wait before the next boot (0: none)."""
        self.registration = str(result.status)
        self.site.set_upstream(True, self.registration)
        interval = int(result.interval) if result.interval else 0
        if result.status != RegistrationStatus.accepted:
            return interval or BOOT_RETRY_FALLBACK_S
        if interval > 0:
            self.configuration.set("HeartbeatInterval", str(interval))
        log.info("CSMS accepted BootNotification (heartbeat %s s)", self.configuration.heartbeat_interval_s)
        self.accepted.set()
        return 0

    async def _deliver(self, peer: Peer) -> None:
        """The outbox, head first, one call at a time, each until the CSMS has answered it.

        An answered record leaves the queue before anything else is done with its answer, so a
        failure afterwards can never send it twice; a dropped link leaves it at the head. The one
        exception is the CSMS's transactionId: a StartTransaction leaves the queue only once its id
        is on disk (a disk that refuses keeps it at the head, unsent, until it takes the id), and a
        queued start whose id is already known (a kill came between the two) is written off
        unsent, so the CSMS never numbers one session twice.
        """
        while True:
            record = await self.outbox.next()
            csms_id = self.transactions.csms_id(record.local_ref)
            if record.action == "StartTransaction" and csms_id is not None:
                if self.transactions.ids_on_disk():
                    self.outbox.delivered(record)
                else:
                    await asyncio.sleep(DISK_RETRY_S)
                continue
            batch = batch_for(self.outbox, record, self.settings.meter_values_per_request)
            request, problem = await call_problem(combined(batch), csms_id)
            if problem is not None and len(batch) > 1:  # one of them is damaged: the head goes alone
                batch = [record]
                request, problem = await call_problem(record, csms_id)
            if problem is not None:  # ours, not the CSMS's: never sent, never retried
                if isinstance(self.outbox.set_aside(record, problem), Retry):
                    await asyncio.sleep(DISK_RETRY_S)
                continue
            result = await send_call(peer, request)
            if result is None:
                attempts = self.configuration.integer("TransactionMessageAttempts")
                interval_s = self.configuration.integer("TransactionMessageRetryInterval")
                outcome = self.outbox.failed(record, attempts, interval_s)
                if isinstance(outcome, Retry):
                    await asyncio.sleep(outcome.delay_s)
                continue
            if record.action == "StartTransaction" and record.local_ref is not None:
                self.transactions.numbered(record.local_ref, result.transaction_id)
                self.site.transaction_numbered(record.local_ref, result.transaction_id)
                if auth_status(result.id_tag_info) is not AuthStatus.ACCEPTED:
                    stop = self.configuration.boolean("StopTransactionOnInvalidId")
                    self.site.start_rejected(record.local_ref, stop_on_invalid_id=stop)
                self.remember(record.payload["id_tag"], result.id_tag_info)
                continue  # written off at the next turn, once its id is on disk (see above)
            self.outbox.delivered_together(batch)
            if record.action == "StopTransaction" and record.local_ref is not None:
                self.transactions.finished(record.local_ref)

    async def _authorize(self, peer: Peer) -> None:
        while True:
            request = await self._authorizations.get()
            try:
                result = await send_call(peer, call.Authorize(id_tag=request.id_tag))
            except asyncio.CancelledError:
                self._authorizations.put_nowait(request)  # the link went: ask again after the reconnect
                raise
            if result is not None:
                self.remember(request.id_tag, result.id_tag_info)
            status = auth_status(result.id_tag_info) if result is not None else AuthStatus.INVALID
            self.site.authorization_result(request.connector_id, request.id_tag, status)

    async def _heartbeats(self, peer: Peer) -> None:
        await self._every("HeartbeatInterval", lambda: send_call(peer, call.Heartbeat()))

    async def _sampled(self) -> None:
        """Periodic MeterValues every MeterValueSampleInterval, connected or not."""
        await self._every("MeterValueSampleInterval", self.take_samples)

    async def take_samples(self, only: int | None = None, context: str = "Sample.Periodic") -> None:
        """MeterValues of every connector (or ``only``) from the latest readings (see MeterSampler)."""
        self._take_pending()
        await self.sampler.take_samples(only, context)

    async def take_aligned(self, boundary: datetime) -> None:
        """Clock-aligned MeterValues stamped with ``boundary`` (see MeterSampler)."""
        self._take_pending()
        await self.sampler.take_aligned(boundary)

    async def _send_live(self, connector_id: int, values: list[Any]) -> None:
        """MeterValues outside a session: to a CSMS that is there, or nowhere."""
        if self._peer is not None and self.accepted.is_set():
            await send_call(self._peer, call.MeterValues(connector_id=connector_id, meter_value=values))

    async def reset(self, hard: bool) -> None:
        """Reset as the CSMS asked: end every session (SoftReset/HardReset), deliver the stops, then
        reconnect and boot again. The gateway process itself keeps running: its devices are fine."""
        self.site.commands.stop_all_sessions(StopReason.HARD_RESET if hard else StopReason.SOFT_RESET)
        self._take_pending()  # queue the stops now, before waiting for their delivery
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.response_timeout_s):
                await self.outbox.wait_empty()
        self.accepted.clear()
        self.registration = "none"  # until the new BootNotification is answered (readiness tells the truth)
        self.site.set_upstream(self._peer is not None, self.registration)
        if self._peer is not None:
            await self._peer.close()

    async def send_triggered(self, peer: Peer, message: str, connector_id: int | None) -> None:
        """The message a TriggerMessage asked for, sent after its answer (never inside the handler)."""
        if message == "Heartbeat":
            await send_call(peer, call.Heartbeat())
        elif message == "MeterValues" and not self.accepted.is_set():  # Pending: see triggered.py
            for request in pending_meter_values(self.site, self.configuration.meter_values_sampled_data, connector_id):
                await send_call(peer, request)
        elif message == "MeterValues":
            await self.take_samples(connector_id, context="Trigger")
        elif message == "StatusNotification":
            await self.statuses.send(peer, only=connector_id, at=self.site.clock.now())
        elif message == "BootNotification" and (result := await send_call(peer, self._boot_request())) is not None:
            self._booted(result)

    async def _every(self, key: str, send: Callable[[], Awaitable[Any]]) -> None:
        """Call ``send`` every ``key`` seconds (never while it is 0); a new value restarts the wait."""
        while True:
            interval_s = self.configuration.integer(key)
            changed = await self.configuration.wait_changed(key, interval_s or None)
            if not changed:
                await send()

    async def _clock_aligned(self) -> None:
        """MeterValues at every ClockAlignedDataInterval boundary (Sample.Clock, stamped with the
        boundary), for every connector and the site meter; 0 switches them off."""
        key = "ClockAlignedDataInterval"
        while True:
            interval_s = self.configuration.integer(key)
            if interval_s == 0:
                await self.configuration.wait_changed(key, None)
                continue
            now = self.site.clock.now()
            boundary = next_boundary(now, interval_s)
            if await self.configuration.wait_changed(key, (boundary - now).total_seconds()):
                continue
            await self.take_aligned(boundary)
