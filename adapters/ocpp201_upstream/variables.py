"""The variables of the 2.0.1 station's device model: what a CSMS can read and set, and their checks.

Only what the gateway honours is ReadWrite; a variable whose behaviour the gateway cannot change is
ReadOnly with the value that describes what it does (a CSMS that tries to set it is Rejected, and
learns the truth from GetVariables or a report). Only the attribute type Actual exists here.
Values are OCPP strings; a check says whether a string a CSMS sends is acceptable, and why not.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from adapters.ocpp201_upstream.mapping import connector_status
from adapters.ocpp201_upstream.tx_points import (
    DEFAULT_START_POINT,
    DEFAULT_STOP_POINT,
    START_POINTS,
    STOP_POINTS,
    point_list,
)
from adapters.ocpp_link import MAX_FRAME_BYTES  # a larger frame closes the link: the bound is the link's
from gateway.config import SUPPORTED_MEASURANDS, UpstreamConfig
from gateway.domain.charging_store import ChargingProfileStore
from gateway.services.site import Site

MAX_INTEGER = 2**31 - 1  # OCPP's integer: a larger value (or 5000 nines) would overflow the loops it times
ALIGNED_INTERVAL_S = 900  # clock-aligned values every 15 minutes after midnight UTC, unless the CSMS says otherwise
ENERGY_REGISTER = "Energy.Active.Import.Register"
AVAILABILITY_STATES = "Available,Occupied,Reserved,Unavailable,Faulted"
LOCAL_LIST_ITEMS_PER_MESSAGE = 100  # SendLocalList entries per message (as 1.6's SendLocalListMaxLength)
LOCAL_LIST_BYTES_PER_MESSAGE = MAX_FRAME_BYTES
REQUEST_ITEMS_PER_MESSAGE = 50  # getVariableData / setVariableData entries per request

Check = Callable[[str], str | None]  # a value -> None if acceptable, else why not (a statusInfo reasonCode)


def integer_at_least(minimum: int) -> Check:
    """ASCII digits of an integer OCPP can carry, at least ``minimum`` ("²" and "٣" are digits to
    str.isdigit, not to int; a 5000-digit number is refused before int() reads it)."""

    def check(text: str) -> str | None:
        if text.startswith("-") and text[1:].isascii() and text[1:].isdigit():
            return "ValuePositiveOnly" if minimum > 0 else "ValueTooLow"
        if not (text.isascii() and text.isdigit()):
            return "InvalidValue"
        if len(text) > 10 or int(text) > MAX_INTEGER:
            return "ValueTooHigh"
        return "ValueTooLow" if int(text) < minimum else None

    return check


def boolean(text: str) -> str | None:
    return None if text.lower() in ("true", "false") else "InvalidValue"


def measurand_list(text: str) -> str | None:
    """A MemberList of measurands the gateway can read (empty: none), each once."""
    items = [item.strip() for item in text.split(",")] if text.strip() else []
    if len(items) > len(SUPPORTED_MEASURANDS) or len(set(items)) != len(items):
        return "InvalidValue"
    return None if all(item in SUPPORTED_MEASURANDS for item in items) else "UnsupportedParam"


@dataclass
class Variable:
    """One component's variable (station-wide: ``evse_id`` None), with attribute Actual only."""

    component: str
    name: str
    value: str = ""
    data_type: str = "string"  # DataEnumType: string, integer, boolean, OptionList, MemberList, SequenceList
    check: Check | None = None  # None: ReadOnly
    instance: str | None = None
    evse_id: int | None = None
    connector_id: int | None = None
    read: Callable[[], str] | None = None  # a live value (an EVSE's state), read at each request
    unit: str | None = None
    values_list: str | None = None
    min_limit: int | None = None

    @property
    def readonly(self) -> bool:
        return self.check is None

    @property
    def key(self) -> str:
        """Its name in the settings store: ``Component.Variable`` or ``Component.Variable[instance]``."""
        return f"{self.component}.{self.name}" + (f"[{self.instance}]" if self.instance else "")

    def actual(self) -> str:
        return self.read() if self.read is not None else self.value


def _rw(component: str, name: str, value: object, data_type: str, check: Check, **kw: object) -> Variable:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return Variable(component, name, text, data_type, check, **kw)  # type: ignore[arg-type]


def _ro(component: str, name: str, value: object, data_type: str = "string", **kw: object) -> Variable:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return Variable(component, name, text, data_type, None, **kw)  # type: ignore[arg-type]


def _measurands(component: str, name: str, value: str, readonly: bool = False) -> Variable:
    variable = Variable(component, name, value, "MemberList", None if readonly else measurand_list)
    variable.values_list = ",".join(SUPPORTED_MEASURANDS)
    return variable


def station_variables(settings: UpstreamConfig) -> list[Variable]:
    """The controllers of the whole station, with the configuration's values (see docs/ocpp-2.0.1.md)."""
    seconds = {"unit": "s", "min_limit": 0}
    comm, sampled, aligned, tx = "OCPPCommCtrlr", "SampledDataCtrlr", "AlignedDataCtrlr", "TxCtrlr"
    starts, stops = ",".join(START_POINTS), ",".join(STOP_POINTS)  # what a charger can tell (tx_points.py)
    return [
        _rw(comm, "HeartbeatInterval", settings.heartbeat_interval_s, "integer", integer_at_least(1), unit="s"),
        _ro(comm, "MessageTimeout", math.ceil(settings.response_timeout_s), "integer", instance="Default", unit="s"),
        _rw(
            comm,
            "MessageAttempts",
            settings.transaction_message_attempts,
            "integer",
            integer_at_least(1),
            instance="TransactionEvent",
        ),
        _rw(
            comm,
            "MessageAttemptInterval",
            settings.transaction_message_retry_interval_s,
            "integer",
            integer_at_least(1),
            instance="TransactionEvent",
            unit="s",
        ),
        _ro(comm, "ResetRetries", 0, "integer"),
        _ro(comm, "UnlockOnEVSideDisconnect", False, "boolean"),
        _rw(sampled, "Enabled", True, "boolean", boolean),
        _rw(
            sampled,
            "TxUpdatedInterval",
            settings.meter_value_sample_interval_s,
            "integer",
            integer_at_least(0),
            **seconds,
        ),
        _measurands(sampled, "TxUpdatedMeasurands", ",".join(settings.meter_values_sampled_data)),
        _measurands(sampled, "TxStartedMeasurands", ENERGY_REGISTER, readonly=True),
        _measurands(sampled, "TxEndedMeasurands", ENERGY_REGISTER, readonly=True),
        _ro(sampled, "TxEndedInterval", 0, "integer", **seconds),
        _rw(aligned, "Enabled", True, "boolean", boolean),
        _rw(aligned, "Interval", ALIGNED_INTERVAL_S, "integer", integer_at_least(0), **seconds),
        _measurands(aligned, "Measurands", ENERGY_REGISTER),
        _ro(aligned, "TxEndedInterval", 0, "integer", **seconds),
        _measurands(aligned, "TxEndedMeasurands", "", readonly=True),
        _rw(tx, "TxStartPoint", DEFAULT_START_POINT, "MemberList", point_list(START_POINTS), values_list=starts),
        _rw(tx, "TxStopPoint", DEFAULT_STOP_POINT, "MemberList", point_list(STOP_POINTS), values_list=stops),
        _rw(tx, "EVConnectionTimeOut", 60, "integer", integer_at_least(1), unit="s"),
        _ro(tx, "StopTxOnInvalidId", True, "boolean"),
        _ro(tx, "StopTxOnEVSideDisconnect", True, "boolean"),
        _ro("AuthCtrlr", "Enabled", True, "boolean"),
        _ro("AuthCtrlr", "AuthorizeRemoteStart", False, "boolean"),
        _rw("AuthCtrlr", "LocalAuthorizeOffline", True, "boolean", boolean),
        _rw("AuthCtrlr", "LocalPreAuthorize", False, "boolean", boolean),
        _rw("AuthCtrlr", "OfflineTxForUnknownIdEnabled", False, "boolean", boolean),
        _ro("AuthCacheCtrlr", "Available", True, "boolean"),
        _rw("AuthCacheCtrlr", "Enabled", True, "boolean", boolean),
        _ro("LocalAuthListCtrlr", "Available", True, "boolean"),
        _rw("LocalAuthListCtrlr", "Enabled", True, "boolean", boolean),
        _ro("LocalAuthListCtrlr", "Entries", 0, "integer"),
        _ro("LocalAuthListCtrlr", "ItemsPerMessage", LOCAL_LIST_ITEMS_PER_MESSAGE, "integer"),
        _ro("LocalAuthListCtrlr", "BytesPerMessage", LOCAL_LIST_BYTES_PER_MESSAGE, "integer"),
        *[
            _ro("DeviceDataCtrlr", name, value, "integer", instance=instance)
            for instance in ("GetVariables", "SetVariables")
            for name, value in (
                ("ItemsPerMessage", REQUEST_ITEMS_PER_MESSAGE),
                ("BytesPerMessage", MAX_FRAME_BYTES),
            )
        ],
        _ro("SecurityCtrlr", "SecurityProfile", 1, "integer"),
        _ro("SecurityCtrlr", "Identity", settings.charge_point_id),
    ]


def smart_charging_variables(store: ChargingProfileStore) -> list[Variable]:
    """SmartChargingCtrlr: the Site's charging profiles always apply (Enabled, ReadOnly true), with
    the store's own limits (a profile beyond them is Rejected) and the units it takes (W only with
    a supply voltage to turn them into A); Entries is live (the station provides it)."""
    limits, smart = store.limits, "SmartChargingCtrlr"
    units = "A,W" if store.supply.voltage_v else "A"
    return [
        _ro(smart, "Available", True, "boolean"),
        _ro(smart, "Enabled", True, "boolean"),
        _ro(smart, "Entries", 0, "integer", instance="ChargingProfiles"),
        _ro(smart, "ProfileStackLevel", limits.max_stack_level, "integer"),
        _ro(smart, "PeriodsPerSchedule", limits.max_periods, "integer"),
        _ro(smart, "RateUnit", units, "MemberList", values_list="A,W"),
    ]


def evse_variables(site: Site) -> list[Variable]:
    """Each EVSE (a site connector) and its one connector: live availability, nothing to set."""
    found: list[Variable] = []
    for evse_id in sorted(site.upstream_connectors):

        def state(evse_id: int = evse_id) -> str:
            return connector_status(site.connectors[evse_id].status)

        options = {"data_type": "OptionList", "values_list": AVAILABILITY_STATES, "read": state}
        found += [
            Variable("EVSE", "AvailabilityState", evse_id=evse_id, **options),  # type: ignore[arg-type]
            Variable("EVSE", "Available", "true", "boolean", evse_id=evse_id),
            Variable("Connector", "AvailabilityState", evse_id=evse_id, connector_id=1, **options),  # type: ignore[arg-type]
            Variable("Connector", "Available", "true", "boolean", evse_id=evse_id, connector_id=1),
            Variable("Connector", "ConnectorType", "Unknown", evse_id=evse_id, connector_id=1),
        ]
    return found
