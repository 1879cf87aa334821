"""Reading a charger's frames strictly, and the CALLERROR each kind of bad frame earns (OCPP-J 1.6, 4.2.3).

What ``ocpp`` 2.1.0's ``ChargePoint.route_message`` does with each kind, and what we do instead:

======================================  ========================================  ==================================
frame                                   the library                               here
======================================  ========================================  ==================================
not JSON (or not UTF-8)                 logs a traceback with the whole frame,    FormationViolation if it starts
                                        answers nothing                           ``[2,"<id>",``; else one log line
over 4300 digits, nesting too deep      ValueError / RecursionError escape:       as "not JSON"
                                        the connection ends
JSON but not an array, ``[]``           traceback, no answer                      one log line
``[2]``, ``[2,"id"]``, 5 elements       traceback, no answer (id is lost)         FormationViolation (if an id)
unknown MessageTypeId                   traceback, no answer                      FormationViolation (if an id)
message id not a string                 answers with it as it came (``[3,11]``)   one log line (cannot answer)
action not a string                     ``[1]``: TypeError ends the connection    FormationViolation
payload not an object                   TypeConstraintViolation                   FormationViolation
unknown action                          NotSupported (codes swapped, see below)   NotImplemented
1.6 action we do not handle             NotImplemented                            NotSupported
schema: type, maxLength                 TypeConstraintViolation                   same
schema: required                        ProtocolError                             same
schema: additionalProperties            FormatViolation (not a 1.6 code)          FormationViolation
schema: enum, minimum, pattern, ...     FormatViolation                           PropertyConstraintViolation
schema: minItems, maxItems              FormatViolation                           OccurenceConstraintViolation
malformed or unasked CALLRESULT/ERROR   queued for a ``call()`` that may never    one log line (a response is never
                                        come (and stale ones pile up)             answered)
======================================  ========================================  ==================================

OCPP-J 1.6 Table 7: NotImplemented = "Requested Action is not known by receiver", NotSupported =
"recognized but not supported"; the library has the two the other way round (its issue #493).
The library's errorDetails echo the whole frame and schema; ours carry a short ``cause``.
A frame over ``max_size`` never gets here: websockets closes the connection with 1009.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ocpp.exceptions import (
    FormationViolationError,
    OccurenceConstraintViolationError,
    OCPPError,
    PropertyConstraintViolationError,
    ProtocolError,
    TypeConstraintViolationError,
)
from ocpp.messages import Call, CallError, CallResult, validate_payload

from adapters.ocpp_callerrors import unsupported_action

OCPP_VERSION = "1.6"
MAX_UNIQUE_ID = 36  # OCPP-J: the message id is a string of at most 36 characters
MAX_CAUSE = 200  # characters of errorDetails.cause and of names quoted in the log
MESSAGE_TYPES = (Call.message_type_id, CallResult.message_type_id, CallError.message_type_id)  # 2, 3, 4
# The start of a CALL whose JSON is broken further on: its id can still be answered.
_CALL_PREFIX = re.compile(r'\s*\[\s*2\s*,\s*"([^"\\]{1,' + str(MAX_UNIQUE_ID) + r'})"\s*,')
# The CALLERROR for a schema failure, by the JSON-schema keyword that failed.
_BY_KEYWORD: dict[str, type[OCPPError]] = {
    "type": TypeConstraintViolationError,
    "maxLength": TypeConstraintViolationError,  # CiStringN: the length is part of the data type
    "minLength": TypeConstraintViolationError,
    "required": ProtocolError,  # "Payload for Action is incomplete"
    "additionalProperties": FormationViolationError,
    "minItems": OccurenceConstraintViolationError,
    "maxItems": OccurenceConstraintViolationError,
    "enum": PropertyConstraintViolationError,
    "minimum": PropertyConstraintViolationError,
    "maximum": PropertyConstraintViolationError,
    "exclusiveMinimum": PropertyConstraintViolationError,
    "exclusiveMaximum": PropertyConstraintViolationError,
    "multipleOf": PropertyConstraintViolationError,
    "pattern": PropertyConstraintViolationError,
    "format": PropertyConstraintViolationError,
}


@dataclass(frozen=True)
class BadFrame:
    """A frame that cannot be handled: answered with ``error`` if ``unique_id`` could be read."""

    unique_id: str | None  # None: nobody to answer (no readable id, or a response)
    error: OCPPError
    reason: str  # for the log: what was wrong, never the frame's content (it may hold id tags)


Frame = Call | CallResult | CallError | BadFrame


def short(text: object, limit: int = MAX_CAUSE) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _formation(cause: str) -> FormationViolationError:
    return FormationViolationError(details={"cause": cause})


def read_frame(raw: str | bytes) -> Frame:
    """Parse one websocket message into a Call, a response, or a BadFrame saying what is wrong."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            return BadFrame(None, _formation("not UTF-8"), "a binary frame that is not UTF-8 text")
    try:
        message = json.loads(raw)
    except (ValueError, RecursionError):  # JSONDecodeError, ints over 4300 digits, nesting too deep
        prefix = _CALL_PREFIX.match(raw)
        return BadFrame(prefix.group(1) if prefix else None, _formation("not valid JSON"), "not valid JSON")
    if not isinstance(message, list) or not message:
        what = "an empty array" if message == [] else f"JSON {type(message).__name__}, not an array"
        return BadFrame(None, _formation(what), what)
    kind = message[0]
    unique_id = message[1] if len(message) > 1 and isinstance(message[1], str) else None
    if type(kind) is not int or kind not in MESSAGE_TYPES:
        cause = f"MessageTypeId {short(json.dumps(kind), 20)} is not 2, 3 or 4"
        return BadFrame(unique_id, _formation(cause), cause)
    if kind == Call.message_type_id:
        return _call(message, unique_id)
    return _response(message, unique_id)


def _call(message: list[Any], unique_id: str | None) -> Call | BadFrame:
    if unique_id is None:
        return BadFrame(None, _formation("no message id"), "a CALL without a string message id")
    problem = None
    if len(message) != 4:
        problem = f"a CALL has 4 elements, not {len(message)}"
    elif not 0 < len(unique_id) <= MAX_UNIQUE_ID:
        problem = f"the message id must be 1 to {MAX_UNIQUE_ID} characters"
    elif not isinstance(message[2], str):
        problem = "the action must be a string"
    elif not isinstance(message[3], dict):
        problem = "the payload must be a JSON object"
    if problem is not None:
        return BadFrame(unique_id, _formation(problem), problem)
    return Call(unique_id, message[2], message[3])


def _response(message: list[Any], unique_id: str | None) -> CallResult | CallError | BadFrame:
    result = message[0] == CallResult.message_type_id
    if unique_id is not None and result and len(message) == 3 and isinstance(message[2], dict):
        return CallResult(unique_id, message[2])
    texts = len(message) == 5 and all(isinstance(part, str) for part in message[2:4])
    error_shape = texts and isinstance(message[4], dict)
    if unique_id is not None and not result and error_shape:
        return CallError(unique_id, message[2], message[3], message[4])
    name = "CALLRESULT" if result else "CALLERROR"
    return BadFrame(None, _formation(f"malformed {name}"), f"a malformed {name} (responses are never answered)")


def unknown_action(action: str) -> OCPPError:
    """The CALLERROR for an action without a handler, with OCPP-J 1.6's codes and descriptions."""
    return unsupported_action(action, "this central system")


async def schema_error(call: Call) -> OCPPError | None:
    """The CALLERROR the payload earns against the OCPP 1.6 schema (the ocpp library's), or None."""
    try:
        await validate_payload(call, OCPP_VERSION)
    except OCPPError as error:
        return ocpp16_error(error)
    return None


def ocpp16_error(error: OCPPError) -> OCPPError:
    """``error`` as OCPP 1.6 names it, with a short cause (the library echoes the frame and the schema)."""
    # The library raises inside ``except jsonschema.ValidationError``: that error says which keyword
    # failed. Read by duck typing, so jsonschema (the library's dependency) is not ours too.
    failed = error.__cause__ or error.__context__
    keyword = getattr(failed, "validator", None)
    if isinstance(keyword, str):
        code = _BY_KEYWORD.get(keyword, FormationViolationError)
        return code(details={"cause": short(getattr(failed, "message", keyword))})
    cause = short(error.details.get("cause", "")) if isinstance(error.details, dict) else ""
    if error.code == "FormatViolation":  # OCPP 2.0.1's spelling; 1.6 says FormationViolation
        return FormationViolationError(details={"cause": cause})
    if error.code == "OccurrenceConstraintViolation":  # likewise: 1.6 says Occurence
        return OccurenceConstraintViolationError(details={"cause": cause})
    return type(error)(description=error.description, details={"cause": cause})


def call_error_frame(unique_id: str, error: OCPPError) -> str:
    return CallError(unique_id, error.code, error.description, error.details).to_json()
