"""The domain's session effects as OCPP 2.0.1 TransactionEvent payloads, and queued records as CALLs.

Payloads are queued without their seqNo (given at send time, see ledger.py); ``offline`` says
whether the event happened while the station had no accepted link to the CSMS. A record the
gateway itself cannot turn into a valid CALL is never sent: ``call_problem`` says why, checked
against the 2.0.1 schema as the ``ocpp`` library checks it when sending.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ocpp.charge_point import remove_nones, serialize_as_dict, snake_to_camel_case
from ocpp.exceptions import OCPPError
from ocpp.messages import Call, validate_payload
from ocpp.v201 import call

from adapters.ocpp201_upstream.mapping import STOPPED, charging_state, id_token, register_value, transaction_id
from gateway.domain.model import ConnectorStatus, iso_utc
from gateway.domain.outbox import OutboxRecord
from gateway.domain.transactions import StartTransaction, StopTransaction

OCPP_VERSION = "2.0.1"
CALLS: dict[str, Any] = {"TransactionEvent": call.TransactionEvent, "MeterValues": call.MeterValues}
MAX_REASON = 200


def _info(local_ref: str, **extra: Any) -> dict[str, Any]:
    return {"transaction_id": transaction_id(local_ref), **{k: v for k, v in extra.items() if v is not None}}


def started_payload(
    start: StartTransaction,
    trigger_reason: str,
    token_type: str,
    remote_start_id: int | None,
    *,
    offline: bool,
    with_register: bool = True,
) -> dict[str, Any]:
    """A Started; without an id tag (a transaction begun at the plug-in, see tx_points.py) it has
    no idToken, and ``with_register`` False leaves out a Transaction.Begin no register gave."""
    at = iso_utc(start.started_at)
    payload = {
        "event_type": "Started",
        "timestamp": at,
        "trigger_reason": trigger_reason,
        "transaction_info": _info(start.local_ref, charging_state="EVConnected", remote_start_id=remote_start_id),
        "id_token": id_token(start.id_tag, token_type) if start.id_tag else None,
        "evse": {"id": start.connector_id, "connector_id": 1},
        "meter_value": [register_value(start.meter_start_wh, at, "Transaction.Begin")] if with_register else None,
        "offline": offline,
    }
    return {key: value for key, value in payload.items() if value is not None}


def updated_payload(
    local_ref: str, trigger_reason: str, entries: list[dict[str, Any]], status: ConnectorStatus, *, offline: bool
) -> dict[str, Any]:
    return {
        "event_type": "Updated",
        "timestamp": entries[0]["timestamp"],
        "trigger_reason": trigger_reason,
        "transaction_info": _info(local_ref, charging_state=charging_state(status)),
        "meter_value": entries,
        "offline": offline,
    }


def state_changed_payload(
    local_ref: str,
    state: str,
    at: datetime,
    *,
    offline: bool,
    trigger_reason: str = "ChargingStateChanged",
    token: dict[str, Any] | None = None,
    remote_start_id: int | None = None,
) -> dict[str, Any]:
    """An Updated that says the session's chargingState changed, at ``at`` (or, with another
    ``trigger_reason`` and ``token``, that it was authorised or its authorisation ended)."""
    payload = {
        "event_type": "Updated",
        "timestamp": iso_utc(at),
        "trigger_reason": trigger_reason,
        "transaction_info": _info(local_ref, charging_state=state, remote_start_id=remote_start_id),
        "id_token": token,
        "offline": offline,
    }
    return {key: value for key, value in payload.items() if value is not None}


def ended_payload(
    stop: StopTransaction, token_type: str, *, offline: bool, reasons: tuple[str, str] | None = None
) -> dict[str, Any]:
    """An Ended; ``reasons`` (stoppedReason, triggerReason) for an end the domain has no reason
    for (a transaction begun at an authorisation whose car never came: Timeout, EVConnectTimeout)."""
    stopped_reason, trigger_reason = reasons or STOPPED[stop.reason]
    at = iso_utc(stop.stopped_at)
    payload = {
        "event_type": "Ended",
        "timestamp": at,
        "trigger_reason": trigger_reason,
        "transaction_info": _info(stop.local_ref, charging_state="Idle", stopped_reason=stopped_reason),
        "id_token": id_token(stop.id_tag, token_type) if stop.id_tag else None,
        "meter_value": [register_value(stop.meter_stop_wh, at, "Transaction.End")],
        "offline": offline,
    }
    return {key: value for key, value in payload.items() if value is not None}


def call_for(record: OutboxRecord, seq_no: int | None) -> Any:
    """The CALL of a queued record (a TransactionEvent gets ``seq_no``); KeyError/TypeError if not ours."""
    payload = dict(record.payload)
    if record.action == "TransactionEvent":
        payload["seq_no"] = seq_no
    return CALLS[record.action](**payload)


async def check(request: Any) -> str | None:
    """None if ``request`` passes the OCPP 2.0.1 schema as the library checks it when sending; else why not."""
    try:
        payload = remove_nones(snake_to_camel_case(serialize_as_dict(request)))
        await validate_payload(Call("local-check", type(request).__name__, payload), OCPP_VERSION)
    except (TypeError, ValueError) as exc:
        return _short(f"not a {type(request).__name__} payload: {exc}")
    except OCPPError as exc:
        failed = exc.__cause__ or exc.__context__
        detail = getattr(failed, "message", None) or exc.description
        return _short(f"fails the OCPP 2.0.1 schema ({exc.code}): {detail}")
    return None


async def call_problem(record: OutboxRecord, seq_no: int | None) -> tuple[Any, str | None]:
    """(the CALL, None), or (None, why it cannot be sent) in one short line."""
    try:
        request = call_for(record, seq_no)
    except KeyError as exc:
        return None, f"unknown action or field {exc}"
    except (TypeError, ValueError) as exc:
        return None, _short(f"not a {record.action} payload: {exc}")
    problem = await check(request)
    return (None, problem) if problem is not None else (request, None)


def _short(text: str) -> str:
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."
