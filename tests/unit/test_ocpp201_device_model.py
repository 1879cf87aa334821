"""The 2.0.1 device model without a link: value checks, what is saved and taken back, report parts."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
from ocpp.charge_point import remove_nones, snake_to_camel_case
from ocpp.messages import Call, CallResult, validate_payload
from ocpp.v201 import call_result

from adapters.ocpp201_upstream import reports
from adapters.ocpp201_upstream.device_model import SECTION, DeviceModel201
from adapters.ocpp201_upstream.variables import boolean, integer_at_least, measurand_list
from adapters.storage.settings import JsonSettingsStore
from gateway.config import UpstreamConfig
from gateway.domain.charging_profiles import Supply
from gateway.domain.charging_store import StoreLimits
from gateway.domain.model import Connector, Meter
from gateway.services.site import Site

SETTINGS = UpstreamConfig(url="ws://127.0.0.1:9/ocpp", charge_point_id="GW-201", meter_value_sample_interval_s=60)
AT = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def make_model(tmp_path: Path, connectors: int = 2) -> DeviceModel201:
    site = Site([Connector(n, f"c{n}") for n in range(1, connectors + 1)], [Meter("grid", connector_id=0)])
    site.settings = JsonSettingsStore(tmp_path / "settings.json")
    return DeviceModel201(site, SETTINGS, site.settings)


def valid(message: Call | CallResult) -> None:
    """The ocpp library's 2.0.1 schema check (raises if the payload fails it)."""
    asyncio.run(validate_payload(message, "2.0.1"))


def camel(payload: object) -> dict:
    return snake_to_camel_case(remove_nones(asdict(payload)))  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("0", "ValueTooLow"),
        ("1", None),
        ("2147483647", None),
        ("2147483648", "ValueTooHigh"),
        ("9" * 5000, "ValueTooHigh"),
        ("-1", "ValuePositiveOnly"),
        ("-", "InvalidValue"),
        ("", "InvalidValue"),
        ("1e3", "InvalidValue"),
        ("²", "InvalidValue"),
        ("٣", "InvalidValue"),
        (" 5", "InvalidValue"),
    ],
)
def test_an_interval_is_an_ascii_integer_in_range(text: str, problem: str | None) -> None:
    assert integer_at_least(1)(text) == problem


def test_booleans_and_measurand_lists() -> None:
    assert [boolean(t) for t in ("true", "FALSE", "yes", "1", "")] == [None, None] + ["InvalidValue"] * 3
    assert measurand_list("") is None  # none at all
    assert measurand_list("Energy.Active.Import.Register, SoC") is None
    assert measurand_list("Energy.Active.Import.Register,Coffee") == "UnsupportedParam"
    assert measurand_list("SoC,SoC") == "InvalidValue"
    assert measurand_list(",".join(["SoC"] * 5000)) == "InvalidValue"


def test_set_values_are_saved_and_taken_back(tmp_path: Path) -> None:
    model = make_model(tmp_path)
    asked = [
        {"component": {"name": "sampleddatactrlr"}, "variable": {"name": "TxUpdatedInterval"}, "attribute_value": "15"},
        {"component": {"name": "AlignedDataCtrlr"}, "variable": {"name": "Enabled"}, "attribute_value": "FALSE"},
    ]
    assert [r["attribute_status"] for r in model.set_variables(asked)] == ["Accepted", "Accepted"]
    assert JsonSettingsStore(tmp_path / "settings.json").load(SECTION) == {
        "SampledDataCtrlr.TxUpdatedInterval": "15",
        "AlignedDataCtrlr.Enabled": "false",
    }
    again = make_model(tmp_path)
    assert again.integer("SampledDataCtrlr.TxUpdatedInterval") == 15
    assert again.boolean("AlignedDataCtrlr.Enabled") is False
    assert again.integer("OCPPCommCtrlr.HeartbeatInterval") == 300  # not set: the configuration's


def test_damaged_saved_values_fall_back_with_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = JsonSettingsStore(tmp_path / "settings.json")
    store.save(
        SECTION,
        {
            "SampledDataCtrlr.TxUpdatedInterval": "9" * 5000,
            "SecurityCtrlr.SecurityProfile": "3",  # read-only: never taken from the file
            "Nonsense." + "x" * 200: "1",
            "AlignedDataCtrlr.Interval": 60,  # not a string
            "TxCtrlr.EVConnectionTimeOut": "30",  # the one good value
        },
    )
    with caplog.at_level(logging.WARNING):
        model = make_model(tmp_path)
    assert model.integer("SampledDataCtrlr.TxUpdatedInterval") == 60
    assert model.integer("AlignedDataCtrlr.Interval") == 900
    assert model.value("SecurityCtrlr.SecurityProfile") == "1"
    assert model.site.connection_timeout_s == 30.0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "x" * 100 not in warnings[0]
    store.save(SECTION, "garbage")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert make_model(tmp_path).integer("TxCtrlr.EVConnectionTimeOut") == 60
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_entries_beyond_items_per_message_are_answered_not_carried_out(tmp_path: Path) -> None:
    model = make_model(tmp_path)
    one = {"component": {"name": "TxCtrlr"}, "variable": {"name": "EVConnectionTimeOut"}}
    got = model.get_variables([one] * 51)
    assert [r["attribute_status"] for r in got] == ["Accepted"] * 50 + ["Rejected"]
    assert got[50]["attribute_status_info"]["reason_code"] == "TooManyElements"
    done = model.set_variables([{**one, "attribute_value": "20"}] * 50 + [{**one, "attribute_value": "99"}])
    assert done[50]["attribute_status"] == "Rejected" and model.integer("TxCtrlr.EVConnectionTimeOut") == 20


def test_a_change_wakes_the_loops_that_wait_on_it(tmp_path: Path) -> None:
    model = make_model(tmp_path)
    seen: list[set[str]] = []
    model.on_change(seen.append)

    async def scenario() -> tuple[bool, bool]:
        waiting = asyncio.ensure_future(model.wait_changed("SampledDataCtrlr", 5))
        quiet = asyncio.ensure_future(model.wait_changed("OCPPCommCtrlr", 0.05))
        await asyncio.sleep(0)
        model.set_variables(
            [{"component": {"name": "SampledDataCtrlr"}, "variable": {"name": "Enabled"}, "attribute_value": "false"}]
        )
        return await waiting, await quiet

    assert asyncio.run(scenario()) == (True, False)
    assert seen == [{"SampledDataCtrlr.Enabled"}]


@pytest.mark.parametrize(("connectors", "bytes_per_message"), [(0, 8000), (1, 8000), (40, 8000), (2, 1)])
def test_every_report_part_passes_the_schema_and_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, connectors: int, bytes_per_message: int
) -> None:
    monkeypatch.setattr(reports, "REPORT_BYTES_PER_MESSAGE", bytes_per_message)
    model = make_model(tmp_path, connectors)
    for base in ("FullInventory", "ConfigurationInventory", "SummaryInventory"):
        entries = [reports.report_entry(v) for v in reports.report_variables(model.variables, base)]
        if not entries:  # answered EmptyResultSet, no NotifyReport
            assert (base, connectors) == ("SummaryInventory", 0)
            continue
        parts = reports.notify_reports(3, entries, AT)
        assert [p.seq_no for p in parts] == list(range(len(parts)))
        assert [p.tbc for p in parts] == [True] * (len(parts) - 1) + [False]
        assert sum(len(p.report_data or []) for p in parts) == len(entries)
        for part in parts:
            valid(Call("1", "NotifyReport", camel(part)))
            assert 0 < len(part.report_data or []) <= reports.REPORT_ITEMS_PER_MESSAGE
            size = len(json.dumps(part.report_data))
            assert size <= bytes_per_message or len(part.report_data or []) == 1  # one entry always goes
    if bytes_per_message == 1:
        assert len(parts) == len(entries)  # one entry per part


def test_answers_pass_the_schema(tmp_path: Path) -> None:
    model = make_model(tmp_path)
    named = {"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "AvailabilityState"}}
    got = model.get_variables([named, {**named, "attribute_type": "MaxSet"}])
    valid(CallResult("1", camel(call_result.GetVariables(got)), "GetVariables"))
    bad = {"component": {"name": "SecurityCtrlr"}, "variable": {"name": "Identity"}, "attribute_value": "x"}
    done = model.set_variables([bad])
    assert done[0]["attribute_status_info"]["reason_code"] == "ReadOnly"
    valid(CallResult("1", camel(call_result.SetVariables(done)), "SetVariables"))


@pytest.mark.parametrize(("voltage_v", "units"), [(230.0, "A,W"), (None, "A")])
def test_smart_charging_says_the_store_s_own_limits_and_units(
    tmp_path: Path, voltage_v: float | None, units: str
) -> None:
    """Found in review: the defaults were reported, and W even where a profile in W is refused."""
    site = Site([Connector(1, "c1")], [])
    site.charging_profiles.supply = Supply(voltage_v=voltage_v)
    site.charging_profiles.limits = StoreLimits(max_stack_level=7, max_periods=12)
    model = DeviceModel201(site, SETTINGS, JsonSettingsStore(tmp_path / "settings.json"))
    asked = ["RateUnit", "ProfileStackLevel", "PeriodsPerSchedule"]
    got = model.get_variables([{"component": {"name": "SmartChargingCtrlr"}, "variable": {"name": n}} for n in asked])
    assert [r["attribute_value"] for r in got] == [units, "7", "12"]
