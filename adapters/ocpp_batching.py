"""Batched replay, for both OCPP versions: queued samples that go out in one request with the head.

One CALL may be outstanding at a time (OCPP 1.6 and 2.0.1 alike), so replaying a backlog costs one
round trip per request: at 100 ms a day's samples of 20 connectors take most of an hour one by
one. Both versions' messages carry ``meterValue[1..*]`` (a 1.6 MeterValues.req, a 2.0.1
TransactionEvent), each entry with its own timestamp and sampled values (their context and
measurand included), so a backlog's samples of one transaction can share one request without
losing anything a CSMS bills from.

What may join is the version's business (``JoinRules``: adapters/ocpp_upstream/batching.py for
1.6, adapters/ocpp201_upstream/replay_batches.py for 2.0.1); what is common lives here:

* the scan goes through the records behind the head, oldest first, and stops at a barrier
  (``JoinRules.barrier``: what the head's values must not be moved across) or at a record that
  ``JoinRules.joins`` says ends the batch; records it skips stay where they are;
* at most ``per_request`` entries and ``MAX_REQUEST_BYTES`` of entries, so the request stays under
  the frame size a CSMS accepts; the scan looks ``SCAN_PER_ENTRY`` records ahead per entry wanted;
* ``through`` bounds the scan to records numbered up to it: a batch sent before is built again
  as it was, whatever was queued behind it since (2.0.1 numbers what it sends, see there).

A live sample (nothing queued behind it) goes alone. The records of a batch leave the queue
together only once the CSMS has answered the request (``Outbox.delivered_together``); a kill before
that re-sends them all.
"""

from __future__ import annotations

import json
from dataclasses import replace
from enum import Enum
from typing import Any, Protocol

from gateway.domain.outbox import OutboxRecord, RecordInfo
from gateway.services.outbox import Outbox

MAX_REQUEST_BYTES = 60_000  # of meterValue entries as JSON: under the 64 KiB frames some CSMSs take
SCAN_PER_ENTRY = 25  # a site of up to ~25 connectors interleaves its samples this thinly
MAX_SCAN = 5_000  # records looked at for one batch, at most


class Join(Enum):
    """What a record read during the scan does to the batch."""

    JOIN = "join"  # its entries go with the head's
    SKIP = "skip"  # not the head's business: it stays in place, the scan goes on
    STOP = "stop"  # the batch ends before it


class JoinRules(Protocol):
    """A version's answer to "may this record go in one request with the head?"."""

    def leads(self, head: OutboxRecord) -> bool:
        """Whether ``head`` can take others with it at all."""

    def barrier(self, info: RecordInfo, head: OutboxRecord) -> bool:
        """A record (seen by its metadata) that the head's values must not be moved across."""

    def candidate(self, info: RecordInfo, head: OutboxRecord) -> bool:
        """Whether a record (by its metadata) is worth reading from disk for ``joins``."""

    def joins(self, record: OutboxRecord, head: OutboxRecord) -> Join:
        """What a candidate's payload does to the batch."""


def batch_for(
    outbox: Outbox, head: OutboxRecord, per_request: int, rules: JoinRules, through: int | None = None
) -> list[OutboxRecord]:
    """``head`` and the queued records that can go in one request with it, oldest first (none
    numbered past ``through``, when given)."""
    entries = entries_of(head)
    if per_request <= 1 or head.seq < 0 or entries is None or not rules.leads(head):
        return [head]
    count, size = len(entries), _size(entries)
    batch = [head]
    for info in outbox.upcoming(min(MAX_SCAN, per_request * SCAN_PER_ENTRY)):
        if count >= per_request or (through is not None and info.seq > through) or rules.barrier(info, head):
            break
        if not rules.candidate(info, head):
            continue
        record = outbox.record(info.seq)
        verdict = Join.SKIP if record is None else rules.joins(record, head)
        if record is None or verdict is Join.SKIP:
            continue
        more = entries_of(record)
        if verdict is Join.STOP or more is None:
            break  # a damaged record goes alone, when its turn comes, and is set aside there
        more_size = _size(more)
        if count + len(more) > per_request or size + more_size > MAX_REQUEST_BYTES:
            break
        batch.append(record)
        count, size = count + len(more), size + more_size
    return batch


def combined(batch: list[OutboxRecord]) -> OutboxRecord:
    """The head with every entry of the batch, in order: what is sent for the batch (the head's
    other fields, its time and trigger included, stand for the whole request)."""
    if len(batch) == 1:
        return batch[0]
    head = batch[0]
    values = [entry for record in batch for entry in (entries_of(record) or [])]
    return replace(head, payload={**head.payload, "meter_value": values})


def entries_of(record: OutboxRecord) -> list[Any] | None:
    """A record's meterValue entries (None: it has none, or they are not a list)."""
    values = record.payload.get("meter_value")
    return values if isinstance(values, list) and values else None


def _size(entries: list[Any]) -> int:
    return len(json.dumps(entries, separators=(",", ":"), default=str))
