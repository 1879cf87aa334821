"""The 2.0.1 station's device model through a real CSMS (``DemoCsms201``, schemas validated both
ways): GetVariables, SetVariables that take effect at once and survive a restart, the statuses of
what cannot be read or set, GetBaseReport's NotifyReports."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from ocpp.v201 import call

from adapters.demo_csms.csms201 import DemoCsms201
from adapters.ocpp201_upstream import reports
from adapters.ocpp201_upstream.device_model import SECTION
from adapters.ocpp201_upstream.station import ChargingStation201
from adapters.storage.settings import JsonSettingsStore
from gateway.config import DEFAULT_MEASURANDS
from gateway.domain.model import VehicleState
from gateway.services.site import Site
from tests.fixtures.memory_outbox import memory_outbox
from tests.fixtures.net import free_port
from tests.integration.test_ocpp201_upstream import (
    FREE,
    STATION,
    charger_at,
    make_site,
    short_status_grace,  # noqa: F401 (autouse)
    start_station,
    upstream_at,
)
from tests.integration.test_ocpp201_upstream import csms as csms201  # noqa: F401 (a fixture, by this name)
from tests.integration.test_ocpp201_upstream import running as tasks  # noqa: F401 (a fixture)

Item = tuple[str, str] | tuple[str, str, str | None, dict[str, int] | None]
STATION_VARIABLES: dict[tuple[str, str, str | None], str] = {
    ("OCPPCommCtrlr", "HeartbeatInterval", None): "60",
    ("OCPPCommCtrlr", "MessageTimeout", "Default"): "5",
    ("OCPPCommCtrlr", "MessageAttempts", "TransactionEvent"): "3",
    ("OCPPCommCtrlr", "MessageAttemptInterval", "TransactionEvent"): "30",
    ("SampledDataCtrlr", "Enabled", None): "true",
    ("SampledDataCtrlr", "TxUpdatedInterval", None): "0",
    ("SampledDataCtrlr", "TxUpdatedMeasurands", None): ",".join(DEFAULT_MEASURANDS),
    ("SampledDataCtrlr", "TxStartedMeasurands", None): "Energy.Active.Import.Register",
    ("SampledDataCtrlr", "TxEndedMeasurands", None): "Energy.Active.Import.Register",
    ("AlignedDataCtrlr", "Enabled", None): "true",
    ("AlignedDataCtrlr", "Interval", None): "0",  # start_station turns clock-aligned values off
    ("AlignedDataCtrlr", "Measurands", None): "Energy.Active.Import.Register",
    ("TxCtrlr", "TxStartPoint", None): "PowerPathClosed",
    ("TxCtrlr", "TxStopPoint", None): "EVConnected,Authorized",
    ("TxCtrlr", "EVConnectionTimeOut", None): "60",
    ("TxCtrlr", "StopTxOnInvalidId", None): "true",
    ("AuthCtrlr", "Enabled", None): "true",
    ("AuthCtrlr", "AuthorizeRemoteStart", None): "false",
    ("AuthCtrlr", "LocalAuthorizeOffline", None): "true",
    ("AuthCtrlr", "LocalPreAuthorize", None): "false",
    ("AuthCtrlr", "OfflineTxForUnknownIdEnabled", None): "false",
    ("AuthCacheCtrlr", "Enabled", None): "true",
    ("LocalAuthListCtrlr", "Enabled", None): "true",
    ("LocalAuthListCtrlr", "Entries", None): "0",
    ("LocalAuthListCtrlr", "ItemsPerMessage", None): "100",
    ("LocalAuthListCtrlr", "BytesPerMessage", None): "1048576",  # the link's frame limit
    ("SmartChargingCtrlr", "Enabled", None): "true",
    ("SmartChargingCtrlr", "Entries", "ChargingProfiles"): "0",
    ("SmartChargingCtrlr", "ProfileStackLevel", None): "100",
    ("SmartChargingCtrlr", "PeriodsPerSchedule", None): "100",
    ("SmartChargingCtrlr", "RateUnit", None): "A,W",
    ("DeviceDataCtrlr", "ItemsPerMessage", "GetVariables"): "50",
    ("DeviceDataCtrlr", "BytesPerMessage", "SetVariables"): "1048576",
    ("SecurityCtrlr", "SecurityProfile", None): "1",
    ("SecurityCtrlr", "Identity", None): STATION,
}


def data(component: str, variable: str, instance: str | None = None, evse: dict[str, int] | None = None) -> dict:
    """A GetVariableData / SetVariableData's component and variable (snake_case, as the library takes them)."""
    named: dict[str, Any] = {"component": {"name": component}, "variable": {"name": variable}}
    if instance is not None:
        named["variable"]["instance"] = instance
    if evse is not None:
        named["component"]["evse"] = evse
    return named


async def get(csms: DemoCsms201, *items: Item) -> list[dict[str, Any]]:
    answer = await csms.call(STATION, call.GetVariables(get_variable_data=[data(*item) for item in items]))
    return list(answer.get_variable_result)


async def set_(csms: DemoCsms201, *items: tuple[str, str, str]) -> list[dict[str, Any]]:
    asked = [{**data(component, name), "attribute_value": value} for component, name, value in items]
    answer = await csms.call(STATION, call.SetVariables(set_variable_data=asked))
    return list(answer.set_variable_result)


def statuses(results: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(r["attribute_status"], (r.get("attribute_status_info") or {}).get("reason_code")) for r in results]


async def test_get_every_controllers_variables(csms201: DemoCsms201, tasks: list) -> None:  # noqa: F811
    site = make_site()
    site.apply(charger_at(0, VehicleState.A, 100))
    station = start_station(site, csms201.port, tasks, response_timeout_s=5)
    await station.accepted.wait()
    await csms201.wait_for("StatusNotification", lambda p: p["evseId"] == 1)
    results = await get(csms201, *STATION_VARIABLES)
    assert {(r["component"]["name"], r["variable"]["name"], r["variable"].get("instance")): r for r in results}.keys()
    assert [r["attribute_status"] for r in results] == ["Accepted"] * len(STATION_VARIABLES)
    assert [r["attribute_value"] for r in results] == list(STATION_VARIABLES.values())
    evse_1, evse_2, connector_1 = {"id": 1}, {"id": 2}, {"id": 1, "connector_id": 1}
    results = await get(
        csms201,
        ("EVSE", "AvailabilityState", None, evse_1),
        ("EVSE", "AvailabilityState", None, evse_2),
        ("Connector", "AvailabilityState", None, connector_1),
        ("connector", "CONNECTORTYPE", None, connector_1),  # names are case-insensitive
        ("EVSE", "Available", None, evse_2),
    )
    assert [r["attribute_value"] for r in results] == ["Available", "Unavailable", "Available", "Unknown", "true"]
    assert results[3]["variable"] == {"name": "CONNECTORTYPE"}  # answered as asked


async def test_set_intervals_and_measurands_take_effect_at_once(csms201: DemoCsms201, tasks: list) -> None:  # noqa: F811
    site = make_site(FREE)
    station = start_station(site, csms201.port, tasks, heartbeat_interval_s=3600)
    await station.accepted.wait()
    site.apply(charger_at(0, VehicleState.A, 1_000))
    site.apply(charger_at(1, VehicleState.C, 1_000))
    await csms201.wait_for("TransactionEvent", lambda p: p["eventType"] == "Started")
    assert station.sample_interval_s == 0  # the configuration's: no periodic values yet
    results = await set_(
        csms201,
        ("SampledDataCtrlr", "TxUpdatedInterval", "1"),
        ("SampledDataCtrlr", "TxUpdatedMeasurands", "Energy.Active.Import.Register, Power.Active.Import"),
        ("OCPPCommCtrlr", "HeartbeatInterval", "1"),
    )
    assert statuses(results) == [("Accepted", None)] * 3
    for minute, energy_wh in ((2, 1_200), (3, 1_500)):
        site.apply(charger_at(minute, VehicleState.C, energy_wh))
        sample = await csms201.wait_for(
            "TransactionEvent",
            lambda p, e=energy_wh: (
                p["triggerReason"] == "MeterValuePeriodic"
                and any(s["value"] == e for v in p["meterValue"] for s in v["sampledValue"])
            ),
            timeout=5,
        )
        measurands = [s["measurand"] for s in sample["meterValue"][0]["sampledValue"]]
        assert measurands == ["Energy.Active.Import.Register", "Power.Active.Import"]
    await csms201.wait_for("Heartbeat", timeout=5)  # after 1 s, not the boot's hour
    assert (await get(csms201, ("SampledDataCtrlr", "TxUpdatedMeasurands")))[0]["attribute_value"] == (
        "Energy.Active.Import.Register,Power.Active.Import"
    )
    assert statuses(await set_(csms201, ("SampledDataCtrlr", "Enabled", "FALSE"))) == [("Accepted", None)]
    assert station.sample_interval_s == 0
    assert statuses(await set_(csms201, ("TxCtrlr", "EVConnectionTimeOut", "15"))) == [("Accepted", None)]
    assert site.connection_timeout_s == 15.0


async def test_what_cannot_be_read_or_set_is_named(
    csms201: DemoCsms201,  # noqa: F811
    tasks: list,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    station = start_station(make_site(), csms201.port, tasks)
    await station.accepted.wait()
    results = await get(
        csms201,
        ("CoffeeCtrlr", "Enabled"),
        ("EVSE", "AvailabilityState", None, {"id": 9}),
        ("EVSE", "AvailabilityState"),  # an EVSE without its id
        ("TxCtrlr", "Espresso"),
        ("SampledDataCtrlr", "TxUpdatedInterval", "Ristretto"),
    )
    assert [r["attribute_status"] for r in results] == [
        "UnknownComponent",
        "UnknownComponent",
        "UnknownComponent",
        "UnknownVariable",
        "UnknownVariable",
    ]
    target = {**data("OCPPCommCtrlr", "HeartbeatInterval"), "attribute_type": "Target"}
    answer = await csms201.call(STATION, call.GetVariables(get_variable_data=[target]))
    assert answer.get_variable_result[0]["attribute_status"] == "NotSupportedAttributeType"
    assert answer.get_variable_result[0]["attribute_type"] == "Target"
    bad = [
        ("SecurityCtrlr", "SecurityProfile", "2"),  # read-only
        ("TxCtrlr", "StopTxOnInvalidId", "false"),  # read-only: what the gateway does
        ("OCPPCommCtrlr", "HeartbeatInterval", "-5"),
        ("OCPPCommCtrlr", "HeartbeatInterval", "0"),
        ("OCPPCommCtrlr", "HeartbeatInterval", "9" * 1000),  # as long as the schema lets it be
        ("OCPPCommCtrlr", "HeartbeatInterval", "2147483648"),
        ("OCPPCommCtrlr", "HeartbeatInterval", "٣"),  # a digit to str.isdigit, not to OCPP
        ("OCPPCommCtrlr", "HeartbeatInterval", "1.5"),
        ("SampledDataCtrlr", "Enabled", "yes"),
        ("SampledDataCtrlr", "TxUpdatedMeasurands", "Energy.Active.Import.Register,Coffee"),
        ("SampledDataCtrlr", "TxUpdatedMeasurands", "SoC,SoC"),
        ("CoffeeCtrlr", "Enabled", "true"),
        ("TxCtrlr", "Espresso", "true"),
        ("AlignedDataCtrlr", "Interval", "60"),  # one good one among them
    ]
    assert statuses(await set_(csms201, *bad)) == [
        ("Rejected", "ReadOnly"),
        ("Rejected", "ReadOnly"),
        ("Rejected", "ValuePositiveOnly"),
        ("Rejected", "ValueTooLow"),
        ("Rejected", "ValueTooHigh"),
        ("Rejected", "ValueTooHigh"),
        ("Rejected", "InvalidValue"),
        ("Rejected", "InvalidValue"),
        ("Rejected", "InvalidValue"),
        ("Rejected", "UnsupportedParam"),
        ("Rejected", "InvalidValue"),
        ("UnknownComponent", None),
        ("UnknownVariable", None),
        ("Accepted", None),
    ]
    assert station.heartbeat_interval_s == 60 and station.aligned_interval_s == 60
    too_many = [("OCPPCommCtrlr", "HeartbeatInterval")] * 51  # DeviceDataCtrlr.ItemsPerMessage[GetVariables]
    assert statuses(await get(csms201, *too_many))[49:] == [("Accepted", None), ("Rejected", "TooManyElements")]
    session = csms201.sessions[STATION]  # beyond the schema's 1000 characters: the library's CALLERROR
    huge = {"setVariableData": [{"attributeValue": "9" * 5000, **json.loads(json.dumps(data("TxCtrlr", "X")))}]}
    await session._send(json.dumps([2, "huge-1", "SetVariables", huge]))
    assert (await get(csms201, ("OCPPCommCtrlr", "HeartbeatInterval")))[0]["attribute_value"] == "60"  # link lives
    assert any("SetVariables answered with CALLERROR TypeConstraintViolation" in r.getMessage() for r in caplog.records)


async def test_what_the_csms_set_survives_a_restart(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "settings.json"
    port = free_port()

    def persistent_site() -> Site:
        site = make_site()
        site.settings = JsonSettingsStore(path)
        return site

    server = DemoCsms201("127.0.0.1", port)
    await server.start()
    started: list[asyncio.Task[None]] = []
    try:
        first = ChargingStation201(persistent_site(), upstream_at(port), memory_outbox())
        started.append(asyncio.create_task(first.run()))
        await first.accepted.wait()
        results = await set_(
            server,
            ("AlignedDataCtrlr", "Interval", "300"),
            ("AlignedDataCtrlr", "Measurands", "Energy.Active.Import.Register,Voltage"),
            ("SampledDataCtrlr", "TxUpdatedInterval", "30"),
        )
        assert statuses(results) == [("Accepted", None)] * 3
    finally:
        for task in started:
            task.cancel()
        await asyncio.gather(*started, return_exceptions=True)
        await server.stop()
    second = ChargingStation201(persistent_site(), upstream_at(port), memory_outbox())
    assert (second.aligned_interval_s, second.sample_interval_s) == (300, 30)
    assert second.sampler.aligned_measurands == ["Energy.Active.Import.Register", "Voltage"]
    assert second.heartbeat_interval_s == 60  # never set by the CSMS: the configuration's

    saved = JsonSettingsStore(path).load(SECTION)
    JsonSettingsStore(path).save(
        SECTION, {**saved, "AlignedDataCtrlr.Interval": "-1", "SecurityCtrlr.SecurityProfile": "3", "X": 1}
    )
    caplog.clear()
    third = ChargingStation201(persistent_site(), upstream_at(port), memory_outbox())
    assert (third.aligned_interval_s, third.sample_interval_s) == (900, 30)  # the damaged one: the default
    assert third.device_model.value("SecurityCtrlr.SecurityProfile") == "1"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "AlignedDataCtrlr.Interval" in warnings[0] and "SecurityProfile" in warnings[0]
    JsonSettingsStore(path).save(SECTION, ["not", "a", "table"])
    assert ChargingStation201(persistent_site(), upstream_at(port), memory_outbox()).sample_interval_s == 0


@pytest.mark.parametrize(
    ("report_base", "mutability"), [("FullInventory", None), ("ConfigurationInventory", "ReadWrite")]
)
async def test_get_base_report_sends_notify_reports_in_parts(
    csms201: DemoCsms201,  # noqa: F811
    tasks: list,  # noqa: F811
    report_base: str,
    mutability: str | None,
) -> None:
    station = start_station(make_site(), csms201.port, tasks)
    await station.accepted.wait()
    answer = await csms201.call(STATION, call.GetBaseReport(request_id=77, report_base=report_base))
    assert answer.status == "Accepted"
    last = await csms201.wait_for("NotifyReport", lambda p: not p.get("tbc", False))
    parts = csms201.messages("NotifyReport")
    assert [p["seqNo"] for p in parts] == list(range(len(parts)))
    assert [p.get("tbc", False) for p in parts] == [True] * (len(parts) - 1) + [False]
    assert {p["requestId"] for p in parts} == {77} and last is parts[-1]
    entries = [entry for p in parts for entry in p["reportData"]]
    assert all(len(p["reportData"]) <= reports.REPORT_ITEMS_PER_MESSAGE for p in parts)
    mutabilities = {e["variableAttribute"][0]["mutability"] for e in entries}
    if mutability is None:
        assert len(parts) > 1 and mutabilities == {"ReadOnly", "ReadWrite"}
        assert len(entries) == len(station.device_model.variables)
        evse = next(e for e in entries if e["component"].get("evse") == {"id": 2, "connectorId": 1})
        assert evse["variableCharacteristics"]["dataType"] in ("OptionList", "boolean", "string")
    else:
        assert mutabilities == {mutability}
        heartbeat = next(e for e in entries if e["variable"]["name"] == "HeartbeatInterval")
        assert heartbeat["variableAttribute"][0]["value"] == "60"
        assert heartbeat["variableCharacteristics"] == {"unit": "s", "dataType": "integer", "supportsMonitoring": False}


async def test_summary_inventory_is_the_availability(csms201: DemoCsms201, tasks: list) -> None:  # noqa: F811
    station = start_station(make_site(), csms201.port, tasks)
    await station.accepted.wait()
    answer = await csms201.call(STATION, call.GetBaseReport(request_id=5, report_base="SummaryInventory"))
    assert answer.status == "Accepted"
    report = await csms201.wait_for("NotifyReport", lambda p: p["requestId"] == 5 and not p.get("tbc", False))
    names = {(e["component"]["name"], e["variable"]["name"]) for e in report["reportData"]}
    assert names == {(c, v) for c in ("EVSE", "Connector") for v in ("AvailabilityState", "Available")}
