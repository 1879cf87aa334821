"""Batched replay: a backlog's MeterValues of one connector and transaction go out together.

OCPP 1.6 allows one outstanding CALL, so replaying a backlog costs one round trip per request: at
100 ms a day's samples of 20 connectors take most of an hour one by one. A MeterValues.req carries
``meterValue[1..*]``, each entry with its own timestamp and sampled values (their context and
measurand included), so a connector's queued samples of one transaction can share one request
without losing anything a CSMS bills from.

Which records join the head (a MeterValues on disk):

* MeterValues of the same connector and the same transaction (or, outside a session, of the same
  connector with no transaction) further back in the queue, oldest first. Other connectors'
  records in between stay where they are: a CSMS orders each connector's values by their
  timestamps, and nothing of another connector depends on them.
* The scan stops at the head's own transaction's StartTransaction or StopTransaction (a stop is
  always sent after its values), and, for values outside a session, at any start or stop.
* At most ``per_request`` entries and ``MAX_REQUEST_BYTES`` of entries, so the request stays under
  the frame size a CSMS accepts; the scan looks ``SCAN_PER_ENTRY`` records ahead per entry wanted.

A live sample (nothing queued behind it) goes alone, as before. The records of a batch leave the
queue together only once the CSMS has answered the request; a kill before that re-sends them all.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from gateway.domain.outbox import OutboxRecord, RecordInfo, RecordKind
from gateway.services.outbox import Outbox

MAX_REQUEST_BYTES = 60_000  # of meterValue entries as JSON: under the 64 KiB frames some CSMSs take
SCAN_PER_ENTRY = 25  # a site of up to ~25 connectors interleaves its samples this thinly
MAX_SCAN = 5_000  # records looked at for one batch, at most
_VALUES = frozenset({RecordKind.SAMPLED, RecordKind.ALIGNED})
_ENDS = frozenset({RecordKind.START, RecordKind.STOP})


def batch_for(outbox: Outbox, head: OutboxRecord, per_request: int) -> list[OutboxRecord]:
    """``head`` and the queued records that can go in one MeterValues.req with it, oldest first."""
    entries = _entries(head)
    if per_request <= 1 or head.action != "MeterValues" or head.seq < 0 or entries is None:
        return [head]
    connector = head.payload.get("connector_id")
    count, size = len(entries), _size(entries)
    batch = [head]
    for info in outbox.upcoming(min(MAX_SCAN, per_request * SCAN_PER_ENTRY)):
        if count >= per_request or _barrier(info, head):
            break
        if info.kind not in _VALUES or info.local_ref != head.local_ref:
            continue
        record = outbox.record(info.seq)
        if record is None or record.action != "MeterValues" or record.payload.get("connector_id") != connector:
            continue
        more = _entries(record)
        if more is None:
            break  # a damaged record goes alone, when its turn comes, and is set aside there
        if count + len(more) > per_request or size + _size(more) > MAX_REQUEST_BYTES:
            break
        batch.append(record)
        count, size = count + len(more), size + _size(more)
    return batch


def combined(batch: list[OutboxRecord]) -> OutboxRecord:
    """The head with every entry of the batch, in order: what is sent for the batch."""
    if len(batch) == 1:
        return batch[0]
    head = batch[0]
    values = [entry for record in batch for entry in (_entries(record) or [])]
    return replace(head, payload={**head.payload, "meter_value": values})


def _barrier(info: RecordInfo, head: OutboxRecord) -> bool:
    """A start or stop that the head's values must not be moved across."""
    return info.kind in _ENDS and (head.local_ref is None or info.local_ref == head.local_ref)


def _entries(record: OutboxRecord) -> list[Any] | None:
    values = record.payload.get("meter_value")
    return values if isinstance(values, list) and values else None


def _size(entries: list[Any]) -> int:
    return len(json.dumps(entries, separators=(",", ":"), default=str))
