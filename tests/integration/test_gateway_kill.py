"""kill -9 of the whole gateway at random moments, over and over, while cars come and go and the
CSMS goes away and comes back: every session is billed once, completely and consistently (issue 14).

The site: two Modbus chargers (simulators in this process, so they outlive every gateway), one
native OCPP charger with two connectors (tests/fixtures/native_charger.py, in this process: it
reconnects after each restart and resends every transaction message it got no answer to), and
a CSMS (tests/fixtures/billing_csms.py, in this process) that is stopped and started to make
outages and deduplicates byte-identical resends as a good CSMS does. Cars plug in and leave at
random on every connector. The gateway is a real ``ocpp-gateway run`` process forked from a
pre-imported zygote (tests/fixtures/gateway_zygote.py: ~1 s of imports paid once, so an
incarnation costs a fork and Gateway.build) and is SIGKILLed KILLS times at random moments:
while the CSMS is there, during outages and during the replay after each. After the last kill a
fresh gateway runs until the cars are gone, the native charger's queue and the gateway's outbox
are empty, then stops cleanly (SIGTERM). What the CSMS received is then checked:

- every transaction is started once (identical resends excepted) and stopped exactly once; two
  transactions never overlap on one connector; each native charger transaction is one CSMS
  transaction; a stop carries its own session's Transaction.Begin;
- meterStop >= every Energy.Active.Import.Register sent in that transaction's MeterValues;
- no MeterValues of a transaction is stamped after its stop;
- no StopTransaction or MeterValues with transactionId -1 (or an id never handed out) unless the
  CSMS never received that transaction's StartTransaction.

A Modbus car that stays plugged in across a restart is, by design (README "Restarts"), one
session stopped PowerLoss and a new one started at the first poll: sessions of the gateway, not
plug-ins, are what is billed once. The figures are printed (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import random
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.billing_csms import BillingCsms, Ledger, energy_values, parse_time, start_key
from tests.fixtures.kill_harness import (
    MAX_POWER_KW,
    chargers_toml,
    drive_car,
    kill_run,
    report,
    start_chargers,
    utc_now,
)
from tests.fixtures.native_charger import NativeCharger
from tests.fixtures.net import free_port

SEED = 20261414
# (phase, kills): the CSMS is up ("online", "replay") or away ("outage"); it changes at a random
# moment of the first incarnation of a phase. Three outages, each followed by its replay, whose
# first lives are short, so that kills land while the backlog is being delivered.
PHASES = [("online", 8), *[("outage", 16), ("replay", 16)] * 3]
SHORT_REPLAY_LIVES = 10
CSMS_THINK_S = 0.01  # the CSMS answers a transaction message within 0-10 ms
MODBUS = {1: ("left", "phoenix-ev-eth"), 2: ("right", "webasto-next")}  # site connector -> (name, profile)
NATIVE_CONNECTORS = [3, 4]  # the native charger's connectors 1, 2
NATIVE_PASSWORD = "kill-test-native-pw"
POLL_S = 0.25
DRAIN_TIMEOUT_S = 60.0
PLUG_SLACK = timedelta(seconds=1.0)
EXAMPLES = 3


def write_config(path: Path, state: Path, csms: BillingCsms, ports: dict[str, int]) -> None:
    chargers = chargers_toml(MODBUS, ports, POLL_S)
    connectors = "".join(
        f"""
[[connectors]]
id = {connector}
max_power_kw = {MAX_POWER_KW}
"""
        for connector in NATIVE_CONNECTORS
    )
    path.write_text(
        f"""
[site]
id = "kill"
state_dir = "{state}"

[status_page]
port = {ports["status"]}

[upstream]
url = "{csms.url}"
charge_point_id = "GW-KILL"
meter_value_sample_interval_s = 1
reconnect_max_s = 0.5
response_timeout_s = 5

[mqtt]
host = "127.0.0.1"
port = {ports["mqtt"]}

[ocpp_server]
port = {ports["ocpp"]}
{chargers}
[[ocpp_chargers]]
identity = "NATIVE-1"
password = "{NATIVE_PASSWORD}"
connectors = {NATIVE_CONNECTORS}
{connectors}""",
        encoding="utf-8",
    )


# -- the books ---------------------------------------------------------------------------------------


def _begin_of(stop: dict[str, Any]) -> tuple[float, datetime] | None:
    for value in stop.get("transactionData") or []:
        for sample in value.get("sampledValue", []):
            if sample.get("context") == "Transaction.Begin":
                return float(sample["value"]), parse_time(value["timestamp"])
    return None


def _describe(ledger: Ledger, transaction_id: int) -> str:
    start = ledger.start_of[transaction_id]
    stop = ledger.stop_of.get(transaction_id)
    text = f"tx {transaction_id} conn {start['connectorId']} start {start['timestamp']}"
    text += f" meterStart {start['meterStart']}"
    if ledger.start_receipts[transaction_id] > 1:
        text += f" (start received {ledger.start_receipts[transaction_id]} times)"
    if stop is not None:
        text += f", stop {stop['timestamp']} meterStop {stop['meterStop']} ({stop.get('reason')})"
    return text


def audit(
    ledger: Ledger,
    native: NativeCharger,
    plugs: dict[int, list[list[datetime | None]]],
    killed_at: list[float],
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The figures, and each invariant that failed with its examples."""
    figures: dict[str, Any] = {}
    failed: dict[str, list[str]] = defaultdict(list)
    starts = ledger.start_of
    figures["transactions at the CSMS"] = len(starts)
    figures["  of Modbus connectors"] = sum(1 for s in starts.values() if s["connectorId"] in MODBUS)
    figures["  of native connectors"] = sum(1 for s in starts.values() if s["connectorId"] in NATIVE_CONNECTORS)
    figures["StartTransaction received"] = ledger.count("StartTransaction")
    figures["  retransmitted starts (deduplicated)"] = ledger.retransmitted_starts
    figures["StopTransaction received"] = ledger.count("StopTransaction")
    figures["  retransmitted stops (identical)"] = ledger.retransmitted_stops
    figures["MeterValues of transactions received"] = sum(len(v) for v in ledger.meter_values.values())
    reasons = Counter(str(stop.get("reason")) for stop in ledger.stop_of.values())
    figures["stop reasons"] = ", ".join(f"{r} {n}" for r, n in reasons.most_common())

    # 1. stopped exactly once, by its own stop
    never = [tid for tid in starts if tid not in ledger.stop_of]
    figures["transactions never stopped"] = len(never)
    failed["every transaction is stopped: never stopped"] += [_describe(ledger, tid) for tid in never]
    figures["second, different stops"] = len(ledger.second_stops)
    for tid, again in ledger.second_stops:
        failed["stopped exactly once: a second, different StopTransaction"].append(
            f"{_describe(ledger, tid)}; then stop {again['timestamp']} meterStop {again['meterStop']} "
            f"({again.get('reason')})"
        )
    foreign = []
    for tid, stop in ledger.stop_of.items():
        begin = _begin_of(stop)
        start = starts[tid]
        if begin is not None and begin != (float(start["meterStart"]), parse_time(start["timestamp"])):
            foreign.append(f"{_describe(ledger, tid)}; its stop's Transaction.Begin is {begin[0]:.0f} Wh at {begin[1]}")
    figures["stops carrying another session's Transaction.Begin"] = len(foreign)
    failed["a stop belongs to its own session (Transaction.Begin = its start)"] += foreign

    # 2. started exactly once: no two transactions at once on one connector; native ones 1:1
    by_connector: dict[int, list[int]] = defaultdict(list)
    for tid, start in starts.items():
        by_connector[start["connectorId"]].append(tid)
    overlaps = []
    for tids in by_connector.values():
        tids.sort(key=lambda t: parse_time(starts[t]["timestamp"]))
        for first, second in itertools.pairwise(tids):
            stop = ledger.stop_of.get(first)
            if stop is not None and parse_time(stop["timestamp"]) > parse_time(starts[second]["timestamp"]):
                overlaps.append(f"{_describe(ledger, first)} | {_describe(ledger, second)}")
    figures["transactions overlapping another on its connector"] = len(overlaps)
    failed["started exactly once: two different transactions at once on one connector"] += overlaps

    site_of = dict(zip(range(1, len(NATIVE_CONNECTORS) + 1), NATIVE_CONNECTORS, strict=True))
    made = set()
    missing, not_own = [], []
    for tx in native.transactions:
        key = start_key(
            {
                "connectorId": site_of[tx.connector],
                "idTag": tx.id_tag,
                "meterStart": tx.meter_start,
                "timestamp": tx.started_at,
            }
        )
        made.add(key)
        tid = ledger.starts.get(key)
        if tid is None:
            missing.append(
                f"charger connector {tx.connector} (site {site_of[tx.connector]}) start {tx.started_at} "
                f"meterStart {tx.meter_start}, stop {tx.stopped_at} meterStop {tx.meter_stop} (charger's id "
                f"{tx.transaction_id})"
            )
            continue
        stop = ledger.stop_of.get(tid)
        if stop is not None and (stop["meterStop"], stop.get("reason")) != (tx.meter_stop, tx.reason):
            not_own.append(
                f"{_describe(ledger, tid)}; the charger stopped it at {tx.stopped_at} meterStop {tx.meter_stop} "
                f"({tx.reason})"
            )
    figures["native charger transactions"] = len(native.transactions)
    figures["  never started at the CSMS"] = len(missing)
    failed["started exactly once: a native charger transaction never reached the CSMS"] += missing
    phantoms = [
        _describe(ledger, tid) for key, tid in ledger.starts.items() if key[0] in NATIVE_CONNECTORS and key not in made
    ]
    figures["  CSMS starts on native connectors the charger never made"] = len(phantoms)
    failed["started exactly once: a native StartTransaction the charger never sent"] += phantoms
    # a native charger's session outlives a gateway restart: the charger's own stop ends it, as sent
    figures["  stopped with other than the charger's meterStop/reason"] = len(not_own)
    failed["a native charger's transaction is stopped by the charger's own StopTransaction"] += not_own
    figures["native charger resends (start/MeterValues/stop)"] = "/".join(
        str(native.resent[a]) for a in ("StartTransaction", "MeterValues", "StopTransaction")
    )

    outside = 0
    for start in starts.values():
        connector = start["connectorId"]
        if connector not in MODBUS:
            continue
        began = parse_time(start["timestamp"])
        if not any(
            plugged - PLUG_SLACK <= began <= (left or utc_now()) + PLUG_SLACK for plugged, left in plugs[connector]
        ):
            outside += 1
    figures["Modbus transactions started while no car was plugged in (info)"] = outside

    # 3. meterStop >= every energy value of the transaction's MeterValues; 4. none stamped after the stop
    below, late = [], []
    missing_wh = 0.0
    for tid, payloads in ledger.meter_values.items():
        stop = ledger.stop_of.get(tid)
        values = [v for payload in payloads for v in energy_values(payload["meterValue"])]
        if stop is None or not values:
            continue
        highest_at, highest = max(values, key=lambda v: v[1])
        if stop["meterStop"] < highest:
            missing_wh += highest - stop["meterStop"]
            below.append(
                f"{_describe(ledger, tid)}; MeterValues sent {highest:.0f} Wh at {highest_at.isoformat()} "
                f"({highest - stop['meterStop']:.0f} Wh missing)"
            )
        stopped_at = parse_time(stop["timestamp"])
        after = [(at, wh) for at, wh in values if at > stopped_at]
        if after:
            at, wh = max(after)
            late.append(f"{_describe(ledger, tid)}; {len(after)} value(s) after it, the last {wh:.0f} Wh at {at}")
    figures["stops below a sent energy value"] = len(below)
    figures["  Wh missing in total"] = round(missing_wh)
    failed["meterStop >= every energy value sent in its MeterValues"] += below
    figures["transactions with MeterValues stamped after their stop"] = len(late)
    failed["no MeterValues stamped after its transaction's stop"] += late

    # 5. -1 only for a transaction whose start the CSMS never got; never an id it never gave
    by_begin = {(float(s["meterStart"]), parse_time(s["timestamp"])): tid for tid, s in starts.items()}
    bad_stops, excused = [], 0
    for stop in ledger.minus_one_stops:
        begin = _begin_of(stop)
        tid = by_begin.get(begin) if begin is not None else None
        if tid is None:
            excused += 1
        else:
            answered = ledger.answered_at[tid]
            later = bisect.bisect_left(killed_at, answered)
            kill = (
                f", the gateway was SIGKILLed {(killed_at[later] - answered) * 1000:.0f} ms later"
                if later < len(killed_at)
                else ""
            )
            bad_stops.append(
                f"StopTransaction -1 stop {stop['timestamp']} meterStop {stop['meterStop']} ({stop.get('reason')}) "
                f"of {_describe(ledger, tid)} (the CSMS answered its StartTransaction with {tid}{kill})"
            )
    bad_values = []
    for payload in ledger.minus_one_meter_values:
        stamps = [at for at, _ in energy_values(payload["meterValue"])] or [
            parse_time(v["timestamp"]) for v in payload["meterValue"]
        ]
        for tid in reversed(by_connector.get(payload["connectorId"], [])):  # the latest start before it
            stop = ledger.stop_of.get(tid)
            began = parse_time(starts[tid]["timestamp"])
            ended = parse_time(stop["timestamp"]) if stop is not None else datetime.max.replace(tzinfo=UTC)
            if any(began <= at <= ended for at in stamps):
                where = f"connector {payload['connectorId']} at {stamps[0]}"
                bad_values.append(f"MeterValues -1 {where} during {_describe(ledger, tid)}")
                break
        else:
            excused += 1
    minus_one = f"{len(ledger.minus_one_stops)} / {len(ledger.minus_one_meter_values)}"
    figures["transactionId -1: stops / MeterValues"] = minus_one
    figures["  of which the CSMS never got the start (allowed)"] = excused
    failed["no transactionId -1 for a transaction the CSMS numbered"] += bad_stops + bad_values
    unknown = [f"StopTransaction {p}" for p in ledger.unknown_stops] + [
        f"MeterValues {p}" for p in ledger.unknown_meter_values
    ]
    figures["messages with a transactionId the CSMS never gave"] = len(unknown)
    failed["no transactionId the CSMS never gave"] += unknown
    return figures, {name: examples for name, examples in failed.items() if examples}


@pytest.mark.timeout(300)
async def test_gateway_survives_random_kill_9(tmp_path: Path) -> None:
    began = time.monotonic()
    rng = random.Random(SEED)
    ports = {name: free_port() for name in ("csms", "status", "ocpp", "mqtt")}
    csms = BillingCsms(ports["csms"], CSMS_THINK_S, SEED)
    sims = await start_chargers(MODBUS, ports)
    config, log_path = tmp_path / "gateway.toml", tmp_path / "gateway.log"
    write_config(config, tmp_path / "state", csms, ports)
    native = NativeCharger(f"ws://127.0.0.1:{ports['ocpp']}", "NATIVE-1", NATIVE_PASSWORD, 2, random.Random(SEED + 1))
    plugs: dict[int, list[list[datetime | None]]] = {c: [] for c in MODBUS}
    figures: dict[str, Any] = {}
    async with kill_run(config, log_path, ports, csms, sims) as run:
        run.background.append(asyncio.create_task(native.run()))
        for connector, sim in sims.items():
            run.drive(drive_car(sim, plugs[connector], rng, run.stop_cars))
        for number in (1, 2):
            run.drive(native.drive(number, run.stop_cars))
        await run.kill_repeatedly(PHASES, rng, SHORT_REPLAY_LIVES)
        figures["gateway up after fork (status page answers)"] = f"{run.kills.first_up_s:.2f} s"
        kill_time = time.monotonic() - began
        outages = csms.outages
        drained, picture, drain_s = await run.last_gateway(
            DRAIN_TIMEOUT_S,
            also=lambda: not native.queue and not native.active,
            before_quiet=lambda: native.drained(DRAIN_TIMEOUT_S / 2),
        )
        figures["drain after the last kill"] = f"{drain_s:.1f} s"
    kills = run.kills

    figures.update(kills.summary())
    figures["CSMS outages"] = outages
    figures["BootNotifications at the CSMS"] = csms.ledger.boots
    figures["Modbus plug-ins"] = sum(len(p) for p in plugs.values())
    books, failed = audit(csms.ledger, native, plugs, kills.killed_at)
    figures.update(books)
    figures["native charger: errors from the gateway"] = len(native.errors)
    figures["time: kills / whole test"] = f"{kill_time:.0f} s / {time.monotonic() - began:.0f} s"
    failures = report(f"gateway kill -9 test (seed {SEED})", figures, failed, log_path)

    # The harness did what it claims (no vacuous pass).
    assert sum(kills.by_phase.values()) >= 100 and csms.outages >= 2
    assert len(csms.ledger.start_of) >= 50 and len(native.transactions) >= 10
    assert sum(len(v) for v in csms.ledger.meter_values.values()) >= 20
    assert drained, f"the gateway did not deliver everything within {DRAIN_TIMEOUT_S} s: {picture}"
    assert not native.errors, f"the gateway answered the native charger with errors: {native.errors[:EXAMPLES]}"
    assert not failed, failures
