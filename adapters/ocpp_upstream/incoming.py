"""What the CSMS's requests get before any handler runs: the CALLERROR for an action the gateway
does not carry out, and silence while the CSMS has the charge point Rejected.

The ``ocpp`` library (2.1) swaps OCPP-J 1.6's NotImplemented and NotSupported (see
adapters/ocpp_callerrors.py, which answers right). It also logs such a request, and any request
whose payload fails the schema, as an ERROR with a traceback: one line says as much (the CSMS
asking for GetDiagnostics is not a fault of the gateway's).

OCPP 1.6, 4.2: "While Rejected, the Charge Point SHALL NOT respond to any Central System initiated
message. the Central System SHOULD NOT initiate any." So while the last BootNotification was
answered Rejected (and no earlier one of this process was Accepted), a request gets no answer at
all (the CSMS's own timeout ends it), rather than a CALLERROR that would be an answer too.
"""

from __future__ import annotations

from adapters.ocpp_link import MAX_NAME, short  # noqa: F401 (the 1.6 modules' names for them)


def unanswered(registration: str, accepted: bool) -> bool:
    """Whether a CSMS request goes unanswered: while the last BootNotification was answered
    Rejected and none since (``accepted``: the charge point is Accepted at the moment; a
    triggered BootNotification answered Rejected after that leaves it so, see triggered.py)."""
    return registration == "Rejected" and not accepted
