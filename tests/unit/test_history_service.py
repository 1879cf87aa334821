"""The history service on a Site, with a store in memory: what becomes a row, in which order, and
what happens when the disk refuses."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from gateway.domain.commands import CommandSource
from gateway.domain.errors import CommandRejected
from gateway.domain.events import SessionStoppedAtRestart
from gateway.domain.history import (
    DeliveryState,
    EventKind,
    EventRecord,
    HistoryEvent,
    HistoryQuery,
    HistoryWrite,
    Retention,
    SeriesSample,
    SessionDelivery,
    SessionStarted,
    SessionStopped,
)
from gateway.domain.model import (
    ChargerSnapshot,
    Connector,
    Fault,
    FaultKind,
    Meter,
    MeterSnapshot,
    Reading,
    VehicleState,
)
from gateway.domain.outbox import OutboxRecord, RecordKind, StoreProblem
from gateway.domain.phase_limits import ConnectorShare, PhaseLimit, Reason, SiteLoad
from gateway.domain.security import SecurityEventKind
from gateway.domain.transactions import AuthPolicy, StopReason, StopTransaction
from gateway.services.history import History
from gateway.services.sessions import ConnectorPolicy
from gateway.services.site import Site
from gateway.services.telemetry import Telemetry

T0 = datetime(2026, 3, 1, 8, 0, 30, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.moment = T0

    def now(self) -> datetime:
        return self.moment


class MemoryStore:
    """Keeps the batches it was given; refuses while ``refusing``."""

    def __init__(self) -> None:
        self.batches: list[list[HistoryWrite]] = []
        self.refusing = False
        self.pruned: list[Retention] = []
        self.closed = False

    def write(self, items: Sequence[HistoryWrite]) -> None:
        if self.refusing:
            raise OSError("disk full")
        self.batches.append(list(items))

    def prune(self, now: datetime, retention: Retention, limit: int) -> int:
        self.pruned.append(retention)
        return 0

    def rows(self) -> list[HistoryWrite]:
        return [row for batch in self.batches for row in batch]

    def problems(self) -> list[StoreProblem]:
        return []

    def close(self) -> None:
        self.closed = True

    def events(self, query: HistoryQuery) -> list[EventRecord]:
        """The lines of the last run (``stored``), newest first, of the kinds asked."""
        if self.unreadable:
            raise OSError("unreadable")
        rows = [r for r in self.stored if not query.kinds or r.kind in query.kinds]
        return sorted(rows, key=lambda r: r.at, reverse=True)[: query.limit]

    stored: list[EventRecord] = []  # (replaced per test, never mutated)
    unreadable = False
    sessions = series = None  # (not read here)


def make(clock: Clock) -> tuple[Site, MemoryStore, History]:
    site = Site([Connector(1, "wb")], [Meter("grid", 0)], clock=clock)
    store = MemoryStore()
    return site, store, History(site, store, flush_interval_s=0.01)  # type: ignore[arg-type]


def poll(
    site: Site, state: VehicleState, energy_wh: int, power_w: float, at: datetime, faults: tuple[Fault, ...] = ()
) -> None:
    site.apply(ChargerSnapshot("wb", 1, Reading(at, energy_wh=energy_wh, power_w=power_w), state, faults=faults))


def test_a_session_becomes_a_start_and_a_stop_with_the_billing_values_and_its_peak() -> None:
    clock = Clock()
    site, _, history = make(clock)
    poll(site, VehicleState.A, 1_000, 0, T0)
    poll(site, VehicleState.C, 1_000, 7_000, T0 + timedelta(seconds=1))  # free policy: starts at the plug
    poll(site, VehicleState.C, 1_100, 11_000, T0 + timedelta(seconds=2))
    poll(site, VehicleState.C, 1_200, 9_000, T0 + timedelta(seconds=3))
    poll(site, VehicleState.A, 1_300, 0, T0 + timedelta(seconds=4))
    history.take_events()
    start = next(r for r in history._pending if isinstance(r, SessionStarted))
    stop = next(r for r in history._pending if isinstance(r, SessionStopped))
    assert (start.meter_start_wh, start.device, start.started_at) == (1_000, "wb", T0 + timedelta(seconds=1))
    assert (stop.meter_stop_wh, stop.stop_reason, stop.peak_power_w) == (1_300, "ev_disconnected", 11_000)
    assert stop.local_ref == start.local_ref


def test_a_delivery_follows_the_stop_it_belongs_to_even_within_one_second() -> None:
    clock = Clock()
    site, _, history = make(clock)
    poll(site, VehicleState.A, 1_000, 0, T0)
    poll(site, VehicleState.C, 1_000, 7_000, T0)
    assert site.connectors[1].session is not None
    stop_ref = site.connectors[1].session.local_ref
    poll(site, VehicleState.A, 1_100, 0, T0)
    # the outbox tells before the service took the second's events from its stream
    record = OutboxRecord(1, RecordKind.STOP, "StopTransaction", {}, "2026-03-01T08:00:30Z", stop_ref)
    history.outbox_settled(record, DeliveryState.DELIVERED)
    kinds = [type(r).__name__ for r in history._pending]
    assert kinds.index("SessionStopped") < kinds.index("SessionDelivery")
    assert history._pending[kinds.index("SessionDelivery")] == SessionDelivery(stop_ref, DeliveryState.DELIVERED)
    sample = OutboxRecord(2, RecordKind.SAMPLED, "MeterValues", {}, "2026-03-01T08:00:30Z", stop_ref)
    history.outbox_settled(sample, DeliveryState.DELIVERED)  # not a bill's end: nothing
    start = OutboxRecord(3, RecordKind.START, "StartTransaction", {}, "2026-03-01T08:00:30Z", stop_ref)
    history.outbox_settled(start, DeliveryState.DELIVERED)  # a start delivered says nothing of the bill
    history.outbox_settled(start, DeliveryState.PARKED)  # a parked start does
    deliveries = [r for r in history._pending if isinstance(r, SessionDelivery)]
    assert [d.state for d in deliveries] == [DeliveryState.DELIVERED, DeliveryState.PARKED]


def test_faults_links_and_availability_become_events_once() -> None:
    clock = Clock()
    site, _, history = make(clock)
    hot = Fault(FaultKind.OVER_TEMPERATURE, vendor_code="13")
    poll(site, VehicleState.A, 1_000, 0, T0)
    poll(site, VehicleState.A, 1_000, 0, T0 + timedelta(seconds=1), faults=(hot,))
    poll(site, VehicleState.A, 1_000, 0, T0 + timedelta(seconds=31))
    site.set_upstream(True, "Accepted")
    site.set_upstream(False, "Accepted", "connection refused")
    site.set_upstream(False, "Accepted", "timed out")  # a new reason, the same outage: no new line
    site.commands.change_availability(1, False)
    site.commands.change_availability(1, True)
    history.take_events()
    events = [r for r in history._pending if isinstance(r, HistoryEvent)]
    assert [e.kind for e in events] == [
        EventKind.DEVICE_BACK,
        EventKind.FAULT_RAISED,
        EventKind.FAULT_CLEARED,
        EventKind.CSMS_UP,
        EventKind.CSMS_DOWN,
        EventKind.UNAVAILABLE,
        EventKind.AVAILABLE,
    ]
    assert events[2].detail == {"kind": "over_temperature", "vendor_code": "13", "duration_s": 30.0}
    assert events[4].detail == {"reason": "connection refused"}


def test_one_series_sample_per_connector_and_the_grid_meter_per_minute() -> None:
    clock = Clock()
    site, _, history = make(clock)
    poll(site, VehicleState.C, 1_000, 7_000, T0)
    site.apply(MeterSnapshot("grid", Reading(T0, energy_wh=5_000, power_w=9_000.0)))
    history.sample_series(T0)
    history.sample_series(T0 + timedelta(seconds=20))  # the same minute: nothing more
    history.sample_series(T0 + timedelta(seconds=40))  # the next one
    samples = [r for r in history._pending if isinstance(r, SeriesSample)]
    minute = T0.replace(second=0)
    assert [(s.minute, s.connector_id, s.power_w, s.energy_wh) for s in samples[:2]] == [
        (minute, 1, 7_000, 1_000),
        (minute, 0, 9_000.0, 5_000),
    ]
    assert samples[0].status == "charging" and len(samples) == 4
    assert samples[0].limit_a is None and samples[1].limit_a is None  # nothing shared on this site


def test_the_series_keeps_each_share_and_the_chargers_limit() -> None:
    clock = Clock()
    site, _, history = make(clock)
    shares = {1: ConnectorShare(10.0, Reason.FUSE)}
    site.load.report(SiteLoad(T0, (PhaseLimit(10.0, Reason.FUSE),) * 3, None, (10.0,) * 3, shares, fuse_a=25.0))
    history.sample_series(T0)
    samples = [r for r in history._pending if isinstance(r, SeriesSample)]
    assert [(s.connector_id, s.power_w, s.limit_a) for s in samples] == [(1, None, 10.0), (0, None, 10.0)]


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


async def test_a_refusing_disk_keeps_the_rows_logs_once_and_they_follow_later(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    site, store, history = make(clock)
    store.refusing = True
    task = asyncio.create_task(history.run())
    with caplog.at_level(logging.WARNING):
        poll(site, VehicleState.A, 1_000, 0, T0)
        await until(lambda: len(history._pending) >= 2 and bool(caplog.records))
        poll(site, VehicleState.C, 1_000, 7_000, T0)
        await until(lambda: any(isinstance(r, SessionStarted) for r in history._pending))
        store.refusing = False
        await until(lambda: any(isinstance(r, SessionStarted) for r in store.rows()))
    assert len([r for r in caplog.records if "refuses" in r.message]) == 1
    kinds = [type(r).__name__ for r in store.rows()]
    assert kinds.index("HistoryEvent") < kinds.index("SessionStarted")  # in the order they happened
    assert store.pruned  # pruning ran too
    poll(site, VehicleState.A, 1_100, 0, T0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert any(isinstance(r, SessionStopped) for r in store.rows())  # written at shutdown
    assert store.closed


def test_a_csms_unreachable_from_the_start_is_logged_at_the_time_it_was_told() -> None:
    """The first word about the link may be a reason with no change time (nothing changed)."""
    clock = Clock()
    site, _, history = make(clock)
    site.set_upstream(False, "none", "connection refused")
    history.take_events()
    (event,) = [r for r in history._pending if isinstance(r, HistoryEvent)]
    assert (event.kind, event.at, event.detail) == (EventKind.CSMS_DOWN, T0, {"reason": "connection refused"})


# -- commands, the broker link, limits that bind, and the gaps of the first slice ---------------------
def lines(history: History, kind: EventKind | None = None) -> list[HistoryEvent]:
    history.take_events()
    return [r for r in history._pending if isinstance(r, HistoryEvent) and kind in (None, r.kind)]


def test_a_command_is_logged_with_its_source_result_and_masked_id_tag() -> None:
    clock = Clock()
    site = Site([Connector(1, "wb"), Connector(2, "wb", socket=2)], [], clock=clock, policies=remote_policies())
    history = History(site, MemoryStore())  # type: ignore[arg-type]
    poll(site, VehicleState.A, 1_000, 0, T0)
    assert site.commands.remote_start(1, "CARD-0001-2345", source=CommandSource.CSMS)
    site.commands.change_availability(2, False, source=CommandSource.PAGE)
    with pytest.raises(CommandRejected):
        site.commands.set_current_ceiling(9, 16.0, source=CommandSource.MQTT)
    site.commands.remote_start(2, "CARD-0001-2345")  # no source: the gateway's own call, not a command received
    commands = lines(history, EventKind.COMMAND)
    assert [(c.connector_id, c.detail) for c in commands] == [
        (1, {"command": "start", "source": "csms", "result": "accepted", "id_tag": "****2345"}),
        (2, {"command": "availability", "source": "page", "result": "accepted", "available": False}),
        (
            9,
            {
                "command": "current_ceiling",
                "source": "mqtt",
                "result": "rejected",
                "current_a": 16.0,
                "reason": "no connector 9",
            },
        ),
    ]
    assert commands[0].device == "wb" and commands[0].at == T0
    assert "CARD-0001-2345" not in repr(history._pending)  # no full tag in any row of the log


def remote_policies() -> dict[int, ConnectorPolicy]:
    return {cid: ConnectorPolicy(AuthPolicy.REMOTE) for cid in (1, 2)}


def test_an_availability_that_changes_nothing_is_a_command_already_done_not_a_change() -> None:
    clock = Clock()
    site, _, history = make(clock)
    assert site.commands.change_availability(1, True, source=CommandSource.MQTT) == "Accepted"  # it already is
    assert lines(history, EventKind.AVAILABLE) == []
    (command,) = lines(history, EventKind.COMMAND)
    assert command.detail["result"] == "already"


def test_a_command_repeated_within_a_minute_waits_and_says_how_many_it_stands_for() -> None:
    clock = Clock()
    site, _, history = make(clock)
    for available in (False, True) * 4:  # eight changes in 40 s from MQTT
        site.commands.change_availability(1, available, source=CommandSource.MQTT)
        clock.moment += timedelta(seconds=5)
    site.commands.change_availability(1, False, source=CommandSource.CSMS)  # another source: a budget of its own
    assert [c.detail["source"] for c in lines(history, EventKind.COMMAND)] == ["mqtt"] * 5 + ["csms"]
    history.take_due(T0 + timedelta(seconds=59))
    assert len(lines(history, EventKind.COMMAND)) == 6  # not yet: five a minute
    history.take_due(T0 + timedelta(seconds=60))
    last = lines(history, EventKind.COMMAND)[-1]
    assert (last.at, last.detail["available"], last.detail["folded"]) == (T0 + timedelta(seconds=35), True, 2)
    # every real change is still in the log as a change of availability
    changes = [e.kind for e in lines(history) if e.kind != EventKind.COMMAND]
    assert changes == [EventKind.UNAVAILABLE, EventKind.AVAILABLE] * 4 + [EventKind.UNAVAILABLE]


def test_a_site_limit_is_logged_when_it_changes_and_at_most_once_a_minute() -> None:
    clock = Clock()
    site, _, history = make(clock)
    for current_a in (16.0, 16.0, 10.0, 12.0):  # a HEMS following the sun, every 10 s
        site.commands.set_site_limit(current_a, source=CommandSource.MQTT)
        clock.moment += timedelta(seconds=10)
    with pytest.raises(CommandRejected):
        site.commands.set_site_limit(-1.0, source=CommandSource.MQTT)
    assert [c.detail["current_a"] for c in lines(history, EventKind.COMMAND)] == [16.0]
    history.take_due(T0 + timedelta(seconds=60))
    (last,) = lines(history, EventKind.COMMAND)[1:]
    assert (last.detail["result"], last.detail["current_a"], last.detail["folded"]) == ("rejected", -1.0, 2)


def test_a_command_naming_a_connector_number_sqlite_cannot_hold_is_kept_without_it() -> None:
    clock = Clock()
    site, _, history = make(clock)
    assert site.commands.change_availability(10**30, False, source=CommandSource.CSMS) == "Rejected"
    (command,) = lines(history, EventKind.COMMAND)
    assert (command.connector_id, command.detail["result"]) == (None, "rejected")


def test_the_broker_link_is_one_line_per_change_not_per_attempt() -> None:
    clock = Clock()
    _, _, history = make(clock)
    telemetry = Telemetry(clock=clock)
    telemetry.follow_mqtt(history.broker_changed)
    telemetry.mqtt_changed(False, "connection refused")
    clock.moment += timedelta(seconds=5)
    telemetry.mqtt_changed(False, "timed out")  # another attempt, another reason: the same outage
    telemetry.mqtt_changed(True)
    telemetry.mqtt_changed(True)
    clock.moment += timedelta(seconds=5)
    telemetry.mqtt_changed(False, "broker went away")
    assert [(e.kind, e.at, e.detail) for e in lines(history)] == [
        (EventKind.BROKER_DOWN, T0, {"reason": "connection refused"}),
        (EventKind.BROKER_UP, T0 + timedelta(seconds=5), {}),
        (EventKind.BROKER_DOWN, T0 + timedelta(seconds=10), {"reason": "broker went away"}),
    ]


def load(at: datetime, limit_a: float, source: Reason, **shares: Reason) -> SiteLoad:
    """A decision with the shares ``c1=Reason.FUSE``... (6 A each)."""
    by_connector = {int(name[1:]): ConnectorShare(6.0, reason) for name, reason in shares.items()}
    return SiteLoad(at, (PhaseLimit(limit_a, source),) * 3, None, (6.0,) * 3, by_connector)


def test_a_limit_that_binds_and_frees_is_two_lines_not_one_per_decision() -> None:
    clock = Clock()
    site, _, history = make(clock)
    site.load.report(load(T0, 20.0, Reason.FUSE, c1=Reason.OWN_LIMIT))  # the car's own bound: not held
    assert lines(history) == []
    clock.moment = T0 + timedelta(seconds=5)
    site.load.report(load(clock.moment, 12.0, Reason.FUSE, c1=Reason.FUSE, c2=Reason.ROTATION))
    site.load.report(load(clock.moment + timedelta(seconds=1), 13.0, Reason.FUSE, c1=Reason.FUSE))  # still bound
    (binds,) = lines(history)
    assert (binds.kind, binds.at) == (EventKind.LIMIT_BINDS, T0 + timedelta(seconds=5))
    assert binds.detail == {
        "limit_a": 12.0,
        "reason": "fuse",
        "held": [
            {"connector_id": 1, "current_a": 6.0, "reason": "fuse"},
            {"connector_id": 2, "current_a": 6.0, "reason": "rotation"},
        ],
    }
    clock.moment = T0 + timedelta(seconds=70)
    site.load.report(load(clock.moment, 30.0, Reason.FUSE, c1=Reason.TAKES_LESS))
    assert [(e.kind, e.detail) for e in lines(history)][1:] == [(EventKind.LIMIT_FREES, {"limit_a": 30.0})]


def test_a_flapping_limit_writes_at_most_one_line_a_minute_and_ends_on_the_truth() -> None:
    clock = Clock()
    site, _, history = make(clock)
    for second in range(0, 48, 2):  # binds and frees every 2 s, freed last (46 s)
        clock.moment = T0 + timedelta(seconds=second)
        held = Reason.FUSE if second % 4 == 0 else Reason.TAKES_LESS
        site.load.report(load(clock.moment, 10.0, Reason.FUSE, c1=held))
        history.take_events()
        history.take_due(clock.moment)
    assert [e.kind for e in lines(history)] == [EventKind.LIMIT_BINDS]
    history.take_due(T0 + timedelta(seconds=60))  # the last decision (freed, at 46 s) goes after the minute
    assert [(e.kind, e.at) for e in lines(history)] == [
        (EventKind.LIMIT_BINDS, T0),
        (EventKind.LIMIT_FREES, T0 + timedelta(seconds=46)),
    ]


def test_a_limit_that_flaps_back_before_its_line_goes_says_nothing() -> None:
    clock = Clock()
    site, _, history = make(clock)
    site.load.report(load(T0, 10.0, Reason.FUSE, c1=Reason.FUSE))
    clock.moment = T0 + timedelta(seconds=10)
    site.load.report(load(clock.moment, 10.0, Reason.FUSE, c1=Reason.TAKES_LESS))  # freed: waits its minute
    clock.moment = T0 + timedelta(seconds=20)
    site.load.report(load(clock.moment, 10.0, Reason.FUSE, c1=Reason.FUSE))  # bound again, as the log says
    history.take_events()
    history.take_due(T0 + timedelta(minutes=5))
    assert [e.kind for e in lines(history)] == [EventKind.LIMIT_BINDS]
    clock.moment = T0 + timedelta(minutes=6)  # what binds changes: the site limit now
    site.load.report(load(clock.moment, 8.0, Reason.SITE_LIMIT, c1=Reason.SITE_LIMIT))
    assert [(e.kind, e.detail["reason"]) for e in lines(history)][1:] == [(EventKind.LIMIT_BINDS, "site_limit")]


def test_a_session_stopped_at_restart_gets_the_stop_values_sent_upstream() -> None:
    clock = Clock()
    site, _, history = make(clock)
    stop = StopTransaction(1, "ref-1", "CARD-0001-2345", 4_321, T0 - timedelta(hours=1), StopReason.POWER_LOSS)
    site.request(SessionStoppedAtRestart(stop))
    history.take_events()
    (row,) = [r for r in history._pending if isinstance(r, SessionStopped)]
    assert (row.local_ref, row.meter_stop_wh, row.stopped_at, row.stop_reason, row.device) == (
        "ref-1",
        4_321,
        T0 - timedelta(hours=1),
        "power_loss",
        "wb",
    )


def fault_line(
    kind: EventKind, at: datetime, fault: Fault, connector_id: int | None = 1, device: str = "wb"
) -> EventRecord:
    detail = {"kind": fault.kind.value, "vendor_code": fault.vendor_code}
    return EventRecord(iso(at), kind.value, connector_id, device, detail)


def iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


HOT = Fault(FaultKind.OVER_TEMPERATURE, vendor_code="13")
EARTH = Fault(FaultKind.GROUND_FAULT, vendor_code="7")


def test_a_fault_open_before_a_restart_and_still_active_goes_on_and_gets_its_whole_duration() -> None:
    clock = Clock()
    site, store, history = make(clock)
    raised_at = T0 - timedelta(minutes=10)
    store.stored = [
        fault_line(EventKind.FAULT_RAISED, raised_at - timedelta(hours=1), HOT),
        fault_line(EventKind.FAULT_CLEARED, raised_at - timedelta(minutes=30), HOT),
        fault_line(EventKind.FAULT_RAISED, raised_at, HOT),  # open when the last process ended
        EventRecord(iso(raised_at), "fault_raised", 1, "wb", {"kind": "from_a_newer_version"}),
    ]
    history.seed_open_faults()
    poll(site, VehicleState.A, 1_000, 0, T0, faults=(HOT,))  # still active at the first poll: no new line
    poll(site, VehicleState.A, 1_000, 0, T0 + timedelta(seconds=30))
    faults = [e for e in lines(history) if e.kind in (EventKind.FAULT_RAISED, EventKind.FAULT_CLEARED)]
    assert [(e.kind, e.detail["duration_s"]) for e in faults] == [(EventKind.FAULT_CLEARED, 630.0)]


def test_a_fault_gone_while_the_gateway_was_away_is_cleared_when_its_device_first_answers() -> None:
    clock = Clock()
    site, store, history = make(clock)
    store.stored = [
        fault_line(EventKind.FAULT_RAISED, T0 - timedelta(minutes=1), EARTH),
        fault_line(EventKind.FAULT_RAISED, T0 - timedelta(minutes=2), HOT, connector_id=None, device="grid"),
    ]
    history.seed_open_faults()
    poll(site, VehicleState.A, 1_000, 0, T0)  # the charger answers, without its fault
    events = lines(history)
    assert [e.kind for e in events] == [EventKind.DEVICE_BACK, EventKind.FAULT_CLEARED]
    assert events[1].detail == {"kind": "ground_fault", "vendor_code": "7", "duration_s": 60.0, "after_restart": True}
    assert (events[1].at, events[1].connector_id, events[1].device) == (T0, 1, "wb")
    site.apply(MeterSnapshot("grid", Reading(T0, energy_wh=5_000, power_w=1.0), faults=(HOT,)))  # still hot
    assert [e.kind for e in lines(history)][2:] == [EventKind.DEVICE_BACK]  # the meter's fault goes on


def test_an_unreadable_history_seeds_nothing_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    site, store, history = make(clock)
    store.unreadable = True
    with caplog.at_level(logging.WARNING):
        history.seed_open_faults()
    assert "could not be read" in caplog.text
    poll(site, VehicleState.A, 1_000, 0, T0, faults=(HOT,))
    assert EventKind.FAULT_RAISED in [e.kind for e in lines(history)]


def test_a_security_event_is_a_line_with_its_kind_text_and_count() -> None:
    clock = Clock()
    site, _, history = make(clock)
    for _ in range(2):  # the second within the minute: held back by the Site
        site.security.report(SecurityEventKind.LOGIN_FAILED, "status page: wrong password from 10.0.0.9", "10.0.0.9")
    history.take_events()
    lines = [r for r in history._pending if isinstance(r, HistoryEvent) and r.kind is EventKind.SECURITY]
    assert [(r.at, r.detail) for r in lines] == [
        (clock.now(), {"kind": "login_failed", "text": "status page: wrong password from 10.0.0.9", "count": 1})
    ]
