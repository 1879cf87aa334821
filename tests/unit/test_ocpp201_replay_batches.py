"""Which queued 2.0.1 events go out together in one TransactionEvent while a backlog drains, and
the seqNo a batch keeps when it is sent again. Every combined payload passes the 2.0.1 schema."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.ocpp201_upstream.ledger import Ledger201, record_key
from adapters.ocpp201_upstream.mapping import register_value
from adapters.ocpp201_upstream.replay_batches import batch_for, numbered_request
from adapters.ocpp201_upstream.transaction_events import (
    call_problem,
    ended_payload,
    started_payload,
    state_changed_payload,
    updated_payload,
)
from adapters.ocpp_batching import MAX_REQUEST_BYTES, combined
from adapters.storage.settings import JsonSettingsStore
from gateway.domain.model import ConnectorStatus
from gateway.domain.outbox import NewRecord, OutboxRecord, RecordKind
from gateway.domain.transactions import StartTransaction, StopReason, StopTransaction
from gateway.services.outbox import Outbox
from tests.fixtures.memory_outbox import MemoryOutboxStore

A, B = "c1-20261201T100000-1-1", "c2-20261201T100000-1-2"
CONTEXT = {RecordKind.SAMPLED: "Sample.Periodic", RecordKind.ALIGNED: "Sample.Clock"}
TRIGGER = {RecordKind.SAMPLED: "MeterValuePeriodic", RecordKind.ALIGNED: "MeterValueClock"}


def stamp(minute: int) -> str:
    return f"2026-12-01T10:{minute:02d}:00Z"


def updated(
    ref: str,
    minute: int,
    kind: RecordKind = RecordKind.SAMPLED,
    *,
    offline: bool = True,
    status: ConnectorStatus = ConnectorStatus.CHARGING,
) -> NewRecord:
    entries = [register_value(1_000 + minute, stamp(minute), CONTEXT[kind])]
    payload = updated_payload(ref, TRIGGER[kind], entries, status, offline=offline)
    return NewRecord(kind, "TransactionEvent", payload, stamp(minute), ref)


def state_change(ref: str, minute: int) -> NewRecord:
    at = datetime.fromisoformat(stamp(minute))
    payload = state_changed_payload(ref, "SuspendedEV", at, offline=True)
    return NewRecord(RecordKind.ALIGNED, "TransactionEvent", payload, stamp(minute), ref)


def authorized(ref: str, minute: int) -> NewRecord:
    """An Updated that says the transaction was authorised: an idToken, no values."""
    at = datetime.fromisoformat(stamp(minute))
    token = {"id_token": "TAG", "type": "ISO14443"}
    payload = state_changed_payload(ref, "EVConnected", at, offline=True, trigger_reason="Authorized", token=token)
    return NewRecord(RecordKind.ALIGNED, "TransactionEvent", payload, stamp(minute), ref)


def started(ref: str, minute: int) -> NewRecord:
    at = datetime.fromisoformat(stamp(minute)).astimezone(UTC)
    payload = started_payload(StartTransaction(1, ref, "TAG", 1_000, at), "Authorized", "ISO14443", None, offline=True)
    return NewRecord(RecordKind.START, "TransactionEvent", payload, stamp(minute), ref)


def ended(ref: str, minute: int) -> NewRecord:
    at = datetime.fromisoformat(stamp(minute)).astimezone(UTC)
    stop = StopTransaction(1, ref, "TAG", 1_000 + minute, at, StopReason.EV_DISCONNECTED)
    payload = ended_payload(stop, "Central", offline=True)
    return NewRecord(RecordKind.STOP, "TransactionEvent", payload, stamp(minute), ref)


def queued(*records: NewRecord) -> tuple[Outbox, list[OutboxRecord]]:
    outbox = Outbox(MemoryOutboxStore())
    stored = [outbox.enqueue(record) for record in records]
    assert all(record is not None for record in stored)
    return outbox, [record for record in stored if record is not None]


def seqs(batch: list[OutboxRecord]) -> list[int]:
    return [record.seq for record in batch]


async def sent(batch: list[OutboxRecord]) -> dict[str, Any]:
    """The combined payload, checked against the 2.0.1 schema as the library checks it."""
    request, problem = await call_problem(combined(batch), 7)
    assert problem is None, problem
    assert request.seq_no == 7
    return combined(batch).payload


async def test_a_transactions_updated_events_go_together_past_other_evses_each_value_its_own() -> None:
    outbox, stored = queued(
        updated(A, 1), updated(B, 1), updated(A, 2), updated(B, 2), updated(A, 3, RecordKind.ALIGNED)
    )
    batch = batch_for(outbox, stored[0], per_request=50)
    assert seqs(batch) == [stored[0].seq, stored[2].seq, stored[4].seq]
    payload = await sent(batch)
    assert [v["timestamp"] for v in payload["meter_value"]] == [stamp(1), stamp(2), stamp(3)]
    contexts = [v["sampled_value"][0]["context"] for v in payload["meter_value"]]
    assert contexts == ["Sample.Periodic", "Sample.Periodic", "Sample.Clock"]
    assert (payload["timestamp"], payload["trigger_reason"]) == (stamp(1), "MeterValuePeriodic")  # the head's
    outbox.delivered_together(batch)
    assert [info.seq for info in outbox.store.index()] == [stored[1].seq, stored[3].seq]  # B's, in order


async def test_a_started_an_ended_a_charging_state_change_and_an_authorisation_are_barriers() -> None:
    outbox, stored = queued(updated(A, 1), updated(A, 2), ended(A, 3), updated(A, 4))
    assert seqs(batch_for(outbox, stored[0], 50)) == seqs(stored[:2])
    await sent(batch_for(outbox, stored[0], 50))
    outbox, stored = queued(updated(A, 1), updated(B, 1), state_change(A, 2), updated(A, 3))
    assert seqs(batch_for(outbox, stored[0], 50)) == [stored[0].seq]
    outbox.delivered_together(batch_for(outbox, stored[0], 50))
    assert seqs(batch_for(outbox, stored[1], 50)) == [stored[1].seq]  # B: nothing of its own behind it
    for barrier in (authorized(A, 2), started(A, 2)):
        outbox, stored = queued(updated(A, 1), barrier, updated(A, 3))
        assert seqs(batch_for(outbox, stored[0], 50)) == [stored[0].seq]
    # another transaction's end is no barrier for A
    outbox, stored = queued(updated(A, 1), ended(B, 1), updated(A, 2))
    assert seqs(batch_for(outbox, stored[0], 50)) == [stored[0].seq, stored[2].seq]


async def test_offline_or_charging_state_mismatch_ends_the_batch_without_reordering() -> None:
    outbox, stored = queued(updated(A, 1), updated(A, 2), updated(A, 3, offline=False), updated(A, 4))
    assert seqs(batch_for(outbox, stored[0], 50)) == seqs(stored[:2])
    suspended = ConnectorStatus.SUSPENDED_EV
    outbox, stored = queued(updated(A, 1), updated(A, 2, status=suspended), updated(A, 3))
    assert seqs(batch_for(outbox, stored[0], 50)) == [stored[0].seq]
    outbox, stored = queued(updated(A, 1, status=suspended), updated(A, 2, status=suspended))
    payload = await sent(batch_for(outbox, stored[0], 50))
    assert payload["transaction_info"]["charging_state"] == "SuspendedEV"


async def test_only_an_updated_with_values_leads_and_a_live_event_goes_alone() -> None:
    outbox, stored = queued(state_change(A, 1), updated(A, 2))
    assert batch_for(outbox, stored[0], 50) == [stored[0]]
    outbox, stored = queued(ended(A, 1))
    assert batch_for(outbox, stored[0], 50) == [stored[0]]
    outbox, stored = queued(updated(A, 1))  # nothing behind it
    assert batch_for(outbox, stored[0], 50) == [stored[0]]


async def test_a_request_is_bounded_by_entries_and_bytes() -> None:
    outbox, stored = queued(*(updated(A, minute) for minute in range(10)))
    assert len(batch_for(outbox, stored[0], per_request=4)) == 4
    await sent(batch_for(outbox, stored[0], per_request=4))
    assert batch_for(outbox, stored[0], per_request=1) == [stored[0]]
    records = [updated(A, minute) for minute in range(5)]
    for record in records:  # a big entry: a third would pass the frame bound
        entry = record.payload["meter_value"][0]
        one = len(json.dumps(entry["sampled_value"][0], separators=(",", ":")))
        entry["sampled_value"] = entry["sampled_value"] * (MAX_REQUEST_BYTES // 3 // one + 1)
    outbox, stored = queued(*records)
    assert len(batch_for(outbox, stored[0], per_request=1000)) == 2
    await sent(batch_for(outbox, stored[0], per_request=1000))


async def test_a_resend_is_the_same_batch_with_the_same_seq_no(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    ledger = Ledger201(JsonSettingsStore(path))
    outbox, stored = queued(updated(A, 1), updated(A, 2))
    batch, request, problem = await numbered_request(outbox, ledger, stored[0], 50)
    assert problem is None and seqs(batch) == seqs(stored) and request.seq_no == 0
    first = combined(batch).payload
    for minute in (3, 4):  # queued behind it while the answer is missing
        outbox.enqueue(updated(A, minute))
    again, request, _ = await numbered_request(Outbox(outbox.store), Ledger201(JsonSettingsStore(path)), stored[0], 50)
    assert request.seq_no == 0 and combined(again).payload == first  # restarted: the same request
    outbox.delivered_together(again)
    head = await outbox.next()
    rest, request, _ = await numbered_request(outbox, ledger, head, 50)
    assert request.seq_no == 1 and [v["timestamp"] for v in combined(rest).payload["meter_value"]] == [
        stamp(3),
        stamp(4),
    ]


async def test_a_member_thinned_before_the_resend_leaves_the_number_with_fewer_values(tmp_path: Path) -> None:
    ledger = Ledger201(JsonSettingsStore(tmp_path / "ledger.json"))
    outbox, stored = queued(updated(A, 1), updated(A, 2), updated(A, 3))
    batch, request, _ = await numbered_request(outbox, ledger, stored[0], 50)
    assert request.seq_no == 0 and len(batch) == 3
    outbox.store.remove([stored[1].seq])  # as thinning does, never the head
    outbox.enqueue(updated(A, 4))
    again, request, _ = await numbered_request(outbox, ledger, stored[0], 50)
    assert request.seq_no == 0 and seqs(again) == [stored[0].seq, stored[2].seq]


async def test_a_head_numbered_alone_by_an_older_ledger_is_sent_alone_again(tmp_path: Path) -> None:
    ledger = Ledger201(JsonSettingsStore(tmp_path / "ledger.json"))
    outbox, stored = queued(updated(A, 1), updated(A, 2))
    assert ledger.seq_no(A, record_key(stored[0].payload)) == 0  # no batch end written down
    batch, request, _ = await numbered_request(outbox, ledger, stored[0], 50)
    assert batch == [stored[0]] and request.seq_no == 0


async def test_a_damaged_member_is_not_joined_and_the_head_goes_alone(tmp_path: Path) -> None:
    damaged = updated(A, 2)
    damaged.payload["meter_value"][0]["sampled_value"] = "not a list"
    outbox, stored = queued(updated(A, 1), damaged)
    ledger = Ledger201(JsonSettingsStore(tmp_path / "ledger.json"))
    batch, request, problem = await numbered_request(outbox, ledger, stored[0], 50)
    assert problem is None and batch == [stored[0]] and request.seq_no == 0
