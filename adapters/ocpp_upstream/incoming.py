"""What the CSMS's requests get before any handler runs: the CALLERROR for an action the gateway
does not carry out, and silence while the CSMS has the charge point Rejected.

The ``ocpp`` library (2.1) answers a 1.6 action without a handler with ``NotImplemented`` and an
action OCPP 1.6 does not know with ``NotSupported``: OCPP-J 1.6 Table 7 says the opposite
(NotImplemented = "Requested Action is not known by receiver", NotSupported = "Requested Action
is recognized but not supported by the receiver"; the library's issue #493). It also logs such a
request, and any request whose payload fails the schema, as an ERROR with a traceback: one line
says as much (the CSMS asking for GetDiagnostics is not a fault of the gateway's).

OCPP 1.6, 4.2: "While Rejected, the Charge Point SHALL NOT respond to any Central System initiated
message. the Central System SHOULD NOT initiate any." So while the last BootNotification was
answered Rejected (and no earlier one of this process was Accepted), a request gets no answer at
all (the CSMS's own timeout ends it), rather than a CALLERROR that would be an answer too.
"""

from __future__ import annotations

from ocpp.exceptions import NotImplementedError as NotImplementedCallError  # not the builtin
from ocpp.exceptions import NotSupportedError, OCPPError
from ocpp.v16.enums import Action

OCPP16_ACTIONS = frozenset(action.value for action in Action)
MAX_NAME = 60  # characters of a foreign action name quoted in a CALLERROR or the log


def short(text: object, limit: int = MAX_NAME) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def unsupported_action(action: str) -> OCPPError:
    """The CALLERROR for a request without a handler, with OCPP-J 1.6's codes and descriptions."""
    if action in OCPP16_ACTIONS:
        return NotSupportedError(
            description="Requested Action is recognized but not supported by the receiver",
            details={"cause": f"{action} is not supported by this charge point"},
        )
    return NotImplementedCallError(
        description="Requested Action is not known by receiver",
        details={"cause": f"{short(action)} is not an OCPP 1.6 action"},
    )


def unanswered(registration: str, accepted: bool) -> bool:
    """Whether a CSMS request goes unanswered: while the last BootNotification was answered
    Rejected and none since (``accepted``: the charge point is Accepted at the moment; a
    triggered BootNotification answered Rejected after that leaves it so, see triggered.py)."""
    return registration == "Rejected" and not accepted
