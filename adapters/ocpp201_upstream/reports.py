"""GetBaseReport's NotifyReports: the device model as reportData, in parts of a bounded size.

ConfigurationInventory lists what a CSMS can set, FullInventory everything, SummaryInventory the
EVSEs' and connectors' availability. A report goes out as NotifyReport parts numbered by ``seqNo``
from 0, each with at most ``REPORT_ITEMS_PER_MESSAGE`` entries and ``REPORT_BYTES_PER_MESSAGE``
bytes of JSON (a CSMS or a proxy with a small frame limit still gets it), ``tbc`` true on all but
the last.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ocpp.v201 import call

from adapters.ocpp201_upstream.variables import Variable
from gateway.domain.model import iso_utc

REPORT_ITEMS_PER_MESSAGE = 20
REPORT_BYTES_PER_MESSAGE = 8000  # of the reportData entries' JSON (snake_case: never shorter than the frame's)
SUMMARY_VARIABLES = frozenset({"AvailabilityState", "Available"})


def _component(variable: Variable) -> dict[str, Any]:
    component: dict[str, Any] = {"name": variable.component}
    if variable.evse_id is not None:
        component["evse"] = {"id": variable.evse_id}
        if variable.connector_id is not None:
            component["evse"]["connector_id"] = variable.connector_id
    return component


def report_entry(variable: Variable) -> dict[str, Any]:
    """One ReportDataType (snake_case, as the ocpp library takes it)."""
    name: dict[str, Any] = {"name": variable.name, **({"instance": variable.instance} if variable.instance else {})}
    mutability = "ReadOnly" if variable.readonly else "ReadWrite"
    attribute = {"type": "Actual", "value": variable.actual(), "mutability": mutability, "persistent": True}
    if variable.read is not None:
        attribute["persistent"] = False  # a live state, not a setting
    characteristics: dict[str, Any] = {"data_type": variable.data_type, "supports_monitoring": False}
    for field, value in (("unit", variable.unit), ("values_list", variable.values_list)):
        if value is not None:
            characteristics[field] = value
    if variable.min_limit is not None:
        characteristics["min_limit"] = variable.min_limit
    return {
        "component": _component(variable),
        "variable": name,
        "variable_attribute": [attribute],
        "variable_characteristics": characteristics,
    }


def report_variables(variables: list[Variable], report_base: str) -> list[Variable]:
    if report_base == "ConfigurationInventory":
        return [v for v in variables if not v.readonly]
    if report_base == "SummaryInventory":
        return [v for v in variables if v.evse_id is not None and v.name in SUMMARY_VARIABLES]
    return list(variables)


def notify_reports(request_id: int, entries: list[dict[str, Any]], at: datetime) -> list[call.NotifyReport]:
    """The parts of one report: seqNo 0.., tbc on all but the last (one empty part if nothing fits)."""
    parts: list[list[dict[str, Any]]] = [[]]
    size = 0
    for entry in entries:
        entry_size = len(json.dumps(entry)) + 1
        if parts[-1] and (len(parts[-1]) >= REPORT_ITEMS_PER_MESSAGE or size + entry_size > REPORT_BYTES_PER_MESSAGE):
            parts.append([])
            size = 0
        parts[-1].append(entry)
        size += entry_size
    generated_at = iso_utc(at)
    return [
        call.NotifyReport(
            request_id=request_id,
            generated_at=generated_at,
            seq_no=seq_no,
            report_data=part or None,
            tbc=seq_no < len(parts) - 1,
        )
        for seq_no, part in enumerate(parts)
    ]
