"""Security events: the domain's rate limit, the Site's door, and the 2.0.1 request each becomes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from adapters.ocpp201_upstream.security_events import EVENT_TYPES, SecurityEvents201, notification
from adapters.ocpp201_upstream.transaction_events import check
from gateway.domain.events import SecurityEventSeen
from gateway.domain.model import Connector
from gateway.domain.outbox import NewRecord, RecordKind
from gateway.domain.security import SecurityEventKind, SecurityEventLimit
from gateway.services.outbox import Outbox
from gateway.services.site import Site
from tests.fixtures.memory_outbox import RefusingStore

T0 = datetime(2026, 12, 7, 10, 0, 0, tzinfo=UTC)
LOGIN = SecurityEventKind.LOGIN_FAILED


class StepClock:
    def __init__(self) -> None:
        self.at = T0

    def now(self) -> datetime:
        return self.at


def seconds(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def test_one_event_per_source_a_minute_then_one_that_counts_the_held() -> None:
    limit = SecurityEventLimit()
    assert limit.admit(LOGIN, "page 10.0.0.9", seconds(0)) == 1
    assert [limit.admit(LOGIN, "page 10.0.0.9", seconds(s)) for s in (1, 2, 59)] == [None, None, None]
    assert limit.admit(LOGIN, "page 10.0.0.7", seconds(3)) == 1  # another source has its own minute
    assert limit.admit(SecurityEventKind.INVALID_MESSAGES, "page 10.0.0.9", seconds(3)) == 1  # another kind too
    assert limit.admit(LOGIN, "page 10.0.0.9", seconds(60)) == 4  # itself and the three held back
    assert limit.admit(LOGIN, "page 10.0.0.9", seconds(61)) is None


def test_many_sources_share_one_key_and_quiet_ones_are_forgotten() -> None:
    limit = SecurityEventLimit(max_sources=3)
    assert [limit.admit(LOGIN, f"ip{n}", seconds(0)) for n in range(3)] == [1, 1, 1]
    assert limit.admit(LOGIN, "ip3", seconds(1)) == 1  # the fourth source: the shared key's first
    assert limit.admit(LOGIN, "ip4", seconds(2)) is None  # the fifth shares its minute
    assert limit.admit(LOGIN, "ip5", seconds(61)) == 1  # the windows passed: ip0..ip2 forgotten, room again
    assert limit.admit(LOGIN, "ip6", seconds(62)) == 1
    assert limit.admit(LOGIN, "ip7", seconds(62)) == 2  # full again: the shared key, with the one it held
    assert len(limit._windows) == 3


def test_sources_that_tried_twice_and_went_away_do_not_keep_the_slots_for_good() -> None:
    """Found in review: a key with a held-back count was never forgotten, so a few sources that
    each tried twice left every later one in the shared key."""
    limit = SecurityEventLimit(max_sources=2)
    for n in range(2):
        assert limit.admit(LOGIN, f"ip{n}", seconds(0)) == 1
        assert limit.admit(LOGIN, f"ip{n}", seconds(1)) is None  # held, waiting for its next event
    assert limit.admit(LOGIN, "ip2", seconds(120)) == 1  # within 10 minutes: still the shared key's
    assert (LOGIN, "ip0") in limit._windows  # its held count waits for its next event
    assert limit.admit(LOGIN, "ip3", seconds(660)) == 1  # held counts dropped: ip3 has a slot of its own
    assert (LOGIN, "ip3") in limit._windows


def test_the_site_stamps_limits_and_emits() -> None:
    clock = StepClock()
    site = Site([Connector(1, "left")], [], clock=clock)
    stream = site.subscribe()
    for _ in range(5):
        site.security.report(LOGIN, "status page: wrong user name or password from 10.0.0.9", "page 10.0.0.9")
    clock.at = seconds(60)
    site.security.report(LOGIN, "status page: wrong user name or password from 10.0.0.9", "page 10.0.0.9")
    seen = [e for e in iter(stream.get_nowait, None) if isinstance(e, SecurityEventSeen)]
    assert [(e.at, e.count) for e in seen] == [(T0, 1), (seconds(60), 5)]


@pytest.mark.parametrize("kind", list(SecurityEventKind))
def test_every_kind_is_a_2_0_1_event_that_passes_the_schema(kind: SecurityEventKind) -> None:
    hostile = "x\x00\x1b[31m" + "é" * 400  # control characters, and far longer than 255
    request = notification(SecurityEventSeen(kind, T0, hostile, count=12))
    assert asyncio.run(check(request)) is None
    assert request.type == EVENT_TYPES[kind][0] and request.timestamp == "2026-12-07T10:00:00.000Z"
    assert len(request.tech_info) <= 255 and "\x00" not in request.tech_info
    assert request.tech_info.endswith("(12 times since the last report)")


async def test_a_full_queue_drops_the_oldest_non_critical_event_first() -> None:
    site = Site([Connector(1, "left")], [])
    queue = SecurityEvents201(site, lambda: False, max_queued=3)
    kinds = [SecurityEventKind.STARTUP, SecurityEventKind.INVALID_MESSAGES, SecurityEventKind.RESET, LOGIN]
    for n, kind in enumerate(kinds):
        queue.take(SecurityEventSeen(kind, seconds(n), ""))
    assert [e.kind for e in queue.queued()] == [SecurityEventKind.STARTUP, SecurityEventKind.RESET, LOGIN]
    queue.take(SecurityEventSeen(SecurityEventKind.STORAGE_FULL, seconds(9), ""))  # all critical: the oldest goes
    assert [e.kind for e in queue.queued()] == [SecurityEventKind.RESET, LOGIN, SecurityEventKind.STORAGE_FULL]


def test_a_disk_that_begins_to_refuse_writes_is_told_once_per_outage() -> None:
    store = RefusingStore()
    told: list[str] = []
    outbox = Outbox(store, on_disk_refused=told.append)
    at = T0.isoformat()
    outbox.enqueue(NewRecord(RecordKind.START, "StartTransaction", {}, at, "tx1"))
    store.full = True
    for _ in range(3):
        outbox.enqueue(NewRecord(RecordKind.SAMPLED, "MeterValues", {}, at, "tx1"))
    assert len(told) == 1 and told[0].startswith("cannot write to disk") and "No space left" in told[0]
