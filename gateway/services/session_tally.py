"""Per connector the last finished session, and the number of sessions started today: what a
home-automation dashboard wants at a glance ("the car took 23 kWh last night", "4 sessions today").

Counted from the Site's own session effects (StartTransaction, StopTransaction: the very values the
CSMS is billed with), so no protocol is involved and every output says the same. "Today" is the
box's local day: an installer reads "today" on the wall clock of the site, and the box's zone is
the site's (``zone`` None: whatever the box says, DST included; tests pass their own).

A restart must not reset today's count nor forget the last session, so at start the tally is
seeded from the history (``History.sessions``, read only) when the history is kept. Sessions are
counted once by their local reference, so a session both in the history and in the event stream
(it started while the seed was being read) still counts once.

Listeners hear which connector's last session changed (its id) or that the count changed (None),
after the change, also when the day rolls over at local midnight with no event at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Protocol

from gateway.domain.authorization import mask_id_tag
from gateway.domain.events import Event
from gateway.domain.history import MAX_ROWS, HistoryQuery, SessionRecord
from gateway.domain.transactions import StartTransaction, StopTransaction
from gateway.services.site import Site

log = logging.getLogger(__name__)

#: A connector's newest sessions read at start to find its last finished one (a running one,
#: or one whose stop the history never saw, may come first).
SEED_RECENT = 5

Listener = Callable[[int | None], None]  # a connector whose last session changed; None: the count


class SessionSource(Protocol):
    """Where the tally is seeded from: the history's read (``History.sessions``)."""

    async def sessions(self, query: HistoryQuery) -> list[SessionRecord]: ...


@dataclass(frozen=True, slots=True)
class LastSession:
    """A finished session as a dashboard shows it; ``energy_wh`` is None when its start is unknown."""

    connector_id: int
    energy_wh: int | None
    started_at: datetime | None
    stopped_at: datetime
    masked_id_tag: str  # never the full tag: this leaves the box


class SessionTally:
    """Follows the Site's sessions (see the module docstring); ``run()`` until cancelled."""

    def __init__(self, site: Site, history: SessionSource | None = None, *, zone: tzinfo | None = None) -> None:
        self.site = site
        self.history = history
        self.zone = zone
        self._events = site.subscribe()  # from construction on: no session may start unseen
        self._day = self._local(site.clock.now()).date()
        self._today: set[str] = set()  # local refs of the sessions started on ``_day``
        self._starts: dict[str, tuple[int, datetime]] = {}  # local ref -> (meter start Wh, started at)
        self._last: dict[int, LastSession] = {}
        self._listeners: list[Listener] = []

    # -- what the outputs read ----------------------------------------------------------------------
    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def last_session(self, connector_id: int) -> LastSession | None:
        return self._last.get(connector_id)

    def sessions_today(self) -> int:
        """Sessions started since local midnight (0 once the day has turned, even before ``run``
        has noticed)."""
        return len(self._today) if self._local(self.site.clock.now()).date() == self._day else 0

    def day_started_at(self) -> datetime:
        """Local midnight that began today, as an aware datetime in the local zone."""
        return self._midnight(self._local(self.site.clock.now()).date())

    # -- running ----------------------------------------------------------------------------------
    async def run(self) -> None:
        """Seed from the history, then follow the Site; wake at each local midnight."""
        await self.seed()
        while True:
            now = self.site.clock.now()
            self._roll(now)  # (events may have kept it busy past midnight)
            midnight = self._midnight(self._local(now).date() + timedelta(days=1))
            try:  # (not wait_for: on 3.11 it can swallow a cancellation that meets an arriving event)
                async with asyncio.timeout((midnight - now).total_seconds()):
                    event = await self._events.get()
            except TimeoutError:
                self._roll(self.site.clock.now())
                continue
            self.take(event)

    async def seed(self) -> None:
        """Today's sessions and each connector's last finished one, from the history (if kept).
        A history that cannot be read now costs the seed, never the gateway."""
        if self.history is None:
            return
        since = self.day_started_at()
        try:
            today = await self.history.sessions(HistoryQuery(since=since, limit=MAX_ROWS))
            recent = {
                cid: await self.history.sessions(HistoryQuery(connector_id=cid, limit=SEED_RECENT))
                for cid in sorted(self.site.connectors)
            }
        except OSError as exc:
            log.warning("session tally: cannot read the history (%s); counting from now", exc)
            return
        self._day = since.date()
        self._today.update(r.local_ref for r in today)
        for cid, records in recent.items():
            for record in records:  # newest first
                started = _parse(record.started_at)
                if record.stopped_at is None:  # still running: its StopTransaction will need its start
                    if started is not None and record.meter_start_wh is not None:
                        self._starts.setdefault(record.local_ref, (record.meter_start_wh, started))
                    continue
                if cid not in self._last:
                    stopped = _parse(record.stopped_at)
                    if stopped is not None:
                        self._last[cid] = LastSession(cid, record.energy_wh, started, stopped, record.masked_id_tag)
                break
        self._tell(None, *sorted(self._last))

    def take_events(self) -> None:
        """Take every event that came since the last call (``run`` does it as they come)."""
        while (event := self._events.get_nowait()) is not None:
            self.take(event)

    def take(self, event: Event) -> None:
        """One Site event: a start counts, a stop becomes its connector's last session."""
        if isinstance(event, StartTransaction):
            self._roll(self.site.clock.now())
            self._starts[event.local_ref] = (event.meter_start_wh, event.started_at)
            if self._local(event.started_at).date() == self._day and event.local_ref not in self._today:
                self._today.add(event.local_ref)
                self._tell(None)
        elif isinstance(event, StopTransaction):
            start = self._starts.pop(event.local_ref, None)
            energy = None if start is None else event.meter_stop_wh - start[0]
            self._last[event.connector_id] = LastSession(
                event.connector_id,
                energy,
                None if start is None else start[1],
                event.stopped_at,
                mask_id_tag(event.id_tag),
            )
            self._tell(event.connector_id)

    # -- the day ------------------------------------------------------------------------------------
    def _roll(self, now: datetime) -> None:
        """A new local day: the count starts again from 0 (and listeners hear it)."""
        day = self._local(now).date()
        if day != self._day:
            self._day = day
            self._today.clear()
            self._tell(None)

    def _local(self, moment: datetime) -> datetime:
        return moment.astimezone(self.zone)

    def _midnight(self, day: date) -> datetime:
        """The first moment of ``day`` in the local zone (aware)."""
        if self.zone is not None:
            return datetime.combine(day, time(), self.zone)
        return datetime.combine(day, time()).astimezone()  # a naive time is the box's local time

    def _tell(self, *changed: int | None) -> None:
        for what in changed:
            for listener in self._listeners:
                listener(what)


def _parse(text: str | None) -> datetime | None:
    """An ISO 8601 time from the store (UTC, ``Z``)."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
