"""Sessions towards the CSMS: the domain's session effects as OCPP 1.6 calls, and the ids they get.

The CSMS numbers transactions (StartTransaction.conf); the gateway numbers them first with a
local reference, so that a stop, a remote stop or meter values can be matched before (or
without) the CSMS's answer. Pending calls wait in order in ``TransactionLog.pending`` while the
CSMS is away; issue 6 makes that queue durable.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ocpp.v16 import call, datatypes, enums

from adapters.ocpp_upstream.local_list import AUTH_STATUS_FROM_OCPP
from gateway.domain.model import iso_utc
from gateway.domain.transactions import AuthStatus, StartTransaction, StopReason, StopTransaction

REASON = {
    StopReason.EV_DISCONNECTED: enums.Reason.ev_disconnected,
    StopReason.LOCAL: enums.Reason.local,
    StopReason.REMOTE: enums.Reason.remote,
    StopReason.POWER_LOSS: enums.Reason.power_loss,
    StopReason.REBOOT: enums.Reason.reboot,
    StopReason.SOFT_RESET: enums.Reason.soft_reset,
    StopReason.HARD_RESET: enums.Reason.hard_reset,
    StopReason.DEAUTHORIZED: enums.Reason.de_authorized,
    StopReason.EMERGENCY_STOP: enums.Reason.emergency_stop,
    StopReason.OTHER: enums.Reason.other,
}


UNKNOWN_TRANSACTION_ID = -1  # OCPP 1.6 errata 3.18: the start never got an id from the CSMS


def auth_status(id_tag_info: dict[str, object]) -> AuthStatus:
    """The domain status of an idTagInfo (snake_case, as the ocpp library hands it over)."""
    status = str(id_tag_info.get("status"))
    known = status in set(enums.AuthorizationStatus)
    return AUTH_STATUS_FROM_OCPP[enums.AuthorizationStatus(status)] if known else AuthStatus.INVALID


def _register(value_wh: int, at: str, context: str) -> datatypes.MeterValue:
    return datatypes.MeterValue(
        timestamp=at,
        sampled_value=[
            datatypes.SampledValue(
                value=str(value_wh),
                context=context,
                measurand="Energy.Active.Import.Register",
                location="Outlet",
                unit="Wh",
            )
        ],
    )


def start_call(start: StartTransaction) -> call.StartTransaction:
    return call.StartTransaction(
        connector_id=start.connector_id,
        id_tag=start.id_tag,
        meter_start=start.meter_start_wh,
        timestamp=iso_utc(start.started_at),
    )


def stop_call(
    stop: StopTransaction, start: StartTransaction | None, transaction_id: int | None
) -> call.StopTransaction:
    """StopTransaction with transactionData: the register at Transaction.Begin and Transaction.End."""
    data = []
    if start is not None:
        data.append(_register(start.meter_start_wh, iso_utc(start.started_at), "Transaction.Begin"))
    data.append(_register(stop.meter_stop_wh, iso_utc(stop.stopped_at), "Transaction.End"))
    return call.StopTransaction(
        meter_stop=stop.meter_stop_wh,
        timestamp=iso_utc(stop.stopped_at),
        transaction_id=transaction_id if transaction_id is not None else UNKNOWN_TRANSACTION_ID,
        reason=REASON[stop.reason],
        id_tag=stop.id_tag,
        transaction_data=data,
    )


@dataclass
class TransactionLog:
    """Calls waiting for the CSMS, in order, and what is known of each session."""

    pending: deque[StartTransaction | StopTransaction] = field(default_factory=deque)
    starts: dict[str, StartTransaction] = field(default_factory=dict)  # local ref -> its start
    csms_ids: dict[str, int] = field(default_factory=dict)  # local ref -> CSMS transaction id
    running: dict[int, str] = field(default_factory=dict)  # connector -> local ref of its session

    def queue(self, effect: StartTransaction | StopTransaction) -> None:
        if isinstance(effect, StartTransaction):
            self.starts[effect.local_ref] = effect
            self.running[effect.connector_id] = effect.local_ref
        elif self.running.get(effect.connector_id) == effect.local_ref:
            del self.running[effect.connector_id]
        self.pending.append(effect)

    def local_ref(self, transaction_id: int) -> str | None:
        return next((ref for ref, tid in self.csms_ids.items() if tid == transaction_id), None)

    def active_id(self, connector_id: int) -> int | None:
        """The CSMS id of the session running on ``connector_id``, if the CSMS has numbered it."""
        ref = self.running.get(connector_id)
        return self.csms_ids.get(ref) if ref is not None else None

    def finished(self, stop: StopTransaction) -> None:
        """Forget a session once its StopTransaction was delivered."""
        self.starts.pop(stop.local_ref, None)
        self.csms_ids.pop(stop.local_ref, None)
