"""Which queued records go out together in one MeterValues.req while a backlog drains."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.ocpp_upstream.batching import MAX_REQUEST_BYTES, batch_for, combined
from adapters.ocpp_upstream.outgoing import call_problem
from gateway.domain.outbox import NewRecord, OutboxRecord, RecordKind
from gateway.services.outbox import Outbox
from tests.fixtures.memory_outbox import MemoryOutboxStore


def values(connector: int, minute: int, ref: str | None, kind: RecordKind = RecordKind.SAMPLED) -> NewRecord:
    stamp = f"2026-12-01T10:{minute:02d}:00Z"
    context = "Sample.Clock" if kind is RecordKind.ALIGNED else "Sample.Periodic"
    entry = {"timestamp": stamp, "sampled_value": [{"value": str(1000 + minute), "context": context}]}
    return NewRecord(kind, "MeterValues", {"connector_id": connector, "meter_value": [entry]}, stamp, ref)


def start(connector: int, ref: str) -> NewRecord:
    payload = {"connector_id": connector, "id_tag": "TAG", "meter_start": 0, "timestamp": "2026-12-01T10:00:00Z"}
    return NewRecord(RecordKind.START, "StartTransaction", payload, "2026-12-01T10:00:00Z", ref)


def stop(ref: str, minute: int) -> NewRecord:
    stamp = f"2026-12-01T10:{minute:02d}:00Z"
    return NewRecord(RecordKind.STOP, "StopTransaction", {"meter_stop": 10, "timestamp": stamp}, stamp, ref)


def queued(*records: NewRecord) -> tuple[Outbox, list[OutboxRecord]]:
    outbox = Outbox(MemoryOutboxStore())
    stored = [outbox.enqueue(record) for record in records]
    assert all(record is not None for record in stored)
    return outbox, [record for record in stored if record is not None]


def stamps(record: OutboxRecord) -> list[Any]:
    return [entry["timestamp"] for entry in record.payload["meter_value"]]


def test_a_connectors_values_of_one_session_go_together_past_other_connectors() -> None:
    aligned = values(1, 3, "a", RecordKind.ALIGNED)
    outbox, stored = queued(values(1, 1, "a"), values(2, 1, "b"), values(1, 2, "a"), values(2, 2, "b"), aligned)
    batch = batch_for(outbox, stored[0], per_request=50)
    assert [r.seq for r in batch] == [stored[0].seq, stored[2].seq, stored[4].seq]
    sent = combined(batch)
    assert stamps(sent) == ["2026-12-01T10:01:00Z", "2026-12-01T10:02:00Z", "2026-12-01T10:03:00Z"]
    contexts = [entry["sampled_value"][0]["context"] for entry in sent.payload["meter_value"]]
    assert contexts == ["Sample.Periodic", "Sample.Periodic", "Sample.Clock"]  # each keeps its own
    # delivered together: connector 2's records are the queue now, in their order
    outbox.delivered_together(batch)
    assert [info.seq for info in outbox.store.index()] == [stored[1].seq, stored[3].seq]


def test_a_stop_is_never_overtaken_and_another_session_is_not_joined() -> None:
    outbox, stored = queued(values(1, 1, "a"), values(1, 2, "a"), stop("a", 3), values(1, 4, "a"), values(1, 5, "c"))
    assert [r.seq for r in batch_for(outbox, stored[0], 50)] == [stored[0].seq, stored[1].seq]
    # values outside a session stop at any start or stop, whoever's
    outbox, stored = queued(values(1, 1, None), values(1, 2, None), start(2, "x"), values(1, 3, None))
    assert [r.seq for r in batch_for(outbox, stored[0], 50)] == [stored[0].seq, stored[1].seq]


def test_a_request_is_bounded_by_entries_and_by_bytes() -> None:
    outbox, stored = queued(*(values(1, minute, "a") for minute in range(10)))
    assert len(batch_for(outbox, stored[0], per_request=4)) == 4
    assert batch_for(outbox, stored[0], per_request=1) == [stored[0]]  # today's behaviour
    big = "x" * (MAX_REQUEST_BYTES // 3)
    records = [values(1, minute, "a") for minute in range(5)]
    for record in records:
        record.payload["meter_value"][0]["sampled_value"][0]["value"] = big
    outbox, stored = queued(*records)
    assert len(batch_for(outbox, stored[0], per_request=50)) == 2  # a third would pass the frame bound


def test_a_damaged_record_is_not_joined_and_a_live_sample_goes_alone() -> None:
    damaged = values(1, 2, "a")
    damaged.payload["meter_value"] = "not a list"
    outbox, stored = queued(values(1, 1, "a"), damaged, values(1, 3, "a"))
    assert batch_for(outbox, stored[0], 50) == [stored[0]]
    outbox, stored = queued(values(1, 1, "a"))
    assert batch_for(outbox, stored[0], 50) == [stored[0]]


@pytest.mark.parametrize("count", [1, 2, 50])
async def test_a_batch_passes_the_ocpp_schema_with_the_csms_transaction_id(count: int) -> None:
    outbox, stored = queued(*(values(3, minute % 60, "a") for minute in range(count)))
    request, problem = await call_problem(combined(batch_for(outbox, stored[0], 50)), csms_id=4711)
    assert problem is None
    assert request.transaction_id == 4711 and len(request.meter_value) == count
