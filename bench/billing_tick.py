"""Benchmark: what billing integrity costs per sampling tick (issue 14).

Each MeterValueSampleInterval the virtual charge point queues one MeterValues per session in
the durable outbox. Since issue 14 it first writes the sessions' register and time to the
session ledger (``transactions.json``, one atomic fsynced write for all of them), so a stop
after a crash is never below nor before what was sent. This measures a whole tick at 1, 10 and
50 sessions, the new path (ledger write, then the records) against the baseline (the records
alone, as before), alternating in the same process on the same disk so the ratio holds on a
noisy machine. Also the register guard (``BillingRegisters.guard``) per reading, against doing
nothing with it, for the polling side.

    .venv/bin/python bench/billing_tick.py [--ticks 60]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ocpp.v16 import datatypes

from adapters.ocpp_upstream.transactions import TransactionLog, newest_reading
from adapters.storage.outbox_store import SegmentedOutboxStore
from adapters.storage.settings import JsonSettingsStore
from gateway.domain.model import Reading, iso_utc
from gateway.domain.outbox import NewRecord, RecordKind
from gateway.domain.ports import NoSettingsStore
from gateway.domain.transactions import StartTransaction
from gateway.services.billing_registers import BillingRegisters

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def meter_values(at: datetime, energy_wh: int) -> list[datatypes.MeterValue]:
    sampled = [
        datatypes.SampledValue(value=str(energy_wh), measurand="Energy.Active.Import.Register", unit="Wh"),
        datatypes.SampledValue(value="7360", measurand="Power.Active.Import", unit="W"),
        datatypes.SampledValue(value="32.0", measurand="Current.Import", unit="A", phase="L1"),
        datatypes.SampledValue(value="230.1", measurand="Voltage", unit="V", phase="L1-N"),
    ]
    return [datatypes.MeterValue(timestamp=iso_utc(at), sampled_value=sampled)]


def tick_ms(sessions: int, ticks: int, with_ledger: bool, directory: Path) -> list[float]:
    store = SegmentedOutboxStore(directory / "outbox")
    log = TransactionLog(JsonSettingsStore(directory / "transactions.json"))
    refs = [f"c{n}-ref" for n in range(1, sessions + 1)]
    for n, ref in enumerate(refs, start=1):
        log.started(StartTransaction(n, ref, "TAG", 1_000_000 * n, T0))
        log.running[n] = ref
    times = []
    for tick in range(1, ticks + 1):
        at = T0 + timedelta(seconds=10 * tick)
        samples = {ref: meter_values(at, 1_000_000 * n + 20 * tick) for n, ref in enumerate(refs, start=1)}
        began = time.perf_counter()
        if with_ledger:
            log.before_sending({ref: newest_reading(values) for ref, values in samples.items()})  # type: ignore[misc]
        for n, ref in enumerate(refs, start=1):
            payload = {"connector_id": n, "meter_value": [asdict(v) for v in samples[ref]]}
            store.append(NewRecord(RecordKind.SAMPLED, "MeterValues", payload, iso_utc(at), ref))
        times.append((time.perf_counter() - began) * 1000)
    return times


def guard_us(readings: int, guarded: bool) -> float:
    registers = BillingRegisters({"connector 1": 44_000.0}, NoSettingsStore())
    began = time.perf_counter()
    for n in range(readings):
        reading = Reading(T0 + timedelta(seconds=n), energy_wh=1_000_000 + 3 * n, power_w=11_000.0)
        if guarded:
            registers.guard("connector 1", reading)
    return (time.perf_counter() - began) / readings * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=60)
    args = parser.parse_args()
    print("| sessions | path | tick p50 ms | tick p99 ms | per session p50 ms |")
    print("|---:|---|---:|---:|---:|")
    ratios = []
    for sessions in (1, 10, 50):
        results: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(3):  # alternate, so both see the same disk and neighbours
            for with_ledger in (False, True):
                with tempfile.TemporaryDirectory(dir=".") as directory:
                    results[with_ledger] += tick_ms(sessions, args.ticks, with_ledger, Path(directory))
        for with_ledger in (False, True):
            times = sorted(results[with_ledger])
            p50, p99 = statistics.median(times), times[int(len(times) * 0.99) - 1]
            name = "ledger, then records" if with_ledger else "records only (before)"
            print(f"| {sessions} | {name} | {p50:.2f} | {p99:.2f} | {p50 / sessions:.2f} |")
        ratios.append(statistics.median(results[True]) / statistics.median(results[False]))
    print()
    print("with / without the ledger write, tick p50: " + " / ".join(f"{r:.2f}x" for r in ratios) + " at 1 / 10 / 50")
    plain, guarded = guard_us(200_000, False), guard_us(200_000, True)
    print(f"register guard: {guarded - plain:.2f} us per reading ({guarded:.2f} us with it, {plain:.2f} us without)")


if __name__ == "__main__":
    main()
