"""Benchmark: queueing and delivering outbox records at a backlog, naive TinyDB vs the segmented store.

The baseline is what a first version would do: one TinyDB file with its default JSONStorage,
``db.insert`` per record and ``db.remove`` of the head per delivery (it fsyncs, but rewrites
the whole file each time). The segmented store is ``SegmentedOutboxStore``. Both run in the same
process on the same disk, one backlog after the other, with the same ~400-byte MeterValues
payload, so the ratio holds on a shared, noisy machine.

Filling 50,000 records one fsync at a time would take minutes, so both are pre-filled in bulk
(``insert_multiple`` for TinyDB; segment files written directly for the store, through its own
storage class) and only the measured calls go through the API.

    .venv/bin/python bench/outbox.py [--backlogs 1000 10000 50000] [--segment-records 100]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tinydb import TinyDB
from tinydb.table import Document

from adapters.storage.atomic import write_atomically
from adapters.storage.outbox_store import DEFAULT_SEGMENT_RECORDS, AtomicSegmentStorage, SegmentedOutboxStore
from gateway.domain.outbox import NewRecord, RecordKind

# A StartTransaction's MeterValues as the upstream adapter queues them: ~400 bytes of JSON.
PAYLOAD = {
    "connectorId": 1,
    "transactionId": 1234567,
    "meterValue": [
        {
            "timestamp": "2026-11-29T12:00:00.000Z",
            "sampledValue": [
                {
                    "value": "123456",
                    "context": "Sample.Periodic",
                    "measurand": "Energy.Active.Import.Register",
                    "unit": "Wh",
                },
                {"value": "7360", "measurand": "Power.Active.Import", "unit": "W"},
                {"value": "32.0", "measurand": "Current.Import", "unit": "A", "phase": "L1"},
                {"value": "230.1", "measurand": "Voltage", "unit": "V", "phase": "L1-N"},
            ],
        }
    ],
}


def new_record(n: int) -> NewRecord:
    return NewRecord(RecordKind.SAMPLED, "MeterValues", PAYLOAD, f"2026-11-29T12:00:{n % 60:02d}Z", "tx-1")


def fields(n: int) -> dict[str, object]:
    """A record as the store keeps it (for the bulk pre-fill and for the baseline)."""
    record = new_record(n)
    return {
        "kind": record.kind.value,
        "action": record.action,
        "payload": record.payload,
        "created_at": record.created_at,
        "local_ref": record.local_ref,
        "attempts": 0,
    }


@dataclass
class Timings:
    append_s: list[float]
    ack_s: list[float]
    open_s: float = 0.0


def timed(calls: int, call: Callable[[int], object]) -> list[float]:
    out = []
    for i in range(calls):
        started = time.perf_counter()
        call(i)
        out.append(time.perf_counter() - started)
    return out


def naive(directory: Path, backlog: int, calls: int) -> Timings:
    db = TinyDB(directory / "outbox.json")
    db.insert_multiple(fields(n) for n in range(backlog))
    head = [1]  # doc ids are 1.. in insertion order; the baseline is spared any search for the head

    def ack(_: int) -> None:
        db.remove(doc_ids=[head[0]])
        head[0] += 1

    appends = timed(calls, lambda i: db.insert(fields(i)))
    acks = timed(calls, ack)
    db.close()
    return Timings(appends, acks)


def prefill(directory: Path, backlog: int, segment_records: int) -> None:
    """Write the files a store of ``backlog`` records would hold, without an fsync per record."""
    for start in range(1, backlog + 1, segment_records):
        stop = min(start + segment_records, backlog + 1)
        records = {str(seq): fields(seq) for seq in range(start, stop)}
        db = TinyDB(directory / f"seg-{start:012d}.json", storage=AtomicSegmentStorage)  # one write per segment
        db.table("records").insert_multiple(Document(records[str(seq)], doc_id=seq) for seq in range(start, stop))
        db.close()
    write_atomically(directory / "head.json", f'{{"floor":1,"reserved":{backlog + 1}}}'.encode())


def segmented(directory: Path, backlog: int, calls: int, segment_records: int) -> Timings:
    prefill(directory, backlog, segment_records)
    started = time.perf_counter()
    store = SegmentedOutboxStore(directory, segment_records)
    open_s = time.perf_counter() - started
    assert len(store) == backlog and not store.problems()

    def ack(_: int) -> None:
        head = store.head()
        assert head is not None
        store.remove([head.seq])

    appends = timed(calls, lambda i: store.append(new_record(i)))
    acks = timed(calls, ack)
    return Timings(appends, acks, open_s)


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def ms(values: list[float], q: int) -> str:
    return f"{percentile(values, q) * 1000:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlogs", type=int, nargs="+", default=[1_000, 10_000, 50_000])
    parser.add_argument("--segment-records", type=int, default=DEFAULT_SEGMENT_RECORDS)
    parser.add_argument("--calls", type=int, default=200, help="measured appends and acks per backlog (store)")
    parser.add_argument("--naive-calls", type=int, nargs="+", default=[100, 40, 20], help="per backlog (baseline)")
    args = parser.parse_args()
    naive_calls = dict(zip(args.backlogs, args.naive_calls + [args.naive_calls[-1]] * len(args.backlogs), strict=False))
    size = len(json.dumps(PAYLOAD))
    print(
        f"per-record latency with fsync, ~{size}-byte MeterValues payload; segmented store with "
        f"{args.segment_records} records per segment; baseline calls {args.naive_calls}, store calls {args.calls}"
    )
    print()
    print(
        "| backlog | store | append p50 ms | append p99 ms | ack head p50 ms | ack head p99 ms | open s |\n"
        "|---:|---|---:|---:|---:|---:|---:|"
    )
    ratios = []
    for backlog in args.backlogs:
        with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as two:
            base = naive(Path(one), backlog, naive_calls[backlog])
            ours = segmented(Path(two), backlog, args.calls, args.segment_records)
        for label, t in (("naive TinyDB", base), ("segmented", ours)):
            open_s = f"{t.open_s:.2f}" if t.open_s else "-"
            print(
                f"| {backlog:,} | {label} | {ms(t.append_s, 50)} | {ms(t.append_s, 99)} | "
                f"{ms(t.ack_s, 50)} | {ms(t.ack_s, 99)} | {open_s} |"
            )
        ratios.append(
            f"{backlog:,}: append p50 {percentile(base.append_s, 50) / percentile(ours.append_s, 50):.0f}x, "
            f"ack p50 {percentile(base.ack_s, 50) / percentile(ours.ack_s, 50):.0f}x"
        )
    print()
    print("naive / segmented: " + "; ".join(ratios))


if __name__ == "__main__":
    main()
