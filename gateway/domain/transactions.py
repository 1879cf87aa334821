"""The charging-session state machine of one connector: pure, no I/O, no protocol frames.

A Modbus charger knows nothing of transactions; the gateway derives them from what the charger
does (a car plugs in, an RFID card is shown, the car leaves) and from what the back office asks
(remote start and stop). Each input returns the effects the outside must carry out, in order:
ask for authorisation, record a start or a stop (with the billing register's integer Wh and the
time of the reading), and enable or disable the charger. The charger is enabled only once a start
is authorised, and disabled as soon as the session ends or its authorisation is withdrawn.

Energy here is always the connector's billing register (a lifetime counter in Wh, the charger's
own or an assigned meter's); a per-session counter must never be passed in.
"""

from __future__ import annotations

import itertools
import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class AuthPolicy(StrEnum):
    """How a session on a connector gets its authorisation."""

    FREE = "free"  # a configured id tag, the session starts when a car plugs in
    REMOTE = "remote"  # the back office starts it (RemoteStartTransaction)
    LOCAL_LIST = "local_list"  # an RFID card read by the charger, checked by the gateway


class AuthStatus(StrEnum):
    ACCEPTED = "accepted"
    BLOCKED = "blocked"
    EXPIRED = "expired"
    INVALID = "invalid"
    CONCURRENT_TX = "concurrent_tx"


class StopReason(StrEnum):
    """Why a session ended, in the gateway's words; adapters map these to their protocol."""

    EV_DISCONNECTED = "ev_disconnected"
    LOCAL = "local"  # a card shown again at the charger
    REMOTE = "remote"
    POWER_LOSS = "power_loss"
    REBOOT = "reboot"
    SOFT_RESET = "soft_reset"
    HARD_RESET = "hard_reset"
    DEAUTHORIZED = "deauthorized"  # the back office rejected the id tag after the start
    EMERGENCY_STOP = "emergency_stop"
    OTHER = "other"


# -- effects: what the outside has to do --------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Authorize:
    """Ask whether ``id_tag`` may charge; answer with ``TransactionMachine.on_authorization``."""

    connector_id: int
    id_tag: str


@dataclass(frozen=True, slots=True)
class StartTransaction:
    """Record the start; ``meter_start_wh`` and ``started_at`` come from one billing-register reading."""

    connector_id: int
    local_ref: str
    id_tag: str
    meter_start_wh: int
    started_at: datetime


@dataclass(frozen=True, slots=True)
class StopTransaction:
    """Record the end of the session that started under ``local_ref``."""

    connector_id: int
    local_ref: str
    id_tag: str
    meter_stop_wh: int
    stopped_at: datetime
    reason: StopReason


@dataclass(frozen=True, slots=True)
class EnableCharging:
    """Allow (or stop) the charger's output on this connector."""

    connector_id: int
    enabled: bool


Effect = Authorize | StartTransaction | StopTransaction | EnableCharging


@dataclass(frozen=True, slots=True)
class Transaction:
    """A session under way: what its StopTransaction will need."""

    local_ref: str
    id_tag: str
    meter_start_wh: int
    started_at: datetime


class Phase(StrEnum):
    IDLE = "idle"
    AUTHORIZING = "authorizing"  # waiting for an authorisation answer
    AUTHORIZED = "authorized"  # authorised, waiting for the car to plug in
    ACTIVE = "active"


_refs = itertools.count(1)
_RUN = secrets.token_hex(3)  # this process: a counter alone starts again after a restart


def _new_run() -> None:
    global _RUN
    _RUN = secrets.token_hex(3)


os.register_at_fork(after_in_child=_new_run)  # a forked process is another run too


def new_local_ref(connector_id: int, started_at: datetime) -> str:
    """A reference unique across restarts, to match messages before the CSMS's id exists.

    The references of sessions from before a restart live on in the outbox and the session
    ledger; a new session in the same second on the same connector must never share one."""
    return f"c{connector_id}-{started_at.strftime('%Y%m%dT%H%M%S')}-{_RUN}-{next(_refs)}"


class TransactionMachine:
    """Sessions of one connector. Every ``on_*`` method returns the effects to carry out, in order."""

    def __init__(self, connector_id: int, policy: AuthPolicy, free_id_tag: str | None = None) -> None:
        if policy is AuthPolicy.FREE and not free_id_tag:
            raise ValueError("the free policy needs an id tag to start sessions with")
        self.connector_id = connector_id
        self.policy = policy
        self.free_id_tag = free_id_tag
        self.phase = Phase.IDLE
        self.plugged = False
        self.pending_id_tag: str | None = None  # authorising or authorised, not started yet
        self.authorized_at: datetime | None = None  # when an authorised start began to wait for the car
        self.transaction: Transaction | None = None

    # -- what the charger does -----------------------------------------------------------------
    def on_plugged(self, energy_wh: int, at: datetime) -> list[Effect]:
        """A car was connected (IEC 61851 state A -> B/C)."""
        self.plugged = True
        if self.phase is Phase.AUTHORIZED:
            return self._start(energy_wh, at)
        if self.phase is Phase.IDLE and self.policy is AuthPolicy.FREE:
            assert self.free_id_tag is not None
            self.pending_id_tag = self.free_id_tag
            return self._start(energy_wh, at)
        return []

    def on_unplugged(self, energy_wh: int, at: datetime) -> list[Effect]:
        """The car left (state -> A): a running session ends with EVDisconnected."""
        self.plugged = False
        if self.phase is Phase.ACTIVE:
            return self._stop(energy_wh, at, StopReason.EV_DISCONNECTED)
        return []

    def on_id_tag(self, id_tag: str, energy_wh: int, at: datetime) -> list[Effect]:
        """A card was shown at the charger: start a session, or end the one it started."""
        if self.policy is not AuthPolicy.LOCAL_LIST:
            return []
        if self.phase is Phase.ACTIVE:
            assert self.transaction is not None
            if id_tag == self.transaction.id_tag:
                return self._stop(energy_wh, at, StopReason.LOCAL)
            return []  # another card: no parent-id support, it cannot end someone else's session
        if self.phase is Phase.IDLE:
            self.phase = Phase.AUTHORIZING
            self.pending_id_tag = id_tag
            return [Authorize(self.connector_id, id_tag)]
        return []

    # -- what the back office (or the local list) answers ------------------------------------------
    def on_authorization(self, id_tag: str, status: AuthStatus, energy_wh: int, at: datetime) -> list[Effect]:
        """The answer to an Authorize (from the CSMS, the local list or the cache)."""
        if self.phase is not Phase.AUTHORIZING or id_tag != self.pending_id_tag:
            return []  # a late or foreign answer
        if status is not AuthStatus.ACCEPTED:
            self._reset()
            return []
        self.phase = Phase.AUTHORIZED
        self.authorized_at = at
        return self._start(energy_wh, at) if self.plugged else []

    def on_remote_start(
        self, id_tag: str, authorize_first: bool, energy_wh: int, at: datetime
    ) -> tuple[bool, list[Effect]]:
        """RemoteStartTransaction: (accepted, effects). Rejected when a session is already running."""
        if self.phase is not Phase.IDLE:
            return False, []
        self.pending_id_tag = id_tag
        if authorize_first:
            self.phase = Phase.AUTHORIZING
            return True, [Authorize(self.connector_id, id_tag)]
        self.phase = Phase.AUTHORIZED
        self.authorized_at = at
        return True, self._start(energy_wh, at) if self.plugged else []

    def on_remote_stop(self, energy_wh: int, at: datetime) -> tuple[bool, list[Effect]]:
        """RemoteStopTransaction for this connector's session: (accepted, effects)."""
        if self.phase is not Phase.ACTIVE:
            return False, []
        return True, self._stop(energy_wh, at, StopReason.REMOTE)

    def on_start_rejected(self, energy_wh: int, at: datetime, stop_on_invalid_id: bool) -> list[Effect]:
        """StartTransaction.conf said the id tag is not accepted.

        With StopTransactionOnInvalidId the session ends (DeAuthorized); without it the session
        goes on but the charger stops delivering energy, as OCPP 1.6 asks.
        """
        if self.phase is not Phase.ACTIVE:
            return []
        if stop_on_invalid_id:
            return self._stop(energy_wh, at, StopReason.DEAUTHORIZED)
        return [EnableCharging(self.connector_id, False)]

    def stop(self, energy_wh: int, at: datetime, reason: StopReason) -> list[Effect]:
        """End the running session for a reason of the gateway's own (reset, power loss, fault)."""
        if self.phase is Phase.ACTIVE:
            return self._stop(energy_wh, at, reason)
        self._reset()
        return []

    def expire(self, now: datetime, timeout_s: float) -> bool:
        """Drop an authorisation whose car did not arrive within ``timeout_s`` (ConnectionTimeOut)."""
        waited = self.phase is Phase.AUTHORIZED and self.authorized_at is not None
        if waited and (now - self.authorized_at).total_seconds() >= timeout_s:  # type: ignore[operator]
            self._reset()
            return True
        return False

    # -- internals ---------------------------------------------------------------------------------
    def _start(self, energy_wh: int, at: datetime) -> list[Effect]:
        assert self.pending_id_tag is not None
        transaction = Transaction(new_local_ref(self.connector_id, at), self.pending_id_tag, energy_wh, at)
        self.transaction = transaction
        self.pending_id_tag = None
        self.phase = Phase.ACTIVE
        return [
            StartTransaction(self.connector_id, transaction.local_ref, transaction.id_tag, energy_wh, at),
            EnableCharging(self.connector_id, True),
        ]

    def _stop(self, energy_wh: int, at: datetime, reason: StopReason) -> list[Effect]:
        transaction = self.transaction
        assert transaction is not None
        self._reset()
        return [
            EnableCharging(self.connector_id, False),
            StopTransaction(self.connector_id, transaction.local_ref, transaction.id_tag, energy_wh, at, reason),
        ]

    def _reset(self) -> None:
        self.phase = Phase.IDLE
        self.pending_id_tag = None
        self.authorized_at = None
        self.transaction = None
