"""The history service on a Site, with a store in memory: what becomes a row, in which order, and
what happens when the disk refuses."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from gateway.domain.history import (
    DeliveryState,
    EventKind,
    HistoryEvent,
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
from gateway.services.history import History
from gateway.services.site import Site

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

    sessions = events = series = None  # (not read here)


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
    site.change_availability(1, False)
    site.change_availability(1, True)
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
