"""Batched replay for 2.0.1: queued Updated events of one transaction in one TransactionEvent.

A TransactionEvent carries ``meterValue[1..*]``, each entry with its own timestamp and sampled
values (context Sample.Periodic, Sample.Clock or Trigger kept per value), so a backlog's periodic
and clock-aligned Updated events of one transaction can share one Updated; the scan, the caps
(``[upstream] meter_values_per_request`` entries and 60 kB, as 1.6) and the combined payload are
adapters/ocpp_batching.py's. What may join the head (an Updated with values):

* an Updated with values of the same transaction whose other fields are the head's: the same
  ``offline`` and the same ``transactionInfo`` (so the same chargingState), no idToken. The
  combined event has the head's ``timestamp`` and ``triggerReason``.
* Records of other transactions and EVSEs in between are skipped and stay where they are (seqNo
  counts per transaction). Anything else of the head's transaction ends the batch: its Started or
  Ended, a chargingState change or an authorisation (an Updated without values), an Updated that
  differs in ``offline`` or chargingState. Its events are never reordered.

seqNo (ledger.py) is given to the head's payload digest, with the outbox number of the batch's last
record written down beside it before the frame leaves. Sent again (the link dropped before the
answer, a CALLERROR, a kill: records keep their outbox numbers across restarts), the batch is built
again only up to that record, so the request is the one that number was given to, whatever was
queued behind it since: no number is skipped, and none is given twice. A member thinned away or
dropped for space in between (the outbox thins only past ``thin_after_records``, never the head)
is missing from the resend: the number is the same, with fewer values, as the CSMS would have had
without it had it gone before the first send; the values of the first send that arrived are not
taken back.
"""

from __future__ import annotations

from typing import Any

from adapters import ocpp_batching
from adapters.ocpp201_upstream.ledger import Ledger201, record_key
from adapters.ocpp201_upstream.transaction_events import call_problem
from adapters.ocpp_batching import Join, combined, entries_of
from gateway.domain.outbox import OutboxRecord, RecordInfo, RecordKind
from gateway.services.outbox import Outbox

_ENDS = frozenset({RecordKind.START, RecordKind.STOP})
_HEAD_ONLY = frozenset({"meter_value", "timestamp", "trigger_reason"})  # the rest must be the same


def _shape(payload: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in payload.items() if key not in _HEAD_ONLY}


class UpdatedRules:
    """2.0.1's join rules (see the module doc)."""

    def leads(self, head: OutboxRecord) -> bool:
        return head.action == "TransactionEvent" and head.local_ref is not None and _updated(head)

    def barrier(self, info: RecordInfo, head: OutboxRecord) -> bool:
        return info.local_ref == head.local_ref and info.kind in _ENDS

    def candidate(self, info: RecordInfo, head: OutboxRecord) -> bool:
        return info.local_ref == head.local_ref

    def joins(self, record: OutboxRecord, head: OutboxRecord) -> Join:
        same = record.action == "TransactionEvent" and _shape(record.payload) == _shape(head.payload)
        return Join.JOIN if same and entries_of(record) is not None else Join.STOP


def _updated(record: OutboxRecord) -> bool:
    return record.payload.get("event_type") == "Updated"


RULES = UpdatedRules()


def batch_for(outbox: Outbox, head: OutboxRecord, per_request: int, through: int | None = None) -> list[OutboxRecord]:
    """``head`` and the queued Updated events that go in one TransactionEvent with it, oldest first."""
    return ocpp_batching.batch_for(outbox, head, per_request, RULES, through)


async def numbered_request(
    outbox: Outbox, ledger: Ledger201, head: OutboxRecord, per_request: int
) -> tuple[list[OutboxRecord], Any, str | None]:
    """(the records sent together, the CALL with its seqNo, None), or (..., None, why the head
    cannot be sent). A batch with a member that fails the schema is dropped for the head alone;
    a record that fails it takes no seqNo."""
    ref = head.local_ref if head.action == "TransactionEvent" else None  # numbered: a transaction's events
    key = record_key(head.payload)
    through = None
    if ref is not None and (known := ledger.numbered(ref, key)) is not None:
        through = head.seq if known[1] is None else known[1]  # sent before: the same batch again
    batch = batch_for(outbox, head, per_request, through)
    request, problem = await call_problem(combined(batch), 0)
    if problem is not None and len(batch) > 1:
        batch = [head]
        request, problem = await call_problem(head, 0)
    if problem is None and ref is not None:
        request.seq_no = ledger.seq_no(ref, key, through=batch[-1].seq)
    return batch, request, problem
