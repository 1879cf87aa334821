"""The operator's history: turns the Site's events into sessions, an event log and a one-minute
series, and hands them to a ``HistoryStore`` once a second.

Writes never hold up charging or billing:

* Events are taken from the Site's stream in bulk once a second (``flush_interval_s``), turned
  into rows in memory (cheap, on the event loop), and written as ONE transaction per second in a
  worker thread: a commit fsyncs (``synchronous=FULL``), which can take tens of milliseconds on an
  SD card, and that wait must not be the event loop's. One fsync per second instead of one per
  event also bounds the flash wear of a busy site.
* The worker is a single thread of our own (not ``asyncio.to_thread``'s shared pool): SQLite
  connections want one user at a time, and at shutdown the last batch can be written after the
  one in flight, in order, without a lock.
* A refusing disk keeps the rows in memory (up to ``MAX_PENDING``, the oldest dropped beyond,
  counted) and is logged once per outage; the history never raises into the gateway.

The billing facts are the very values the outbox carries: meterStart and meterStop come from the
StartTransaction and StopTransaction effects, the delivery state from the outbox itself.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from gateway.domain.commands import Command
from gateway.domain.events import (
    AvailabilityChanged,
    CommandReceived,
    ConnectorReadingChanged,
    DeviceHealthChanged,
    Event,
    FaultCleared,
    FaultRaised,
    SecurityEventSeen,
    SessionStoppedAtRestart,
    SiteLoadChanged,
    TransactionNumbered,
    UpstreamStateChanged,
)
from gateway.domain.history import (
    EVERYTHING,
    DeliveryState,
    EventKind,
    EventRecord,
    HistoryEvent,
    HistoryQuery,
    HistoryWrite,
    Retention,
    SeriesRecord,
    SeriesSample,
    SessionDelivery,
    SessionNumbered,
    SessionRecord,
    SessionStarted,
    SessionStopped,
)
from gateway.domain.model import Fault, FaultKind
from gateway.domain.outbox import OutboxRecord, RecordKind, StoreProblem
from gateway.domain.ports import HistoryStore
from gateway.domain.transactions import StartTransaction, StopTransaction
from gateway.services.history_lines import COMMAND_BURST, LimitWatch, Throttle
from gateway.services.site import Site
from gateway.services.telemetry import LinkState

log = logging.getLogger(__name__)

MAX_PENDING = 50_000  # rows held while the disk refuses (about an hour of a 50-connector site's series)
PRUNE_ROWS = 2_000  # rows deleted per prune call: a few ms, however much is due
PRUNE_INTERVAL_S = 3600.0
OPEN_FAULTS_READ = 10_000  # the newest fault lines read at start to find the faults still open
SQLITE_INT = 2**63  # a connector number a command named that SQLite could not store is kept as None

FaultKey = tuple[int | None, str | None, Fault]  # (connector, meter, fault)


class History:
    """Follows the Site and keeps its history in ``store`` (see the module docstring)."""

    def __init__(
        self,
        site: Site,
        store: HistoryStore,
        retention: Retention | None = None,
        *,
        flush_interval_s: float = 1.0,
        prune_interval_s: float = PRUNE_INTERVAL_S,
    ) -> None:
        self.site = site
        self.store = store
        self.retention = retention or Retention()
        self.flush_interval_s = flush_interval_s
        self.prune_interval_s = prune_interval_s
        self._events = site.subscribe()  # from construction on: no session may start unseen
        self._pending: list[HistoryWrite] = []
        self._open: dict[int, str] = {}  # connector -> local ref of its running session
        self._peak: dict[str, float | None] = {}  # local ref -> highest power seen in it
        self._faults: dict[FaultKey, datetime] = {}  # -> raised at
        self._from_last_run: dict[FaultKey, str] = {}  # open when the last process ended -> its device
        self._csms_connected: bool | None = None
        self._broker_connected: bool | None = None
        self._commands = Throttle(burst=COMMAND_BURST)  # per connector, command and source, a minute
        self._site_limits = Throttle()  # one a minute: a HEMS following the sun moves it all day
        self._limits = LimitWatch()
        self._last_minute: datetime | None = None
        self._next_prune = 0.0  # (monotonic) the first prune comes with the first flush
        self._dropped = 0
        self._disk_error: str | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="history")

    def problems(self) -> list[StoreProblem]:
        """What the store found wrong (a file set aside), for the status views."""
        return self.store.problems()

    # -- running ----------------------------------------------------------------------------------
    async def run(self) -> None:
        """Once a second: take the events, add the minute's series, write; prune now and then.
        Cancelled (the gateway stops), it writes what it holds before it returns."""
        loop = asyncio.get_running_loop()
        try:
            # on the event loop, once: before any event (or an outbox delivery) is taken
            self.seed_open_faults()
            while True:
                await asyncio.sleep(self.flush_interval_s)
                self.take_events()
                self.take_due(self.site.clock.now())
                self.sample_series(self.site.clock.now())
                await self.flush()
                if loop.time() >= self._next_prune:
                    removed = await loop.run_in_executor(self._worker, self._prune)
                    # more due: go on next second (bounded work per call), else wait the interval
                    more = removed >= PRUNE_ROWS
                    self._next_prune = loop.time() + (self.flush_interval_s if more else self.prune_interval_s)
        finally:
            self.take_events()
            self.take_due(self.site.clock.now() + timedelta(days=1))  # what waits for its minute goes now
            batch, self._pending = self._pending, []
            # the same thread, so after any batch still in flight, in order; blocks only at shutdown
            self._written(batch, self._worker.submit(self._write, batch).result())
            self._worker.submit(self.store.close).result()
            self._worker.shutdown()

    def take_events(self) -> None:
        """Turn every event collected since the last call into rows (on the event loop)."""
        while (event := self._events.get_nowait()) is not None:
            self.take(event)

    def take_due(self, now: datetime) -> None:
        """The lines held back to bound the log (a repeated command, a flapping limit) whose
        minute has passed."""
        self._pending.extend([*self._commands.due(now), *self._site_limits.due(now), *self._limits.due(now)])

    def seed_open_faults(self) -> None:
        """(At start) The faults the log shows raised and not cleared: the last process ended
        while they were active. One still active is not raised again (it goes on, and its
        clearing gets its whole duration); one gone by the time its device first answers is
        cleared then. Read once, before any event is taken."""
        kinds = (EventKind.FAULT_RAISED.value, EventKind.FAULT_CLEARED.value)
        query = HistoryQuery(kinds=kinds, limit=OPEN_FAULTS_READ)
        try:
            records = self.store.events(query)
        except Exception as exc:  # an unreadable history must not stop the gateway: no seed, that is all
            log.warning("history: the faults open before the restart could not be read: %s", exc)
            return
        seen: set[FaultKey] = set()
        for record in records:  # newest first: the first line of a fault says whether it is open
            key = _fault_key(record)
            if key is None or key in seen:
                continue
            seen.add(key)
            if record.kind == EventKind.FAULT_RAISED and key not in self._faults:
                self._faults[key] = datetime.fromisoformat(record.at)
                self._from_last_run[key] = record.device or ""

    async def flush(self) -> None:
        """Write what is pending, in one transaction, in the worker thread."""
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        error = await asyncio.get_running_loop().run_in_executor(self._worker, self._write, batch)
        self._written(batch, error)

    def _write(self, batch: list[HistoryWrite]) -> OSError | None:
        """(worker thread) The store's write; what the disk refused is returned, not raised."""
        try:
            self.store.write(batch)
        except OSError as exc:
            return exc
        except Exception:  # a bug of ours: loud in the log, but the history is never worth a charger
            log.exception("history: a batch of %d rows could not be written and is dropped", len(batch))
        return None

    def _written(self, batch: list[HistoryWrite], error: OSError | None) -> None:
        """(event loop) After a write: a refused batch goes back in front of what came since."""
        if error is not None:
            self._pending = batch + self._pending
            if len(self._pending) > MAX_PENDING:
                over = len(self._pending) - MAX_PENDING
                self._dropped += over
                del self._pending[:over]
            if self._disk_error is None:
                log.warning("history: the disk refuses writes (%s); holding them in memory, charging goes on", error)
            self._disk_error = str(error)
        elif self._disk_error is not None:
            lost = f", {self._dropped} older rows were dropped" if self._dropped else ""
            log.info("history: the disk takes writes again%s", lost)
            self._disk_error, self._dropped = None, 0

    def _prune(self) -> int:
        """(worker thread) Bounded deletes; returns how many rows went."""
        try:
            return self.store.prune(self.site.clock.now(), self.retention, PRUNE_ROWS)
        except OSError as exc:
            log.warning("history: pruning failed: %s", exc)
            return 0

    # -- from the telemetry ------------------------------------------------------------------------
    def broker_changed(self, link: LinkState) -> None:
        """The MQTT broker link changed (told by ``Telemetry``): a line per up or down, not per
        attempt or new reason."""
        if link.connected == self._broker_connected:
            return
        self._broker_connected = link.connected
        at = link.since or self.site.clock.now()
        if link.connected:
            self._pending.append(HistoryEvent(at, EventKind.BROKER_UP))
        else:
            self._pending.append(HistoryEvent(at, EventKind.BROKER_DOWN, detail={"reason": link.reason}))

    # -- from the outbox ----------------------------------------------------------------------------
    def outbox_settled(self, record: OutboxRecord, state: DeliveryState) -> None:
        """The outbox delivered or parked ``record`` (called on the event loop by the outbox)."""
        if record.local_ref is None:
            return
        # the session's start and stop events are in the stream already (the Site emitted them
        # before the outbox queued them): rows for them first, so the delivery lands on its row
        self.take_events()
        if (record.kind == RecordKind.STOP and state == DeliveryState.DELIVERED) or state == DeliveryState.PARKED:
            self._pending.append(SessionDelivery(record.local_ref, state))

    # -- events into rows -------------------------------------------------------------------------
    def sample_series(self, now: datetime) -> None:
        """Once per minute mark: each connector's last reading, status and share, and the grid
        meter's reading with what all chargers may draw (connector 0). Read from the Site, which
        keeps the latest of everything."""
        minute = now.replace(second=0, microsecond=0)
        if minute == self._last_minute:
            return
        self._last_minute = minute
        load = self.site.load
        for cid, connector in self.site.connectors.items():
            reading = connector.reading
            power, energy = (reading.power_w, reading.energy_wh) if reading else (None, None)
            share = load.share_of(cid)
            offered = share.current_a if share is not None else None
            self._pending.append(SeriesSample(minute, cid, power, energy, connector.status.value, offered))
        grid = next((m.reading for m in self.site.meters.values() if m.connector_id == 0), None)
        limit_a = load.state.limit_a if load.state is not None else None
        if grid is not None or limit_a is not None:
            power, energy = (grid.power_w, grid.energy_wh) if grid is not None else (None, None)
            self._pending.append(SeriesSample(minute, 0, power, energy, None, limit_a))

    # -- reads (for the page, the API and the terminal), in a worker thread ------------------------
    async def sessions(self, query: HistoryQuery = EVERYTHING) -> list[SessionRecord]:
        return await asyncio.to_thread(self.store.sessions, query)

    async def events(self, query: HistoryQuery = EVERYTHING) -> list[EventRecord]:
        return await asyncio.to_thread(self.store.events, query)

    async def series(self, query: HistoryQuery = EVERYTHING) -> list[SeriesRecord]:
        return await asyncio.to_thread(self.store.series, query)

    def take(self, event: Event) -> None:
        """One Site event into rows, if the history keeps anything of it."""
        if isinstance(event, StartTransaction):
            self._open[event.connector_id] = event.local_ref
            self._peak[event.local_ref] = None
            device = self._device(event.connector_id)
            self._pending.append(
                SessionStarted(
                    event.local_ref, event.connector_id, device, event.id_tag, event.started_at, event.meter_start_wh
                )
            )
        elif isinstance(event, StopTransaction):
            self._stopped(event)
        elif isinstance(event, SessionStoppedAtRestart):
            self._stopped(event.stop)
        elif isinstance(event, ConnectorReadingChanged):
            ref = self._open.get(event.connector_id)
            power = event.reading.power_w
            if ref is not None and power is not None:
                peak = self._peak.get(ref)
                self._peak[ref] = power if peak is None else max(peak, power)
        elif isinstance(event, TransactionNumbered):
            if (ref := self._open.get(event.connector_id)) is not None:
                self._pending.append(SessionNumbered(ref, event.transaction_id))
        elif isinstance(event, FaultRaised | FaultCleared):
            self._fault(event)
        elif isinstance(event, DeviceHealthChanged):
            kind = EventKind.DEVICE_BACK if event.online else EventKind.DEVICE_LOST
            detail = {} if event.online else {"reason": event.reason}
            self._pending.append(HistoryEvent(event.changed_at, kind, device=event.device, detail=detail))
            if event.online:
                self._gone_while_away(event.device, event.changed_at)
        elif isinstance(event, UpstreamStateChanged):
            self._upstream(event)
        elif isinstance(event, AvailabilityChanged):
            kind = EventKind.AVAILABLE if event.available else EventKind.UNAVAILABLE
            device = self._device(event.connector_id)
            self._pending.append(HistoryEvent(event.at, kind, event.connector_id, device))
        elif isinstance(event, CommandReceived):
            self._command(event)
        elif isinstance(event, SiteLoadChanged):
            self._pending.extend(self._limits.decided(event.load, self.site.clock.now()))
        elif isinstance(event, SecurityEventSeen):  # (already rate-limited by the Site)
            detail = {"kind": event.kind.value, "text": event.detail, "count": event.count}
            self._pending.append(HistoryEvent(event.at, EventKind.SECURITY, detail=detail))

    def _stopped(self, stop: StopTransaction) -> None:
        if self._open.get(stop.connector_id) == stop.local_ref:
            del self._open[stop.connector_id]
        row = SessionStopped(
            stop.local_ref,
            stop.connector_id,
            self._device(stop.connector_id),
            stop.id_tag,
            stop.stopped_at,
            stop.meter_stop_wh,
            stop.reason.value,
            self._peak.pop(stop.local_ref, None),
        )
        self._pending.append(row)

    def _command(self, event: CommandReceived) -> None:
        """A command, with its source and result, the arguments as the Site gave them (id tags
        masked); a few lines per connector, command and source a minute (see ``Throttle``)."""
        cid = event.connector_id if event.connector_id is None or abs(event.connector_id) < SQLITE_INT else None
        device = self._device(cid) or None
        detail = {"command": event.command.value, "source": event.source.value, "result": event.result.value}
        line = HistoryEvent(event.at, EventKind.COMMAND, cid, device, {**detail, **event.detail})
        throttle = self._site_limits if event.command is Command.SITE_LIMIT else self._commands
        if throttle.offer((event.command, event.source, cid), line, event.at) is not None:
            self._pending.append(line)

    def _fault(self, event: FaultRaised | FaultCleared) -> None:
        key = (event.connector_id, event.meter, event.fault)
        device = event.meter if event.meter is not None else self._device(event.connector_id)
        detail = _fault_detail(event.fault)
        if isinstance(event, FaultRaised):
            if self._from_last_run.pop(key, None) is not None:
                return  # raised before the restart and still active: the same fault goes on
            self._faults[key] = event.at
            kind = EventKind.FAULT_RAISED
        else:
            raised_at = self._faults.pop(key, None)  # None: raised before a restart, not found in the log
            detail["duration_s"] = None if raised_at is None else _duration_s(raised_at, event.at)
            kind = EventKind.FAULT_CLEARED
        self._pending.append(HistoryEvent(event.at, kind, event.connector_id, device, detail))

    def _gone_while_away(self, device: str, at: datetime) -> None:
        """``device`` answers for the first time since the start: a fault it had when the last
        process ended that it has not shown again went while the gateway was away. Cleared now,
        ``at`` (when it went is not known), with the duration up to now."""
        for key in [k for k, d in self._from_last_run.items() if d == device]:
            del self._from_last_run[key]
            connector_id, _, fault = key
            detail = {**_fault_detail(fault), "duration_s": _duration_s(self._faults.pop(key), at)}
            detail["after_restart"] = True
            self._pending.append(HistoryEvent(at, EventKind.FAULT_CLEARED, connector_id, device, detail))

    def _upstream(self, event: UpstreamStateChanged) -> None:
        """Only the link's ups and downs (a new reason for a link that stays down is not a new line)."""
        if event.connected == self._csms_connected:
            return
        self._csms_connected = event.connected
        at = event.changed_at or self.site.clock.now()  # (None: the first word since the start)
        if event.connected:
            self._pending.append(HistoryEvent(at, EventKind.CSMS_UP, detail={"registration": event.registration}))
        else:
            self._pending.append(HistoryEvent(at, EventKind.CSMS_DOWN, detail={"reason": event.reason}))

    def _device(self, connector_id: int | None) -> str:
        connector = self.site.connectors.get(connector_id) if connector_id is not None else None
        return connector.device if connector is not None else ""


def _fault_key(record: EventRecord) -> FaultKey | None:
    """The key a stored fault line was written under (None: a line of a kind this version does
    not know)."""
    try:
        fault = Fault(
            FaultKind(record.detail.get("kind")),
            str(record.detail.get("vendor_code", "")),
            str(record.detail.get("info", "")),
        )
    except ValueError:
        return None
    meter = record.device if record.connector_id is None else None
    return record.connector_id, meter, fault


def _fault_detail(fault: Fault) -> dict[str, object]:
    detail: dict[str, object] = {"kind": fault.kind.value, "vendor_code": fault.vendor_code}
    if fault.info:
        detail["info"] = fault.info
    return detail


def _duration_s(raised_at: datetime, cleared_at: datetime) -> float:
    """Between the two times as stored (cut to the millisecond), so that they agree with the log."""
    return round((_ms(cleared_at) - _ms(raised_at)).total_seconds(), 3)


def _ms(moment: datetime) -> datetime:
    """``moment`` cut to the millisecond, as ``iso_utc`` stores it."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
