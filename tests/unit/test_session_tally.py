"""The sessions' tally (``gateway.services.session_tally``) on a real Site: a session counts when it
starts and becomes its connector's last when it stops; the count starts again at the box's local
midnight (an injected clock and zone); a restart is seeded from the history (a real SQLite store).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from adapters.storage.history_db import SqliteHistoryStore
from gateway.domain.history import HistoryQuery, SessionRecord
from gateway.domain.model import ChargerSnapshot, Connector, Reading, VehicleState
from gateway.domain.transactions import AuthPolicy, StartTransaction
from gateway.services.history import History
from gateway.services.session_tally import SessionTally
from gateway.services.sessions import ConnectorPolicy
from gateway.services.site import Site

CET = timezone(timedelta(hours=1), "CET")  # the box's zone in these tests: local midnight is 23:00 UTC
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)  # 10:00 local
TAG = "CARD-00012345"


class Clock:
    def __init__(self, moment: datetime = T0) -> None:
        self.moment = moment

    def now(self) -> datetime:
        return self.moment


def make_site(clock: Clock) -> Site:
    return Site(
        [Connector(1, "wb", socket=1), Connector(2, "wb", socket=2)],
        [],
        clock=clock,
        policies={c: ConnectorPolicy(AuthPolicy.FREE, id_tag=TAG) for c in (1, 2)},
    )


def poll(site: Site, connector: int, state: VehicleState, energy_wh: int, at: datetime) -> None:
    site.apply(ChargerSnapshot("wb", connector, Reading(at, energy_wh=energy_wh, power_w=7_000.0), state))


def session(site: Site, connector: int, start_wh: int, stop_wh: int, at: datetime, minutes: int = 30) -> None:
    """A car plugs in and charges (a free session starts), then leaves (it stops)."""
    poll(site, connector, VehicleState.A, start_wh, at)
    poll(site, connector, VehicleState.C, start_wh, at)
    poll(site, connector, VehicleState.A, stop_wh, at + timedelta(minutes=minutes))


def test_a_session_counts_when_it_starts_and_is_the_last_once_it_stops() -> None:
    clock = Clock()
    site = make_site(clock)
    tally = SessionTally(site, zone=CET)
    heard: list[int | None] = []
    tally.listen(heard.append)
    poll(site, 1, VehicleState.A, 10_000, T0)
    poll(site, 1, VehicleState.C, 10_000, T0)
    tally.take_events()
    assert tally.sessions_today() == 1 and tally.last_session(1) is None
    poll(site, 1, VehicleState.A, 33_456, T0 + timedelta(hours=2))
    tally.take_events()
    last = tally.last_session(1)
    assert last is not None
    assert (last.energy_wh, last.started_at, last.stopped_at) == (23_456, T0, T0 + timedelta(hours=2))
    assert last.masked_id_tag == "****2345" and TAG not in repr(last)  # never the full tag
    assert tally.last_session(2) is None
    assert heard == [None, 1]  # the count, then connector 1's last session
    assert tally.sessions_today() == 1  # a stop does not count again


def test_the_count_starts_again_at_local_midnight_not_utc_midnight() -> None:
    clock = Clock(datetime(2026, 3, 1, 22, 0, tzinfo=UTC))  # 23:00 local
    site = make_site(clock)
    tally = SessionTally(site, zone=CET)
    session(site, 1, 1_000, 2_000, clock.moment)
    session(site, 2, 5_000, 6_000, clock.moment)
    tally.take_events()
    assert tally.sessions_today() == 2
    assert tally.day_started_at() == datetime(2026, 3, 1, tzinfo=CET)
    clock.moment = datetime(2026, 3, 1, 23, 0, 1, tzinfo=UTC)  # 00:00:01 local, still 1 March in UTC
    assert tally.sessions_today() == 0  # read before anything happened today
    assert tally.day_started_at() == datetime(2026, 3, 2, tzinfo=CET)
    assert tally.last_session(1) is not None  # the last session is not "today's": it stays
    session(site, 1, 2_000, 2_500, clock.moment)
    tally.take_events()
    assert tally.sessions_today() == 1


def test_a_start_from_before_midnight_taken_after_it_does_not_count_today() -> None:
    clock = Clock(datetime(2026, 3, 1, 22, 59, 59, tzinfo=UTC))  # 23:59:59 local
    site = make_site(clock)
    tally = SessionTally(site, zone=CET)
    poll(site, 1, VehicleState.C, 1_000, clock.moment)
    clock.moment += timedelta(seconds=2)  # the event is taken after midnight
    tally.take_events()
    assert tally.sessions_today() == 0


async def test_run_tells_its_listeners_at_local_midnight_with_no_event_at_all() -> None:
    clock = Clock(datetime(2026, 3, 1, 22, 59, 59, tzinfo=UTC))  # a second to local midnight
    site = make_site(clock)
    tally = SessionTally(site, zone=CET)
    counts: asyncio.Queue[int] = asyncio.Queue()
    tally.listen(lambda what: counts.put_nowait(tally.sessions_today()) if what is None else None)
    session(site, 1, 1_000, 2_000, clock.moment, minutes=0)
    task = asyncio.create_task(tally.run())
    try:
        assert await asyncio.wait_for(counts.get(), timeout=5) == 1  # it took the session
        clock.moment = datetime(2026, 3, 1, 23, 0, 1, tzinfo=UTC)  # (the clock moves on while it waits)
        assert await asyncio.wait_for(counts.get(), timeout=5) == 0  # woken at midnight: told at once
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_restart_keeps_todays_count_and_the_last_session_from_the_history(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 3, 1, 21, 0, tzinfo=UTC))  # 22:00 local on 1 March
    site = make_site(clock)
    history = History(site, SqliteHistoryStore(tmp_path))
    session(site, 2, 100, 900, clock.moment - timedelta(days=1))  # yesterday: not today, but 2's last
    session(site, 1, 1_000, 4_000, clock.moment - timedelta(hours=3))
    session(site, 1, 4_000, 9_000, clock.moment - timedelta(hours=1))
    poll(site, 1, VehicleState.C, 9_000, clock.moment)  # a third one still charges at the restart
    history.take_events()
    await history.flush()
    history.store.close()

    restarted = make_site(clock)  # a new process: nothing in memory
    tally = SessionTally(restarted, History(restarted, SqliteHistoryStore(tmp_path)), zone=CET)
    heard: list[int | None] = []
    tally.listen(heard.append)
    await tally.seed()
    assert tally.sessions_today() == 3
    last_1, last_2 = tally.last_session(1), tally.last_session(2)
    assert last_1 is not None and last_2 is not None
    assert (last_1.energy_wh, last_1.stopped_at) == (5_000, clock.moment - timedelta(minutes=30))
    assert last_1.masked_id_tag == "****2345"
    assert last_2.energy_wh == 800
    assert sorted(heard, key=str) == [1, 2, None]
    # the session that ran through the restart stops now: its energy from the start the history kept
    poll(restarted, 1, VehicleState.C, 9_000, clock.moment)  # (the gateway resumes it: a new start here)
    poll(restarted, 1, VehicleState.A, 9_500, clock.moment + timedelta(minutes=5))
    tally.take_events()
    assert tally.sessions_today() == 4
    assert tally.last_session(1) is not None and tally.last_session(1).energy_wh == 500  # type: ignore[union-attr]


async def test_a_session_both_in_the_history_and_the_stream_counts_once() -> None:
    clock = Clock()
    site = make_site(clock)
    record = SessionRecord(
        "ref-1",
        1,
        "wb",
        TAG,
        "****2345",
        "2026-03-01T08:59:00.000Z",
        None,
        10,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
    )

    class Source:
        queries: list[HistoryQuery] = []

        async def sessions(self, query: HistoryQuery) -> list[SessionRecord]:
            self.queries.append(query)
            return [record]

    source = Source()
    tally = SessionTally(site, source, zone=CET)
    await tally.seed()
    tally.take(StartTransaction(1, "ref-1", TAG, 10, T0 - timedelta(minutes=1)))
    assert tally.sessions_today() == 1
    assert source.queries[0].since == datetime(2026, 3, 1, tzinfo=CET)  # local midnight


async def test_a_history_that_cannot_be_read_costs_the_seed_only(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        async def sessions(self, query: HistoryQuery) -> list[SessionRecord]:
            raise OSError("history: database disk image is malformed")

    site = make_site(Clock())
    tally = SessionTally(site, Broken(), zone=CET)
    with caplog.at_level(logging.WARNING):
        await tally.seed()
    assert "cannot read the history" in caplog.text and "Traceback" not in caplog.text
    session(site, 1, 0, 1_000, T0)
    tally.take_events()
    assert tally.sessions_today() == 1


def test_without_a_zone_the_day_is_the_boxs_local_day() -> None:
    site = make_site(Clock())
    tally = SessionTally(site)
    midnight = tally.day_started_at()
    assert midnight.tzinfo is not None and (midnight.hour, midnight.minute) == (0, 0)
    assert midnight.date() == T0.astimezone().date()
