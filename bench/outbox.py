"""Benchmark: queueing and acknowledging outbox records at a backlog, against the disk's floors.

Each method runs in the same process on the same disk, at the same backlog, with the same
~450-byte MeterValues record, so that the ratios hold on a shared, noisy machine:

* ``JSON line`` (the floor): one JSON line appended and fsynced per record; an acknowledgement is
  one more small line (``{"ack":<seq>}``) and an fsync. Nothing durable costs less.
* ``SQLite WAL``: one row per record (journal_mode=WAL, synchronous=FULL: an fsync per commit);
  an acknowledgement deletes the oldest row.
* ``outbox store``: ``SegmentedOutboxStore.append``, and ``head()`` + ``remove([head])``.
* ``outbox store + seqNo ledger, 2.0.1``: the same store with the OCPP 2.0.1 station's record, a
  periodic TransactionEvent Updated built by the real mapping code
  (adapters/ocpp201_upstream/transaction_events.py) from the 1.6 record's values; its
  acknowledgement also carries what 2.0.1 adds per send: the seqNo written to the ledger
  (``Ledger201.seq_no``, the settings file rewritten and fsynced) before the frame leaves. The
  ledger holds an open session per EVSE of a 20-EVSE site, the records go round them.
* ``naive TinyDB`` (``--naive``): one TinyDB file with its default storage, ``insert`` and
  ``remove`` of the head by document id (it rewrites the whole file each time).

Every method is pre-filled in bulk (50,000 records one fsync at a time would take a while), then
``--calls`` appends and as many acknowledgements are measured, in rounds that alternate between
the methods so that a busy moment of the machine is shared. Each is reported as a ratio of its
p50 to the JSON line's. Bytes per call are counted two ways: "written" is what the process handed
to write() (``wchar`` of /proc/self/io: what the method itself writes), "to disk" the sectors the
disk took meanwhile (/proc/diskstats, the disk that holds the temporary directory: with the file
system's own journal and metadata, and with whatever other processes wrote at the same time).

    .venv/bin/python bench/outbox.py [--backlogs 1000 10000 50000] [--calls 1000] [--naive]

``--prefill snapshot`` writes each pre-filled segment as one JSON object, the format of the
store before its files grew by lines (the previous store reads only that one).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tinydb import TinyDB

from adapters.ocpp201_upstream.ledger import Ledger201, record_key
from adapters.ocpp201_upstream.mapping import meter_values
from adapters.ocpp201_upstream.transaction_events import updated_payload
from adapters.storage.outbox_store import DEFAULT_SEGMENT_RECORDS, SegmentedOutboxStore
from adapters.storage.settings import JsonSettingsStore
from gateway.domain.model import ConnectorStatus, Reading
from gateway.domain.outbox import NewRecord, RecordKind
from gateway.domain.transactions import StartTransaction

# MeterValues of a transaction as the upstream adapter queues them: ~450 bytes as the store keeps them.
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
ROUNDS = 10


SITE_EVSES = 20  # the 2.0.1 ledger holds one open session per EVSE
MEASURED_AT = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
MEASURANDS = ["Energy.Active.Import.Register", "Power.Active.Import", "Current.Import", "Voltage"]


def new_record(n: int) -> NewRecord:
    return NewRecord(RecordKind.SAMPLED, "MeterValues", PAYLOAD, f"2026-11-29T12:00:{n % 60:02d}Z", "tx-1")


def local_ref(evse: int) -> str:
    return f"c{evse}-20261129T120000-a1b2c3-{evse}"


def new_record_201(n: int) -> NewRecord:
    """The 2.0.1 station's periodic TransactionEvent Updated with the 1.6 record's values, as its
    sampler queues it (each one of its own time: the ledger names a record by its payload)."""
    at = MEASURED_AT + timedelta(seconds=n)
    reading = Reading(at, energy_wh=123_456, power_w=7360.0, current_a=(32.0,), voltage_v=(230.1,))
    entries = meter_values(reading, MEASURANDS, context="Sample.Periodic")
    ref = local_ref(n % SITE_EVSES + 1)
    payload = updated_payload(ref, "MeterValuePeriodic", entries, ConnectorStatus.CHARGING, offline=True)
    return NewRecord(RecordKind.SAMPLED, "TransactionEvent", payload, entries[0]["timestamp"], ref)


def fields(n: int, make: Callable[[int], NewRecord] = new_record) -> dict[str, object]:
    """A record as the store keeps it (for the pre-fill, and what the other methods write)."""
    record = make(n)
    return {
        "kind": record.kind.value,
        "action": record.action,
        "payload": record.payload,
        "created_at": record.created_at,
        "local_ref": record.local_ref,
        "attempts": 0,
    }


def compact(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


RECORD_BYTES = len(compact(fields(0)))
RECORD_BYTES_201 = len(compact(fields(0, new_record_201)))


class Method:
    """One way to keep the queue: pre-filled, then ``append(n)`` and ``ack()`` timed."""

    name = ""

    def append(self, n: int) -> None: ...

    def ack(self) -> None: ...

    def close(self) -> None: ...


class JsonLines(Method):
    name = "JSON line + fsync (floor)"

    def __init__(self, directory: Path, backlog: int) -> None:
        self.descriptor = os.open(directory / "queue.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.write(self.descriptor, b"".join(compact(fields(n)) + b"\n" for n in range(backlog)))
        os.fsync(self.descriptor)
        self.acked = 0

    def append(self, n: int) -> None:
        os.write(self.descriptor, compact(fields(n)) + b"\n")
        os.fsync(self.descriptor)

    def ack(self) -> None:
        self.acked += 1
        os.write(self.descriptor, compact({"ack": self.acked}) + b"\n")
        os.fsync(self.descriptor)

    def close(self) -> None:
        os.close(self.descriptor)


class Sqlite(Method):
    name = "SQLite WAL, synchronous=FULL"

    def __init__(self, directory: Path, backlog: int) -> None:
        self.db = sqlite3.connect(directory / "queue.db", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE records (seq INTEGER PRIMARY KEY, fields TEXT NOT NULL)")
        with self.db:
            self.db.execute("BEGIN")
            rows = ((compact(fields(n)),) for n in range(backlog))
            self.db.executemany("INSERT INTO records (fields) VALUES (?)", rows)

    def append(self, n: int) -> None:
        self.db.execute("INSERT INTO records (fields) VALUES (?)", (compact(fields(n)),))

    def ack(self) -> None:
        self.db.execute("DELETE FROM records WHERE seq = (SELECT min(seq) FROM records)")

    def close(self) -> None:
        self.db.close()


class Store(Method):
    name = "outbox store"

    make: Callable[[int], NewRecord] = staticmethod(new_record)

    def __init__(self, directory: Path, backlog: int, segment_records: int, prefill: str) -> None:
        def line(seq: int) -> bytes:
            return compact(fields(seq, self.make))

        for start in range(1, backlog + 1, segment_records):
            seqs = range(start, min(start + segment_records, backlog + 1))
            if prefill == "snapshot":  # one object, no newline: the format before the files grew by lines
                content = b'{"records":{' + b",".join(b'"%d":%s' % (seq, line(seq)) for seq in seqs) + b"}}"
            else:  # a line per record, as appends write them
                content = b"".join(b'{"records":{"%d":%s}}\n' % (seq, line(seq)) for seq in seqs)
            (directory / f"seg-{start:012d}.json").write_bytes(content)
        (directory / "head.json").write_bytes(compact({"floor": 1, "reserved": backlog + 1}))
        os.sync()
        started = time.perf_counter()
        self.store = SegmentedOutboxStore(directory, segment_records)
        self.open_s = time.perf_counter() - started
        assert len(self.store) == backlog and not self.store.problems()

    def append(self, n: int) -> None:
        self.store.append(self.make(n))

    def ack(self) -> None:
        head = self.store.head()
        assert head is not None
        self.store.remove([head.seq])


class Store201(Store):
    """The 2.0.1 station's record; its send writes the seqNo to the ledger before the answer."""

    name = "outbox store + seqNo ledger, 2.0.1"
    make = staticmethod(new_record_201)

    def __init__(self, directory: Path, backlog: int, segment_records: int, prefill: str) -> None:
        self.ledger = Ledger201(JsonSettingsStore(directory.parent / f"{directory.name}-transactions.json"))
        for evse in range(1, SITE_EVSES + 1):
            start = StartTransaction(evse, local_ref(evse), f"CARD-{evse:04d}", 100_000, MEASURED_AT)
            self.ledger.started(start, "ISO14443", None)
        super().__init__(directory, backlog, segment_records, prefill)

    def ack(self) -> None:
        head = self.store.head()
        assert head is not None and head.local_ref is not None
        self.ledger.seq_no(head.local_ref, record_key(head.payload))  # at its send, on disk before it leaves
        self.store.remove([head.seq])


class NaiveTinyDB(Method):
    name = "naive TinyDB"

    def __init__(self, directory: Path, backlog: int) -> None:
        self.db = TinyDB(directory / "outbox.json")
        self.db.insert_multiple(fields(n) for n in range(backlog))
        self.head = 1  # doc ids are 1.. in insertion order; the baseline is spared any search for the head

    def append(self, n: int) -> None:
        self.db.insert(fields(n))

    def ack(self) -> None:
        self.db.remove(doc_ids=[self.head])
        self.head += 1

    def close(self) -> None:
        self.db.close()


def io_counters() -> dict[str, int]:
    with open("/proc/self/io") as file:
        return {key: int(value) for key, value in (line.split(": ") for line in file)}


def device_sectors(directory: Path) -> int | None:
    """Sectors written so far to the disk that holds ``directory`` (None if it is not listed)."""
    device = os.stat(directory).st_dev
    with open("/proc/diskstats") as file:
        for line in file:
            parts = line.split()
            if (int(parts[0]), int(parts[1])) == (os.major(device), os.minor(device)):
                return int(parts[9])
    return None


@dataclass
class Written:
    """Bytes a phase wrote: handed to write() by this process, and sectors the disk took."""

    wchar: int = 0
    device: int | None = 0
    calls: int = 0

    def add(self, wchar: int, device: int | None, calls: int) -> None:
        self.wchar += wchar
        self.device = None if device is None or self.device is None else self.device + device
        self.calls += calls

    def per_call(self) -> str:
        device = "-" if self.device is None else f"{self.device / self.calls:,.0f}"
        return f"{self.wchar / self.calls:,.0f} | {device}"


@dataclass
class Measured:
    append_s: list[float] = field(default_factory=list)
    ack_s: list[float] = field(default_factory=list)
    appended: Written = field(default_factory=Written)
    acked: Written = field(default_factory=Written)


def timed(calls: int, call: Callable[[], object], into: list[float]) -> None:
    for _ in range(calls):
        started = time.perf_counter()
        call()
        into.append(time.perf_counter() - started)


def measure(methods: list[Method], directory: Path, calls: int) -> list[Measured]:
    """``calls`` appends, then ``calls`` acks, per method, in rounds that alternate between them."""
    results = [Measured() for _ in methods]
    per_round = max(1, calls // ROUNDS)
    for phase in ("append", "ack"):
        done = 0
        while done < calls:
            count = min(per_round, calls - done)
            for method, result in zip(methods, results, strict=True):
                numbers = iter(range(done, done + count))
                before, sectors = io_counters()["wchar"], device_sectors(directory)
                if phase == "append":
                    timed(count, lambda method=method, numbers=numbers: method.append(next(numbers)), result.append_s)
                else:
                    timed(count, method.ack, result.ack_s)
                after, sectors_after = io_counters()["wchar"], device_sectors(directory)
                device = None if sectors is None or sectors_after is None else (sectors_after - sectors) * 512
                (result.appended if phase == "append" else result.acked).add(after - before, device, count)
            done += count
    return results


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def ms(values: list[float], q: int) -> str:
    return f"{percentile(values, q) * 1000:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlogs", type=int, nargs="+", default=[1_000, 10_000, 50_000])
    parser.add_argument("--segment-records", type=int, default=DEFAULT_SEGMENT_RECORDS)
    parser.add_argument("--calls", type=int, default=1000, help="measured appends, and acks, per method and backlog")
    parser.add_argument("--naive", action="store_true", help="also one TinyDB file (slow: seconds per call at 50,000)")
    parser.add_argument("--naive-calls", type=int, default=20)
    parser.add_argument("--prefill", choices=["lines", "snapshot"], default="lines")
    args = parser.parse_args()
    print(
        f"per-record latency with fsync, {RECORD_BYTES}-byte record (2.0.1: {RECORD_BYTES_201}); store with "
        f"{args.segment_records} records "
        f"per segment, pre-filled as {args.prefill}; {args.calls} appends and {args.calls} acks per method "
        f"(naive TinyDB: {args.naive_calls}); x = p50 / the JSON line's p50 at the same backlog"
    )
    print()
    print(
        "| backlog | method | append p50 ms | append p99 ms | x | ack p50 ms | ack p99 ms | x "
        "| append B written | append B to disk | ack B written | ack B to disk | open s |\n"
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    versions: list[str] = []
    for backlog in args.backlogs:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as root:
            directories = [Path(root) / name for name in ("lines", "sqlite", "store", "store201", "naive")]
            for directory in directories:
                directory.mkdir()
            methods: list[Method] = [
                JsonLines(directories[0], backlog),
                Sqlite(directories[1], backlog),
                Store(directories[2], backlog, args.segment_records, args.prefill),
                Store201(directories[3], backlog, args.segment_records, args.prefill),
            ]
            os.sync()
            results = measure(methods, Path(root), args.calls)
            if args.naive:
                naive = NaiveTinyDB(directories[4], backlog)
                os.sync()
                results += measure([naive], Path(root), args.naive_calls)
                methods.append(naive)
            for method in methods:
                method.close()
        floor = results[0]
        for method, result in zip(methods, results, strict=True):
            x_append = percentile(result.append_s, 50) / percentile(floor.append_s, 50)
            x_ack = percentile(result.ack_s, 50) / percentile(floor.ack_s, 50)
            open_s = f"{method.open_s:.2f}" if isinstance(method, Store) else "-"
            print(
                f"| {backlog:,} | {method.name} | {ms(result.append_s, 50)} | {ms(result.append_s, 99)} | "
                f"{x_append:.2f} | {ms(result.ack_s, 50)} | {ms(result.ack_s, 99)} | {x_ack:.2f} | "
                f"{result.appended.per_call()} | {result.acked.per_call()} | {open_s} |"
            )
        versions.append(version_row(backlog, results[2], results[3]))
    print()
    print(
        f"2.0.1 against 1.6 per record, outbox store ({RECORD_BYTES_201}-byte TransactionEvent vs "
        f"{RECORD_BYTES}-byte MeterValues record; the 2.0.1 send+ack writes the seqNo ledger too)"
    )
    print()
    print(
        "| backlog | append p50 ms 1.6 / 2.0.1 | x | send+ack p50 ms 1.6 / 2.0.1 | x "
        "| per record p50 ms 1.6 / 2.0.1 | x | B written per record 1.6 / 2.0.1 |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    print("\n".join(versions))


def version_row(backlog: int, v16: Measured, v201: Measured) -> str:
    """One line of the 2.0.1 / 1.6 table: append, send+ack and both together (p50s added)."""
    cells = [f"{backlog:,}"]
    for one, other in (
        ([v16.append_s], [v201.append_s]),
        ([v16.ack_s], [v201.ack_s]),
        ([v16.append_s, v16.ack_s], [v201.append_s, v201.ack_s]),
    ):
        a = sum(percentile(values, 50) for values in one)
        b = sum(percentile(values, 50) for values in other)
        cells += [f"{a * 1000:.2f} / {b * 1000:.2f}", f"{b / a:.2f}"]
    written = [(m.appended.wchar + m.acked.wchar) / m.appended.calls for m in (v16, v201)]
    cells.append(f"{written[0]:,.0f} / {written[1]:,.0f}")
    return "| " + " | ".join(cells) + " |"


if __name__ == "__main__":
    main()
