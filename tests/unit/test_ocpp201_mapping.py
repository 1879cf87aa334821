"""The pure 2.0.1 tables and payloads: statuses, stop reasons, transaction ids, meter values, seqNo."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.ocpp201_upstream.ledger import Ledger201, record_key
from adapters.ocpp201_upstream.mapping import (
    MAX_TRANSACTION_ID,
    STOPPED,
    connector_status,
    meter_values,
    transaction_id,
)
from adapters.ocpp201_upstream.transaction_events import (
    call_problem,
    ended_payload,
    started_payload,
    state_changed_payload,
    updated_payload,
)
from adapters.storage.settings import JsonSettingsStore
from gateway.domain.battery import SocSource, SocValue
from gateway.domain.model import ConnectorStatus, Reading
from gateway.domain.outbox import OutboxRecord, RecordKind
from gateway.domain.transactions import StartTransaction, StopReason, StopTransaction, new_local_ref

AT = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
REF = "c1-20261129T120000-abcdef-1"


def test_every_status_and_stop_reason_has_a_2_0_1_word() -> None:
    assert {connector_status(s) for s in ConnectorStatus} == {"Available", "Occupied", "Unavailable", "Faulted"}
    assert set(STOPPED) == set(StopReason)
    assert STOPPED[StopReason.EV_DISCONNECTED] == ("EVDisconnected", "EVCommunicationLost")
    assert STOPPED[StopReason.DEAUTHORIZED][0] == "DeAuthorized"


def test_transaction_ids_fit_36_characters_and_stay_the_same() -> None:
    today = new_local_ref(12, AT)
    assert transaction_id(today) == today and len(today) <= MAX_TRANSACTION_ID
    long_ref = "c123-20261129T120000-abcdef-" + "9" * 30
    shortened = transaction_id(long_ref)
    assert len(shortened) == MAX_TRANSACTION_ID
    assert shortened == transaction_id(long_ref)  # deterministic
    assert shortened != transaction_id(long_ref[:-1] + "8")
    assert shortened.startswith(long_ref[:27])


def test_meter_values_keep_units_phases_and_the_soc_time() -> None:
    reading = Reading(AT, energy_wh=123456, power_w=7200.5, current_a=(10.0, None, 11.0))
    later = datetime(2026, 11, 29, 12, 0, 30, tzinfo=UTC)
    soc = SocValue(55.5, SocSource.CHARGER, later)
    wanted = ["Energy.Active.Import.Register", "Power.Active.Import", "Current.Import", "SoC"]
    entries = meter_values(reading, wanted, context="Sample.Periodic", soc=soc)
    assert [e["timestamp"] for e in entries] == ["2026-11-29T12:00:00.000Z", "2026-11-29T12:00:30.000Z"]
    samples = entries[0]["sampled_value"]
    assert samples[0] == {
        "value": 123456,
        "context": "Sample.Periodic",
        "measurand": "Energy.Active.Import.Register",
        "location": "Outlet",
        "unit_of_measure": {"unit": "Wh"},
    }
    phases = [(s["measurand"], s.get("phase")) for s in samples[2:]]
    assert phases == [("Current.Import", "L1"), ("Current.Import", "L3")]
    assert entries[1]["sampled_value"][0]["location"] == "EV"
    aligned = meter_values(reading, wanted, context="Sample.Clock", stamp="2026-11-29T12:15:00.000Z", soc=soc)
    assert len(aligned) == 1 and len(aligned[0]["sampled_value"]) == 5  # one boundary: the SoC joins it
    assert meter_values(None, wanted, context="Trigger") == []


@pytest.mark.parametrize("reason", list(StopReason))
def test_every_event_passes_the_2_0_1_schema(reason: StopReason) -> None:
    start = StartTransaction(1, REF, "CARD-1", 1000, AT)
    stop = StopTransaction(1, REF, "CARD-1", 2000, AT, reason)
    entries = meter_values(Reading(AT, energy_wh=1500, power_w=11000.0), ["Power.Active.Import"], context="Trigger")
    payloads = [
        started_payload(start, "Authorized", "ISO14443", 7, offline=False),
        updated_payload(REF, "Trigger", entries, ConnectorStatus.SUSPENDED_EV, offline=True),
        state_changed_payload(REF, "SuspendedEVSE", AT, offline=False),
        ended_payload(stop, "ISO14443", offline=False),
    ]
    for seq_no, payload in enumerate(payloads):
        record = OutboxRecord(seq_no + 1, RecordKind.START, "TransactionEvent", payload, "x", REF)
        request, problem = asyncio.run(call_problem(record, seq_no))
        assert problem is None and request.seq_no == seq_no


def test_a_damaged_record_is_named_not_sent() -> None:
    broken = started_payload(StartTransaction(1, REF, "T", 1, AT), "Authorized", "ISO14443", None, offline=False)
    broken["trigger_reason"] = "BecauseWeCan"
    record = OutboxRecord(1, RecordKind.START, "TransactionEvent", broken, "x", REF)
    request, problem = asyncio.run(call_problem(record, 0))
    assert request is None and problem is not None and "FormatViolation" in problem
    unknown = OutboxRecord(2, RecordKind.SAMPLED, "StartTransaction", {}, "x", REF)
    assert asyncio.run(call_problem(unknown, 0))[1] == "unknown action or field 'StartTransaction'"


def test_seq_no_is_per_transaction_gapless_and_kept_per_record(tmp_path: Path) -> None:
    store = JsonSettingsStore(tmp_path / "settings.json")
    ledger = Ledger201(store)
    ledger.started(StartTransaction(1, REF, "T", 1, AT), "Central", None)
    other = "c2-20261129T120000-abcdef-2"
    ledger.started(StartTransaction(2, other, "T", 1, AT), "Central", None)
    assert [ledger.seq_no(REF, "r10"), ledger.seq_no(other, "r11"), ledger.seq_no(REF, "r12")] == [0, 0, 1]
    assert ledger.seq_no(REF, "r12") == 1  # the same record again: the same number
    # records 13 and 14 were thinned: they never take a number, so the next one follows on
    assert ledger.seq_no(REF, "r15") == 2
    again = Ledger201(JsonSettingsStore(tmp_path / "settings.json"))
    assert again.seq_no(REF, "r15") == 2 and again.seq_no(REF, "r16") == 3
    assert again.local_ref(transaction_id(other)) == other
    again.finished(REF)
    assert REF not in Ledger201(JsonSettingsStore(tmp_path / "settings.json")).sessions


def test_a_record_is_named_by_its_payload() -> None:
    first = updated_payload(REF, "MeterValuePeriodic", [{"timestamp": "t1"}], ConnectorStatus.CHARGING, offline=False)
    second = updated_payload(REF, "MeterValuePeriodic", [{"timestamp": "t2"}], ConnectorStatus.CHARGING, offline=False)
    assert record_key(first) == record_key(dict(reversed(list(first.items()))))  # key order does not count
    assert record_key(first) != record_key(second)


def test_a_damaged_ledger_entry_is_skipped(tmp_path: Path) -> None:
    store = JsonSettingsStore(tmp_path / "settings.json")
    ledger = Ledger201(store)
    ledger.started(StartTransaction(1, REF, "T", 1, AT), "Central", None)
    sessions = store.load("ocpp201_transactions")
    sessions["broken"] = {"local_ref": "broken", "what": "not a session"}
    store.save("ocpp201_transactions", sessions)
    assert list(Ledger201(store).sessions) == [REF]
