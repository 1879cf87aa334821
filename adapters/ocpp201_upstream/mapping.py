"""Pure translation tables from the domain to OCPP 2.0.1: statuses, stop reasons, ids, sampled values.

Kept free of I/O so the tables can be read and unit-tested on their own. Payload pieces are
snake_case dicts (JSON-able, as queued in the outbox); the ``ocpp`` library turns them into
camelCase when the CALL is sent, and checks them against the 2.0.1 schema both ways.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from adapters.ocpp_measurands import ENERGY_REGISTER, measured_values
from gateway.domain.battery import SocValue
from gateway.domain.model import ConnectorStatus, Reading, iso_utc
from gateway.domain.transactions import StopReason

# ConnectorStatusEnumType: 2.0.1 reports the connector (Occupied covers every 1.6 state of a
# connector in use); what the car does goes in transactionInfo.chargingState instead.
CONNECTOR_STATUS = {
    ConnectorStatus.AVAILABLE: "Available",
    ConnectorStatus.OCCUPIED: "Occupied",
    ConnectorStatus.CHARGING: "Occupied",
    ConnectorStatus.SUSPENDED_EV: "Occupied",
    ConnectorStatus.SUSPENDED_EVSE: "Occupied",
    ConnectorStatus.FINISHING: "Occupied",
    ConnectorStatus.UNAVAILABLE: "Unavailable",
    ConnectorStatus.FAULTED: "Faulted",
}

CHARGING_STATE = {
    ConnectorStatus.CHARGING: "Charging",
    ConnectorStatus.SUSPENDED_EV: "SuspendedEV",
    ConnectorStatus.SUSPENDED_EVSE: "SuspendedEVSE",
    ConnectorStatus.OCCUPIED: "EVConnected",
    ConnectorStatus.FINISHING: "EVConnected",
}

# Domain StopReason -> (stoppedReason, triggerReason) of the Ended TransactionEvent. 2.0.1 knows one
# reset reason (ImmediateReset): a reset that ends a session ends it at once, soft or hard.
STOPPED = {
    StopReason.EV_DISCONNECTED: ("EVDisconnected", "EVCommunicationLost"),
    StopReason.LOCAL: ("Local", "StopAuthorized"),
    StopReason.REMOTE: ("Remote", "RemoteStop"),
    StopReason.POWER_LOSS: ("PowerLoss", "AbnormalCondition"),
    StopReason.REBOOT: ("Reboot", "AbnormalCondition"),
    StopReason.SOFT_RESET: ("ImmediateReset", "ResetCommand"),
    StopReason.HARD_RESET: ("ImmediateReset", "ResetCommand"),
    StopReason.DEAUTHORIZED: ("DeAuthorized", "Deauthorized"),
    StopReason.EMERGENCY_STOP: ("EmergencyStop", "AbnormalCondition"),
    StopReason.OTHER: ("Other", "AbnormalCondition"),
}

MAX_TRANSACTION_ID = 36  # transactionInfo.transactionId is a string of at most 36 characters
MAX_ID_TOKEN = 36


def connector_status(status: ConnectorStatus) -> str:
    return CONNECTOR_STATUS[status]


def charging_state(status: ConnectorStatus) -> str | None:
    """transactionInfo.chargingState for a connector in a session (None: nothing to say)."""
    return CHARGING_STATE.get(status)


def transaction_id(local_ref: str) -> str:
    """The gateway's session reference as the 2.0.1 transactionId (the station chooses it).

    Today's references (``c<connector>-<yyyymmddThhmmss>-<run>-<n>``) fit in 36 characters; a
    longer one keeps its first 27 characters and gets 8 hex digits of its SHA-256, so the same
    reference always gives the same id and two references hardly ever share one."""
    if len(local_ref) <= MAX_TRANSACTION_ID:
        return local_ref
    digest = hashlib.sha256(local_ref.encode()).hexdigest()[:8]
    return f"{local_ref[: MAX_TRANSACTION_ID - 9]}-{digest}"


def id_token(id_tag: str, token_type: str) -> dict[str, Any]:
    """An IdTokenType (id tags are at most 20 characters in the gateway: they fit the 36 of 2.0.1)."""
    return {"id_token": id_tag[:MAX_ID_TOKEN], "type": token_type}


def _number(value: float | int) -> float | int:
    """A sampled value as JSON number, without float noise (7200.5, 230.1)."""
    return value if isinstance(value, int) else round(float(value), 3)


def sampled_value(
    measurand: str, value: float | int, unit: str | None, *, context: str, location: str, phase: str | None = None
) -> dict[str, Any]:
    sample: dict[str, Any] = {"value": _number(value), "context": context, "measurand": measurand}
    if phase is not None:
        sample["phase"] = phase
    sample["location"] = "EV" if measurand == "SoC" else location  # the SoC is the car's
    if unit is not None:
        sample["unit_of_measure"] = {"unit": unit}
    return sample


def sampled_values(reading: Reading, measurands: Iterable[str], *, context: str, location: str) -> list[dict[str, Any]]:
    """The measurands present in ``reading``, with the units of 2.0.1 (Appendix 2) and phases."""
    return [
        sampled_value(m.measurand, m.value, m.unit, context=context, location=location, phase=m.phase)
        for m in measured_values(reading, measurands, frequency_unit="Hz")
    ]


def meter_values(
    reading: Reading | None,
    measurands: Iterable[str],
    *,
    context: str,
    location: str = "Outlet",
    stamp: str | None = None,
    soc: SocValue | None = None,
) -> list[dict[str, Any]]:
    """MeterValueType entries: the reading's values stamped with when it was made (or ``stamp``,
    the boundary of a clock-aligned value), and the SoC with the time it was measured (in the
    same entry when the times agree)."""
    wanted = list(measurands)
    entries: list[dict[str, Any]] = []
    if reading is not None:
        values = sampled_values(reading, [m for m in wanted if m != "SoC"], context=context, location=location)
        if values:
            entries.append({"timestamp": stamp or iso_utc(reading.measured_at), "sampled_value": values})
    if soc is not None and "SoC" in wanted:
        sample = sampled_value("SoC", soc.soc_percent, "Percent", context=context, location="EV")
        at = stamp or iso_utc(soc.measured_at)
        same = next((entry for entry in entries if entry["timestamp"] == at), None)
        if same is not None:
            same["sampled_value"].append(sample)
        else:
            entries.append({"timestamp": at, "sampled_value": [sample]})
    return entries


def register_value(value_wh: int, at: str, context: str) -> dict[str, Any]:
    """The billing register as one MeterValueType (Transaction.Begin / Transaction.End)."""
    sample = sampled_value(ENERGY_REGISTER, value_wh, "Wh", context=context, location="Outlet")
    return {"timestamp": at, "sampled_value": [sample]}
