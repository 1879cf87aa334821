"""Queued billing records as the CALLs that go to the CSMS, checked against OCPP 1.6 before they leave.

A record that the gateway itself cannot turn into a valid CALL (a payload damaged on disk, a
field that no longer fits the schema) must not be sent and retried as if the CSMS had refused
it: ``call_problem`` says what is wrong, and the outbox sets the record aside at once.
"""

from __future__ import annotations

import logging
from typing import Any

from ocpp.charge_point import remove_nones, serialize_as_dict, snake_to_camel_case
from ocpp.exceptions import OCPPError
from ocpp.messages import Call, validate_payload
from ocpp.v16 import call

from adapters.ocpp_upstream.transactions import UNKNOWN_TRANSACTION_ID
from gateway.domain.outbox import OutboxRecord

CALLS: dict[str, Any] = {
    "StartTransaction": call.StartTransaction,
    "StopTransaction": call.StopTransaction,
    "MeterValues": call.MeterValues,
}
log = logging.getLogger(__name__)
OCPP_VERSION = "1.6"
MAX_REASON = 200  # characters of a schema error kept for the log


def call_for(record: OutboxRecord, csms_id: int | None) -> Any:
    """The CALL of a queued record, with the CSMS's transactionId patched in (-1: never numbered).

    Raises ``KeyError``/``TypeError`` for a record that is not one of ours."""
    payload = dict(record.payload)
    if record.local_ref is not None and record.action != "StartTransaction":
        payload["transaction_id"] = csms_id if csms_id is not None else UNKNOWN_TRANSACTION_ID
    return CALLS[record.action](**payload)


async def call_problem(record: OutboxRecord, csms_id: int | None) -> tuple[Any, str | None]:
    """(the CALL, None) if ``record`` makes a CALL that passes the OCPP 1.6 schema as the ``ocpp``
    library will check it when sending; else (None, why not) in one short line."""
    try:
        request = call_for(record, csms_id)
        payload = remove_nones(snake_to_camel_case(serialize_as_dict(request)))
        await validate_payload(Call("local-check", type(request).__name__, payload), OCPP_VERSION)
    except KeyError as exc:
        return None, f"unknown action or field {exc}"
    except (TypeError, ValueError) as exc:
        return None, _short(f"not a {record.action} payload: {exc}")
    except OCPPError as exc:
        failed = exc.__cause__ or exc.__context__
        detail = getattr(failed, "message", None) or exc.description
        return None, _short(f"fails the OCPP 1.6 schema ({exc.code}): {detail}")
    return request, None


def _short(text: str) -> str:
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."
