"""Batched replay for 1.6: which queued MeterValues go in one MeterValues.req with the head.

The scan, the caps and the combined request are shared with 2.0.1 (adapters/ocpp_batching.py);
what may join is 1.6's:

* MeterValues of the same connector and the same transaction (or, outside a session, of the same
  connector with no transaction) further back in the queue, oldest first. Other connectors'
  records in between stay where they are: a CSMS orders each connector's values by their
  timestamps, and nothing of another connector depends on them.
* The scan stops at the head's own transaction's StartTransaction or StopTransaction (a stop is
  always sent after its values), and, for values outside a session, at any start or stop.
"""

from __future__ import annotations

from adapters import ocpp_batching
from adapters.ocpp_batching import MAX_REQUEST_BYTES, Join, combined
from gateway.domain.outbox import OutboxRecord, RecordInfo, RecordKind
from gateway.services.outbox import Outbox

__all__ = ["MAX_REQUEST_BYTES", "MeterValuesRules", "batch_for", "combined"]

_VALUES = frozenset({RecordKind.SAMPLED, RecordKind.ALIGNED})
_ENDS = frozenset({RecordKind.START, RecordKind.STOP})


class MeterValuesRules:
    """1.6's join rules (see the module doc)."""

    def leads(self, head: OutboxRecord) -> bool:
        return head.action == "MeterValues"

    def barrier(self, info: RecordInfo, head: OutboxRecord) -> bool:
        return info.kind in _ENDS and (head.local_ref is None or info.local_ref == head.local_ref)

    def candidate(self, info: RecordInfo, head: OutboxRecord) -> bool:
        return info.kind in _VALUES and info.local_ref == head.local_ref

    def joins(self, record: OutboxRecord, head: OutboxRecord) -> Join:
        same_connector = record.payload.get("connector_id") == head.payload.get("connector_id")
        return Join.JOIN if record.action == "MeterValues" and same_connector else Join.SKIP


RULES = MeterValuesRules()


def batch_for(outbox: Outbox, head: OutboxRecord, per_request: int) -> list[OutboxRecord]:
    """``head`` and the queued records that can go in one MeterValues.req with it, oldest first."""
    return ocpp_batching.batch_for(outbox, head, per_request, RULES)
