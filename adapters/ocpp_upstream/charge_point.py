"""VirtualChargePoint: the whole site as ONE OCPP 1.6J charge point towards the CSMS.

One websocket, one identity, connectors 1..N plus connector 0 (the gateway itself). Rules kept:
nothing but BootNotification before Accepted (retried at the CSMS's interval); after Accepted a
StatusNotification for connector 0 and every connector, then one on every change; Heartbeat;
periodic MeterValues with values stamped when they were read. A lost connection is retried with
exponential backoff and jitter; devices keep being polled meanwhile (that is the Site's job).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from ocpp.exceptions import OCPPError
from ocpp.v16 import ChargePoint, call
from ocpp.v16.enums import RegistrationStatus
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException
from websockets.typing import Subprotocol

from adapters.ocpp_upstream.configuration import OcppConfiguration
from adapters.ocpp_upstream.local_list import id_tag_info_from_ocpp
from adapters.ocpp_upstream.mapping import next_boundary, primary_fault, status_notification_fields
from adapters.ocpp_upstream.peer import Peer
from adapters.ocpp_upstream.samples import site_meter_values
from adapters.ocpp_upstream.transactions import TransactionLog, auth_status, start_call, stop_call
from gateway.config import UpstreamConfig
from gateway.domain.authorization import AuthorizationCache, LocalAuthList, UnreadableState, mask_id_tag
from gateway.domain.authorizer import AskBackOffice, Authorizer, RecordOutcome
from gateway.domain.events import ConnectorStatusChanged
from gateway.domain.model import ConnectorStatus, Fault, iso_utc
from gateway.domain.transactions import Authorize, AuthStatus, StartTransaction, StopReason, StopTransaction
from gateway.services.backoff import Backoff
from gateway.services.site import EventStream, Site

log = logging.getLogger(__name__)

TRANSACTION_RETRY_S = 5  # until the durable outbox (issue 6) brings TransactionMessageRetryInterval
BOOT_RETRY_FALLBACK_S = 30  # when a CSMS answers Pending/Rejected with interval 0, or errors


class VirtualChargePoint:
    """Keeps the upstream connection alive and speaks for the Site."""

    def __init__(self, site: Site, settings: UpstreamConfig) -> None:
        self.site = site
        self.settings = settings
        self.configuration = OcppConfiguration(settings, len(site.connectors))
        self.registration = "none"  # the last BootNotification result
        self.accepted = asyncio.Event()  # set once Boot was Accepted in this process
        self._peer: Peer | None = None
        self._reported_faults: dict[int, tuple[Fault, ...]] = {}  # per connector, as last sent
        self.transactions = TransactionLog()
        self._transactions_waiting = asyncio.Event()
        self._drained = asyncio.Event()  # set while no session message waits for the CSMS
        self._authorizations: asyncio.Queue[Authorize] = asyncio.Queue()
        self._effects = site.subscribe()
        self.authorizer = Authorizer(self.configuration.auth_settings(), LocalAuthList(), AuthorizationCache())
        self._restore()
        self.apply_site_settings()
        self._outage_reported = False

    # -- connection loop ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, talk, and reconnect forever; only cancellation ends it.

        Session effects are collected for the whole life of the process, connected or not (the
        subscription is made in the constructor, so nothing that happens before ``run`` is lost).
        """
        try:
            await _first_to_finish(self._stay_connected(), self._collect(self._effects))
        finally:
            self.site.unsubscribe(self._effects)

    async def _collect(self, events: EventStream) -> None:
        async for event in events:
            if isinstance(event, StartTransaction | StopTransaction):
                self.transactions.queue(event)
                self._drained.clear()
                self._transactions_waiting.set()
            elif isinstance(event, Authorize):
                self._authorize_locally_or_ask(event)

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

    async def _stay_connected(self) -> None:
        backoff = Backoff(1.0, self.settings.reconnect_max_s)
        while True:
            try:
                async with connect(
                    self.settings.endpoint,
                    subprotocols=[Subprotocol("ocpp1.6")],
                    additional_headers=self._auth_headers(),
                    open_timeout=10,
                    ping_interval=20,
                    ping_timeout=20,
                    max_size=2**20,
                ) as connection:
                    backoff.reset()
                    self._outage_reported = False
                    log.info("connected to CSMS %s", self.settings.endpoint)
                    self.site.set_upstream(True, self.registration)
                    await self._session(connection)
            except InvalidStatus as exc:
                code = exc.response.status_code
                hint = " (check upstream.password)" if code in (401, 403) else ""
                self._report_outage(f"CSMS refused the connection: HTTP {code}{hint}")
            except (OSError, WebSocketException, TimeoutError) as exc:
                self._report_outage(f"CSMS connection lost or unreachable: {exc or type(exc).__name__}")
            finally:
                self._peer = None
                self.site.set_upstream(False, self.registration)
            delay = backoff.next_delay()
            log.debug("reconnecting to CSMS in %.1f s", delay)
            await asyncio.sleep(delay)

    def _report_outage(self, message: str) -> None:
        """One WARNING when the CSMS goes away, DEBUG while it stays away (INFO when back)."""
        log.log(logging.DEBUG if self._outage_reported else logging.WARNING, message)
        self._outage_reported = True

    def _auth_headers(self) -> dict[str, str]:
        if self.settings.password is None:
            return {}
        secret = f"{self.settings.charge_point_id}:{self.settings.password.get_secret_value()}"
        return {"Authorization": "Basic " + base64.b64encode(secret.encode()).decode()}

    async def _session(self, connection: ClientConnection) -> None:
        if connection.subprotocol != "ocpp1.6":
            log.warning("CSMS did not confirm subprotocol ocpp1.6 (got %r); continuing", connection.subprotocol)
        peer = Peer(self, connection, self.settings.response_timeout_s)
        self._peer = peer
        await _first_to_finish(peer.start(), self._converse(peer))

    # -- what we say ------------------------------------------------------------------------------------
    async def _converse(self, peer: Peer) -> None:
        await self._boot(peer)
        events = self.site.subscribe()  # subscribe before the initial statuses: no change slips between
        try:
            await self._send_all_statuses(peer)
            await _first_to_finish(
                self._heartbeats(peer),
                self._meter_values(peer),
                self._clock_aligned(peer),
                self._status_changes(peer, events),
                self._deliver_transactions(peer),
                self._authorize(peer),
            )
        finally:
            self.site.unsubscribe(events)

    async def _boot(self, peer: Peer) -> None:
        """BootNotification until Accepted; once accepted in this process, a reconnect does not reboot."""
        while not self.accepted.is_set():
            try:
                result = await peer.call(
                    call.BootNotification(
                        charge_point_vendor=self.settings.vendor, charge_point_model=self.settings.model
                    ),
                    suppress=False,
                )
            except (OCPPError, TimeoutError) as exc:
                log.warning("BootNotification failed: %s; retrying in %s s", exc, BOOT_RETRY_FALLBACK_S)
                await asyncio.sleep(BOOT_RETRY_FALLBACK_S)
                continue
            self.registration = str(result.status)
            self.site.set_upstream(True, self.registration)
            interval = int(result.interval) if result.interval else 0
            if result.status == RegistrationStatus.accepted:
                if interval > 0:
                    self.configuration.set("HeartbeatInterval", str(interval))
                log.info("CSMS accepted BootNotification (heartbeat %s s)", self.configuration.heartbeat_interval_s)
                self.accepted.set()
                return
            wait_s = interval or BOOT_RETRY_FALLBACK_S
            log.warning("CSMS answered BootNotification %s; retrying in %s s", result.status, wait_s)
            await asyncio.sleep(wait_s)

    async def _send_all_statuses(self, peer: Peer) -> None:
        """Connector 0 and every connector, as they are now (after boot and after each reconnect)."""
        await self._send_statuses(peer)

    async def _send_statuses(self, peer: Peer, only: int | None = None, at: datetime | None = None) -> None:
        """Connector 0 and every connector (or just ``only``), stamped ``at`` or with when each status began."""
        if only in (None, 0):
            await self._send_status(peer, 0, ConnectorStatus.AVAILABLE, (), at or self.site.clock.now())
        for connector in self.site.connectors.values():
            if only not in (None, connector.connector_id):
                continue
            faults = connector.faults  # as sent: it may change while we await the answer
            self._reported_faults[connector.connector_id] = faults
            stamp = at or connector.status_since
            await self._send_status(peer, connector.connector_id, connector.status, faults, stamp)

    async def _send_status(
        self, peer: Peer, connector_id: int, status: ConnectorStatus, faults: tuple[Fault, ...], at: datetime
    ) -> None:
        fields = status_notification_fields(connector_id, status, faults)
        await _send(peer, call.StatusNotification(connector_id=connector_id, timestamp=iso_utc(at), **fields))

    async def _status_changes(self, peer: Peer, events: EventStream) -> None:
        """A StatusNotification per change; a fault raised beside a more severe one still gets its own."""
        async for event in events:
            if not isinstance(event, ConnectorStatusChanged):
                continue
            reported = self._reported_faults.get(event.connector_id, ())
            primary = primary_fault(event.faults)
            for fault in event.faults:
                if fault not in reported and fault != primary:
                    await self._send_status(peer, event.connector_id, event.status, (fault,), event.changed_at)
            await self._send_status(peer, event.connector_id, event.status, event.faults, event.changed_at)
            self._reported_faults[event.connector_id] = event.faults

    async def _deliver_transactions(self, peer: Peer) -> None:
        """Start and stop calls in the order they happened, each until the CSMS has it.

        An answered call leaves the queue before anything else is done with its answer, so a
        failure afterwards can never send it twice.
        """
        pending = self.transactions.pending
        while True:
            while pending:
                item = pending[0]
                if isinstance(item, StartTransaction):
                    result = await _send(peer, start_call(item))
                    if result is None:
                        await asyncio.sleep(TRANSACTION_RETRY_S)
                        continue
                    pending.popleft()
                    self.transactions.csms_ids[item.local_ref] = result.transaction_id
                    if auth_status(result.id_tag_info) is not AuthStatus.ACCEPTED:
                        stop = self.configuration.boolean("StopTransactionOnInvalidId")
                        self.site.start_rejected(item.local_ref, stop_on_invalid_id=stop)
                    self.remember(item.id_tag, result.id_tag_info)
                else:
                    start = self.transactions.starts.get(item.local_ref)
                    csms_id = self.transactions.csms_ids.get(item.local_ref)
                    if await _send(peer, stop_call(item, start, csms_id)) is None:
                        await asyncio.sleep(TRANSACTION_RETRY_S)
                        continue
                    pending.popleft()
                    self.transactions.finished(item)
            self._drained.set()
            self._transactions_waiting.clear()
            await self._transactions_waiting.wait()

    async def _authorize(self, peer: Peer) -> None:
        while True:
            request = await self._authorizations.get()
            try:
                result = await _send(peer, call.Authorize(id_tag=request.id_tag))
            except asyncio.CancelledError:
                self._authorizations.put_nowait(request)  # the link went: ask again after the reconnect
                raise
            if result is not None:
                self.remember(request.id_tag, result.id_tag_info)
            status = auth_status(result.id_tag_info) if result is not None else AuthStatus.INVALID
            self.site.authorization_result(request.connector_id, request.id_tag, status)

    async def _heartbeats(self, peer: Peer) -> None:
        await self._every("HeartbeatInterval", lambda: _send(peer, call.Heartbeat()))

    async def _meter_values(self, peer: Peer) -> None:
        await self._every("MeterValueSampleInterval", lambda: self._send_samples(peer))

    async def _send_samples(self, peer: Peer, only_connector: int | None = None) -> None:
        await self._send_meter_values(peer, self.configuration.meter_values_sampled_data, only=only_connector)

    async def _send_meter_values(
        self,
        peer: Peer,
        measurands: list[str],
        context: str = "Sample.Periodic",
        stamp: datetime | None = None,
        only: int | None = None,
    ) -> None:
        """MeterValues per connector from the latest readings, with the running transaction's id."""
        for connector_id, values in site_meter_values(self.site, measurands, context, stamp):
            if only is not None and connector_id != only:
                continue
            transaction_id = self.transactions.active_id(connector_id)
            await _send(
                peer, call.MeterValues(connector_id=connector_id, meter_value=values, transaction_id=transaction_id)
            )

    async def reset(self, hard: bool) -> None:
        """Reset as the CSMS asked: end every session (SoftReset/HardReset), deliver the stops, then
        reconnect and boot again. The gateway process itself keeps running: its devices are fine."""
        self.site.stop_all_sessions(StopReason.HARD_RESET if hard else StopReason.SOFT_RESET)
        await asyncio.sleep(0)  # let the collector queue the stops before waiting for their delivery
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.response_timeout_s):
                await self._drained.wait()
        self.accepted.clear()
        if self._peer is not None:
            await self._peer.close()

    async def send_triggered(self, peer: Peer, message: str, connector_id: int | None) -> None:
        """The message a TriggerMessage asked for, sent after its answer (never inside the handler)."""
        if message == "Heartbeat":
            await _send(peer, call.Heartbeat())
        elif message == "MeterValues":
            await self._send_samples(peer, connector_id)
        elif message == "StatusNotification":
            await self._send_statuses(peer, only=connector_id, at=self.site.clock.now())
        elif message == "BootNotification":
            result = await _send(
                peer,
                call.BootNotification(charge_point_vendor=self.settings.vendor, charge_point_model=self.settings.model),
            )
            if result is not None:
                self.registration = str(result.status)
                self.site.set_upstream(True, self.registration)

    async def _every(self, key: str, send: Callable[[], Awaitable[Any]]) -> None:
        """Call ``send`` every ``key`` seconds (never while it is 0); a new value restarts the wait."""
        while True:
            interval_s = self.configuration.integer(key)
            changed = await self.configuration.wait_changed(key, interval_s or None)
            if not changed:
                await send()

    async def _clock_aligned(self, peer: Peer) -> None:
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
            measurands = self.configuration.measurands("MeterValuesAlignedData")
            await self._send_meter_values(peer, measurands, "Sample.Clock", boundary)


async def _send(peer: ChargePoint, payload: Any) -> Any | None:
    """One CALL whose failure is the CSMS's problem, not ours: log it and carry on.

    A CALLERROR or a missing answer must not end the connection or the process; the durable
    outbox (a later issue) retries what must not be lost. Returns the result, or None on failure.
    """
    action = type(payload).__name__
    try:
        return await peer.call(payload, suppress=False)
    except OCPPError as exc:
        log.warning("CSMS answered %s with CALLERROR %s: %s", action, exc.code, exc.description)
    except TimeoutError:
        log.warning("CSMS did not answer %s in time", action)
    return None


async def _first_to_finish(*coroutines: Awaitable[Any]) -> None:
    """Run coroutines together; when one ends (or fails) cancel the rest and re-raise its error."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await _cancel_all(tasks)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def _cancel_all(tasks: list[asyncio.Future[Any]]) -> None:
    """Cancel until every task has ended.

    On Python 3.11 ``asyncio.wait_for`` (inside the ocpp library's ``call``) can swallow a
    cancellation that lands just as the answer arrives; the task then carries on. Cancelling
    again until it is done keeps shutdown and reconnects from hanging on such a task.
    """
    pending = [task for task in tasks if not task.done()]
    while pending:
        for task in pending:
            task.cancel()
        _, still = await asyncio.wait(pending, timeout=0.5)
        pending = list(still)
