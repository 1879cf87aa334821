"""Delivery rules of the outbox, on an in-memory store (the durable store has its own tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest

from gateway.domain.outbox import NewRecord, OutboxRecord, RecordKind
from gateway.services.outbox import BacklogStats, Dropped, Outbox, OutboxSettings, Retry
from tests.fixtures.memory_outbox import MemoryOutboxStore, RefusingStore

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def record(kind: RecordKind, minute: float = 0, ref: str | None = "tx1", action: str = "MeterValues") -> NewRecord:
    at = (T0 + timedelta(minutes=minute)).isoformat()
    return NewRecord(kind, action, {"minute": minute}, at, ref)


def test_fifo_one_head_at_a_time() -> None:
    outbox = Outbox(MemoryOutboxStore())
    first = outbox.enqueue(record(RecordKind.START, action="StartTransaction"))
    second = outbox.enqueue(record(RecordKind.SAMPLED, 1))
    assert asyncio.run(outbox.next()) == first
    outbox.delivered(first)
    assert asyncio.run(outbox.next()) == second


async def test_next_waits_for_an_enqueue() -> None:
    outbox = Outbox(MemoryOutboxStore())
    waiter = asyncio.ensure_future(outbox.next())
    await asyncio.sleep(0)
    assert not waiter.done()
    queued = outbox.enqueue(record(RecordKind.STOP, action="StopTransaction"))
    assert await asyncio.wait_for(waiter, 1) == queued


def test_failed_retries_with_growing_delay_then_drops() -> None:
    outbox = Outbox(MemoryOutboxStore())
    outbox.enqueue(record(RecordKind.SAMPLED))
    delays = []
    for _ in range(2):
        head = outbox.store.head()
        assert head is not None
        outcome = outbox.failed(head, max_attempts=3, retry_interval_s=10)
        assert isinstance(outcome, Retry)
        delays.append(outcome.delay_s)
    assert delays == [10, 20]
    head = outbox.store.head()
    assert head is not None and head.attempts == 2
    assert isinstance(outbox.failed(head, max_attempts=3, retry_interval_s=10), Dropped)
    assert len(outbox.store) == 0
    assert outbox.stats().dropped == 1


def test_a_stop_is_never_dropped() -> None:
    outbox = Outbox(MemoryOutboxStore())
    outbox.enqueue(record(RecordKind.STOP, action="StopTransaction"))
    for _ in range(10):
        head = outbox.store.head()
        assert head is not None
        outcome = outbox.failed(head, max_attempts=3, retry_interval_s=10)
        assert isinstance(outcome, Retry)
    assert outcome.delay_s == 30  # grows no further than attempts x interval
    assert len(outbox.store) == 1 and outbox.stats().dropped == 0


def test_thinning_keeps_first_and_last_per_window_and_never_touches_other_kinds() -> None:
    outbox = Outbox(MemoryOutboxStore(), OutboxSettings(thin_after_records=5, thin_window_s=900))
    outbox.enqueue(record(RecordKind.START, 0, action="StartTransaction"))
    for minute in range(1, 60):  # 59 samples a minute apart: 4 windows of 15 minutes
        kind = RecordKind.ALIGNED if minute % 15 == 0 else RecordKind.SAMPLED
        outbox.enqueue(record(kind, minute))
    outbox.enqueue(record(RecordKind.STOP, 60, action="StopTransaction"))
    kinds = [info.kind for info in outbox.store.index()]
    assert kinds.count(RecordKind.START) == 1 and kinds.count(RecordKind.STOP) == 1
    assert kinds.count(RecordKind.ALIGNED) == 3
    sampled = [info for info in outbox.store.index() if info.kind is RecordKind.SAMPLED]
    windows: dict[int, list[str]] = {}
    for info in sampled:
        windows.setdefault(datetime.fromisoformat(info.created_at).minute // 15, []).append(info.created_at)
    assert all(len(times) <= 2 for times in windows.values())
    assert len(windows) == 4  # every window keeps something
    assert outbox.stats().thinned > 0
    seqs = [info.seq for info in outbox.store.index()]
    assert seqs == sorted(seqs)


def test_thinning_is_per_session() -> None:
    outbox = Outbox(MemoryOutboxStore(), OutboxSettings(thin_after_records=4, thin_window_s=3600))
    for minute in range(10):
        outbox.enqueue(record(RecordKind.SAMPLED, minute, ref="a"))
        outbox.enqueue(record(RecordKind.SAMPLED, minute, ref="b"))
    refs = [info.local_ref for info in outbox.store.index()]
    assert refs.count("a") >= 2 and refs.count("b") >= 2


def test_disk_bound_drops_oldest_samples_first_and_keeps_the_rest() -> None:
    store = MemoryOutboxStore()
    outbox = Outbox(store, OutboxSettings(max_bytes=1_000, thin_after_records=10**6))
    outbox.enqueue(record(RecordKind.START, 0, action="StartTransaction"))
    for minute in range(1, 40):
        outbox.enqueue(record(RecordKind.SAMPLED, minute))
    outbox.enqueue(record(RecordKind.ALIGNED, 40))
    outbox.enqueue(record(RecordKind.STOP, 41, action="StopTransaction"))
    assert store.size_bytes() <= 1_000
    index = store.index()
    assert index[0].kind is RecordKind.START and index[-1].kind is RecordKind.STOP
    assert any(info.kind is RecordKind.ALIGNED for info in index)
    minutes = [store._records[info.seq].payload["minute"] for info in index if info.kind is RecordKind.SAMPLED]
    assert minutes and min(minutes) > 1  # the oldest went first; the newest stayed
    assert outbox.stats().dropped > 0


def test_over_the_bound_with_nothing_droppable_keeps_everything(caplog: pytest.LogCaptureFixture) -> None:
    outbox = Outbox(MemoryOutboxStore(), OutboxSettings(max_bytes=10))
    for minute in range(5):
        outbox.enqueue(record(RecordKind.STOP, minute, action="StopTransaction"))
    assert len(outbox.store) == 5
    assert sum("nothing left to drop" in r.message for r in caplog.records) == 1


def test_stats_and_change_reports() -> None:
    seen: list[BacklogStats] = []
    outbox: Outbox = Outbox(MemoryOutboxStore(), on_change=lambda: seen.append(outbox.stats()))
    outbox.enqueue(record(RecordKind.SAMPLED, 5))
    outbox.enqueue(record(RecordKind.SAMPLED, 7))
    assert len(seen) == 2  # told of every change; the figures are read when wanted
    assert seen[-1].records == 2 and seen[-1].oldest_created_at == (T0 + timedelta(minutes=5)).isoformat()
    head = outbox.store.head()
    assert head is not None
    outbox.delivered(head)
    assert seen[-1].records == 1 and seen[-1].oldest_created_at == (T0 + timedelta(minutes=7)).isoformat()


def test_a_backlog_from_before_a_restart_is_ready_at_once() -> None:
    store = MemoryOutboxStore()
    Outbox(store).enqueue(record(RecordKind.START, action="StartTransaction"))
    restarted = Outbox(store)
    head = asyncio.run(asyncio.wait_for(restarted.next(), 1))
    assert head.action == "StartTransaction"


def test_a_disk_that_refuses_writes_loses_nothing_and_keeps_the_order(caplog: pytest.LogCaptureFixture) -> None:
    store = RefusingStore()
    outbox = Outbox(store)
    outbox.enqueue(record(RecordKind.START, 0, action="StartTransaction"))
    store.full = True
    assert outbox.enqueue(record(RecordKind.SAMPLED, 1)) is None
    assert outbox.enqueue(record(RecordKind.STOP, 2, action="StopTransaction")) is None
    assert len(store) == 1
    assert sum("cannot write to disk" in r.message for r in caplog.records) == 1  # once per outage
    store.full = False
    outbox.enqueue(record(RecordKind.START, 3, action="StartTransaction"))
    assert [r.payload["minute"] for r in store._records.values()] == [0, 1, 2, 3]


class FlakyStore(MemoryOutboxStore):
    """A store whose removals and attempt counts fail while ``broken`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = False

    def remove(self, seqs: Iterable[int]) -> None:
        if self.broken:
            raise OSError(28, "No space left on device")
        super().remove(seqs)

    def set_attempts(self, seq: int, attempts: int) -> None:
        if self.broken:
            raise OSError(28, "No space left on device")
        super().set_attempts(seq, attempts)


async def test_a_delivery_the_disk_cannot_write_off_is_never_sent_again() -> None:
    store = FlakyStore()
    outbox = Outbox(store)
    first = outbox.enqueue(record(RecordKind.START, 0, action="StartTransaction"))
    second = outbox.enqueue(record(RecordKind.SAMPLED, 1))
    assert first is not None and second is not None
    store.broken = True
    outbox.delivered(await outbox.next())  # answered by the CSMS, but the disk refuses
    assert outbox.stats().records == 1
    store.broken = False
    assert (await asyncio.wait_for(outbox.next(), 1)).seq == second.seq  # not the start again
    assert len(store) == 1


class FullStore(FlakyStore):
    """A full disk: it refuses appends and removals alike (removing the head rewrites head.json)."""

    def append(self, record: NewRecord) -> OutboxRecord:
        if self.broken:
            raise OSError(28, "No space left on device")
        return super().append(record)


async def test_a_full_disk_that_cannot_forget_delivered_records_still_delivers_the_rest_in_order() -> None:
    """Issue 14, finding 7: nothing billing-related may wait for the disk while the CSMS is there."""
    store = FullStore()
    outbox = Outbox(store)
    for minute in (0, 1):
        outbox.enqueue(record(RecordKind.SAMPLED, minute))
    store.broken = True
    outbox.enqueue(record(RecordKind.START, 2, ref="tx2", action="StartTransaction"))  # held in memory
    sent = []
    for _ in range(3):
        head = await asyncio.wait_for(outbox.next(), 1)  # never waits for the disk
        sent.append(head.payload["minute"])
        outbox.delivered(head)
    assert sent == [0, 1, 2]
    assert outbox.stats().records == 0 and outbox.stats().disk_problem is not None
    store.broken = False
    outbox._gone_retry_at = 0.0  # (the next attempt to forget them is due)
    outbox.enqueue(record(RecordKind.SAMPLED, 3, ref="tx2"))
    head = await asyncio.wait_for(outbox.next(), 1)
    assert head.payload["minute"] == 3 and len(store) == 1  # the delivered ones are gone from disk now


async def test_failed_attempts_count_in_memory_when_the_disk_refuses() -> None:
    store = FlakyStore()
    outbox = Outbox(store)
    outbox.enqueue(record(RecordKind.SAMPLED))
    store.broken = True
    head = await outbox.next()
    assert isinstance(outbox.failed(head, max_attempts=3, retry_interval_s=1), Retry)
    head = await outbox.next()
    assert head.attempts == 1
    assert isinstance(outbox.failed(head, max_attempts=3, retry_interval_s=1), Retry)
    store.broken = False
    head = await outbox.next()
    assert isinstance(outbox.failed(head, max_attempts=3, retry_interval_s=1), Dropped)


def test_thinning_on_a_refusing_disk_waits_and_queues_anyway() -> None:
    store = FlakyStore()
    outbox = Outbox(store, OutboxSettings(thin_after_records=2))
    store.broken = True
    for minute in range(6):
        assert outbox.enqueue(record(RecordKind.SAMPLED, minute)) is not None
    assert len(store) == 6


def test_a_stop_refused_again_and_again_is_parked_and_the_queue_goes_on() -> None:
    parked: list[OutboxRecord] = []
    outbox = Outbox(MemoryOutboxStore(), park=parked.append)
    outbox.enqueue(record(RecordKind.STOP, 0, action="StopTransaction"))
    outbox.enqueue(record(RecordKind.START, 1, action="StartTransaction"))
    outcomes = []
    for _ in range(9):
        head = asyncio.run(outbox.next())
        outcomes.append(outbox.failed(head, max_attempts=3, retry_interval_s=1))
        if isinstance(outcomes[-1], Dropped):
            break
    assert [type(o).__name__ for o in outcomes] == ["Retry"] * 8 + ["Dropped"]
    assert [r.action for r in parked] == ["StopTransaction"] and parked[0].attempts == 9
    assert asyncio.run(outbox.next()).action == "StartTransaction"
    assert outbox.stats().parked == 1 and outbox.stats().dropped == 0


def test_a_stop_that_cannot_be_parked_stays_at_the_head() -> None:
    def refuse(_: OutboxRecord) -> None:
        raise OSError(30, "Read-only file system")

    outbox = Outbox(MemoryOutboxStore(), park=refuse)
    stop = outbox.enqueue(record(RecordKind.STOP, 0, action="StopTransaction"))
    assert stop is not None
    outbox._attempts[stop.seq] = 8  # refused 8 times already: the 9th would park it
    head = asyncio.run(outbox.next())
    assert head.attempts == 8
    outcome = outbox.failed(head, max_attempts=3, retry_interval_s=1)
    assert isinstance(outcome, Retry) and outcome.delay_s == 5.0  # the disk is tried again soon
    assert len(outbox.store) == 1


async def take(outbox: Outbox) -> OutboxRecord:
    """The next record to send; a test fails (rather than hangs) if there is none."""
    return await asyncio.wait_for(outbox.next(), 1)


async def test_a_disk_that_refuses_writes_delivers_from_memory_in_order_and_nothing_twice() -> None:
    """The CSMS is there but the disk is full: what the disk refused goes out from memory, after
    what was already on disk (older), and once the disk is back nothing is sent again."""
    store = RefusingStore()
    outbox = Outbox(store)
    outbox.enqueue(record(RecordKind.ALIGNED, 0, ref=None))  # on disk before the disk filled up
    store.full = True
    for minute, kind, action in (
        (1, RecordKind.START, "StartTransaction"),
        (2, RecordKind.SAMPLED, "MeterValues"),
        (3, RecordKind.STOP, "StopTransaction"),
    ):
        assert outbox.enqueue(record(kind, minute, action=action)) is None
    assert outbox.stats().held_in_memory == 3
    sent = []
    for _ in range(3):
        head = await take(outbox)
        sent.append((head.payload["minute"], head.action))
        outbox.delivered(head)
    assert sent == [(0, "MeterValues"), (1, "StartTransaction"), (2, "MeterValues")]
    stop = await take(outbox)  # in flight from memory when the disk comes back
    assert stop.action == "StopTransaction" and stop.seq < 0
    store.full = False
    outbox.enqueue(record(RecordKind.START, 4, action="StartTransaction"))
    assert [r.action for r in store._records.values()] == ["StopTransaction", "StartTransaction"]
    outbox.delivered(stop)  # answered under the number it was handed out with
    head = await take(outbox)
    assert (head.payload["minute"], head.action) == (4, "StartTransaction")  # not the stop again
    outbox.delivered(head)
    assert len(store) == 0 and outbox.stats().records == 0
    await asyncio.wait_for(outbox.wait_empty(), 1)


async def test_held_records_are_written_before_anything_newer_when_the_disk_is_back() -> None:
    store = RefusingStore()
    outbox = Outbox(store)
    store.full = True
    outbox.enqueue(record(RecordKind.START, 0, action="StartTransaction"))
    outbox.enqueue(record(RecordKind.SAMPLED, 1))
    first = await take(outbox)
    assert first.seq < 0 and first.action == "StartTransaction"
    outbox.delivered(first)  # from memory: the disk is not needed for that
    store.full = False
    outbox.enqueue(record(RecordKind.STOP, 2, action="StopTransaction"))
    assert [r.payload["minute"] for r in store._records.values()] == [1, 2]  # the held one first
    assert outbox.stats().disk_problem is None and outbox.stats().held_in_memory == 0


async def test_held_records_count_failed_attempts_and_are_dropped_or_kept_like_stored_ones() -> None:
    store = RefusingStore()
    outbox = Outbox(store)
    store.full = True
    outbox.enqueue(record(RecordKind.SAMPLED, 0))
    outbox.enqueue(record(RecordKind.STOP, 1, action="StopTransaction"))
    outcomes = []
    for _ in range(3):
        head = await take(outbox)
        assert head.action == "MeterValues"
        outcomes.append(outbox.failed(head, max_attempts=3, retry_interval_s=1))
    assert [type(o).__name__ for o in outcomes] == ["Retry", "Retry", "Dropped"]
    assert outbox.stats().dropped == 1
    for _ in range(5):  # a stop is never dropped, held in memory or not
        head = await take(outbox)
        assert head.action == "StopTransaction"
        assert isinstance(outbox.failed(head, max_attempts=3, retry_interval_s=1), Retry)
    store.full = False
    outbox.enqueue(record(RecordKind.SAMPLED, 2))
    head = await take(outbox)
    assert head.seq > 0 and head.action == "StopTransaction" and head.attempts == 5  # the count went to disk
    assert store._records[head.seq].attempts == 5


def test_disk_trouble_is_in_the_stats_until_the_disk_takes_writes_again() -> None:
    store = RefusingStore()
    seen: list[BacklogStats] = []
    outbox: Outbox = Outbox(store, on_change=lambda: seen.append(outbox.stats()))
    outbox.enqueue(record(RecordKind.START, 0, action="StartTransaction"))
    assert outbox.stats().disk_problem is None
    store.full = True
    outbox.enqueue(record(RecordKind.SAMPLED, 1))
    outbox.enqueue(record(RecordKind.SAMPLED, 2))
    stats = outbox.stats()
    assert (stats.records, stats.held_in_memory) == (3, 2)
    assert stats.disk_problem is not None
    assert "No space left on device" in stats.disk_problem and "2 billing message(s) held in memory only" in (
        stats.disk_problem
    )
    assert seen[-1].disk_problem == stats.disk_problem  # readers were told
    store.full = False
    outbox.enqueue(record(RecordKind.SAMPLED, 3))
    assert outbox.stats().disk_problem is None and seen[-1].disk_problem is None


# -- set_aside: a record the gateway itself can never send ------------------------------------------


def test_an_unsendable_stop_is_parked_and_the_queue_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    parked: list[OutboxRecord] = []
    outbox = Outbox(MemoryOutboxStore(), park=parked.append)
    stop = outbox.enqueue(record(RecordKind.STOP, 0, action="StopTransaction"))
    outbox.enqueue(record(RecordKind.START, 1, action="StartTransaction"))
    assert stop is not None
    outcome = outbox.set_aside(asyncio.run(take(outbox)), "meter_stop: -5 is less than the minimum of 0")
    assert isinstance(outcome, Dropped) and outcome.record.seq == stop.seq
    assert [r.seq for r in parked] == [stop.seq] and parked[0].attempts == 0  # no refusal was counted
    assert asyncio.run(take(outbox)).action == "StartTransaction"
    assert (outbox.stats().parked, outbox.stats().dropped) == (1, 0)
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [
        f"outbox: StopTransaction #{stop.seq} never left the gateway: meter_stop: -5 is less than the minimum of 0; "
        "parked"
    ]


def test_unsendable_meter_values_are_dropped_at_once_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    parked: list[OutboxRecord] = []
    outbox = Outbox(MemoryOutboxStore(), park=parked.append)
    sample = outbox.enqueue(record(RecordKind.SAMPLED, 0))
    outbox.enqueue(record(RecordKind.SAMPLED, 1))
    assert sample is not None
    assert isinstance(outbox.set_aside(asyncio.run(take(outbox)), "cannot build the CALL: KeyError 'x'"), Dropped)
    assert parked == [] and outbox.stats().dropped == 1 and len(outbox.store) == 1
    assert asyncio.run(take(outbox)).payload["minute"] == 1
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        f"outbox: MeterValues #{sample.seq} never left the gateway: cannot build the CALL: KeyError 'x'; dropped"
    ]


def test_an_unsendable_stop_that_cannot_be_parked_stays_and_is_tried_again() -> None:
    attempts = []

    def park(stop: OutboxRecord) -> None:
        attempts.append(stop)
        if len(attempts) == 1:
            raise OSError(30, "Read-only file system")

    outbox = Outbox(MemoryOutboxStore(), park=park)
    outbox.enqueue(record(RecordKind.STOP, 0, action="StopTransaction"))
    outcome = outbox.set_aside(asyncio.run(take(outbox)), "schema")
    assert isinstance(outcome, Retry) and outcome.delay_s == 5.0
    assert len(outbox.store) == 1 and outbox.stats().parked == 0
    assert outbox.stats().disk_problem is not None  # a refused write is disk trouble like any other
    assert isinstance(outbox.set_aside(asyncio.run(take(outbox)), "schema"), Dropped)
    assert len(outbox.store) == 0 and outbox.stats().parked == 1 and len(attempts) == 2


async def test_a_held_record_can_be_set_aside_too() -> None:
    store = RefusingStore()
    parked: list[OutboxRecord] = []
    outbox = Outbox(store, park=parked.append)
    store.full = True
    outbox.enqueue(record(RecordKind.SAMPLED, 0))
    outbox.enqueue(record(RecordKind.STOP, 1, action="StopTransaction"))
    assert isinstance(outbox.set_aside(await take(outbox), "schema"), Dropped)
    assert isinstance(outbox.set_aside(await take(outbox), "schema"), Dropped)
    assert [r.action for r in parked] == ["StopTransaction"]
    stats = outbox.stats()
    assert (stats.records, stats.held_in_memory, stats.dropped, stats.parked) == (0, 0, 1, 1)


def test_a_record_thinned_while_in_flight_can_still_fail_without_ending_the_delivery() -> None:
    """Found in review: thinning removes records behind the head; the one in flight may be one."""
    store = MemoryOutboxStore()
    outbox = Outbox(store)
    outbox.enqueue(record(RecordKind.SAMPLED, 0))
    head = asyncio.run(outbox.next())
    store.remove([head.seq])  # thinned (or dropped for space) meanwhile
    assert isinstance(outbox.failed(head, max_attempts=3, retry_interval_s=1), Retry)  # no KeyError


def test_an_unsendable_start_is_parked_like_a_stop() -> None:
    """Found in review: a dropped start leaves its whole session unbilled; parked, the operator has it."""
    parked: list[OutboxRecord] = []
    outbox = Outbox(MemoryOutboxStore(), park=parked.append)
    outbox.enqueue(record(RecordKind.START, 0, action="StartTransaction"))
    head = asyncio.run(outbox.next())
    assert isinstance(outbox.set_aside(head, "idTag longer than 20"), Dropped)
    assert [r.action for r in parked] == ["StartTransaction"] and outbox.stats().parked == 1
