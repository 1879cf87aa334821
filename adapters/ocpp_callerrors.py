"""The CALLERROR for a request without a handler, with OCPP-J's codes: shared by every OCPP side.

The ``ocpp`` library (2.1) answers a 1.6 action without a handler with ``NotImplemented`` and an
action OCPP 1.6 does not know with ``NotSupported``; OCPP-J 1.6 Table 7 says the opposite
(NotImplemented = "Requested Action is not known by receiver", NotSupported = "Requested Action
is recognized but not supported by the receiver"; the library's issue #493). The local server
(we are a central system) and the upstream charge point (we are a charge point) answer alike.
OCPP-J 2.0.1 (section 4.3) defines the two codes as 1.6 does, and the library swaps them for 2.0.1
too: the 2.0.1 station answers through the same function with ``version="2.0.1"``.
"""

from __future__ import annotations

from ocpp.exceptions import NotImplementedError as NotImplementedCallError  # not the builtin
from ocpp.exceptions import NotSupportedError, OCPPError
from ocpp.v16.enums import Action
from ocpp.v201.enums import Action as Action201

OCPP16_ACTIONS = frozenset(action.value for action in Action)
ACTIONS = {"1.6": OCPP16_ACTIONS, "2.0.1": frozenset(action.value for action in Action201)}
MAX_NAME = 60  # characters of a foreign action name quoted in a CALLERROR


def unsupported_action(action: str, receiver: str, version: str = "1.6") -> OCPPError:
    """The CALLERROR for ``action`` without a handler; ``receiver`` names us in its cause
    ("this charge point", "this central system")."""
    if action in ACTIONS[version]:
        return NotSupportedError(
            description="Requested Action is recognized but not supported by the receiver",
            details={"cause": f"{action} is not supported by {receiver}"},
        )
    name = action if len(action) <= MAX_NAME else action[: MAX_NAME - 3] + "..."
    return NotImplementedCallError(
        description="Requested Action is not known by receiver",
        details={"cause": f"{name} is not an OCPP {version} action"},
    )
