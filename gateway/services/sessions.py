"""Charging sessions of the whole site: one TransactionMachine per connector, fed by the Site.

The Site tells this service when a car comes or goes (from the IEC 61851 state) and what the
connector's billing register reads; back-office decisions (authorisation answers, remote start
and stop, a rejected start) come in through the Site's command methods. The effects go out as
domain events (``Authorize``, ``StartTransaction``, ``StopTransaction``, ``EnableCharging``) for
the upstream charge point and the device command router.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass
from datetime import datetime

from gateway.domain.model import VehicleState
from gateway.domain.transactions import (
    AuthPolicy,
    AuthStatus,
    Effect,
    EnableCharging,
    Phase,
    StopReason,
    TransactionMachine,
)

log = logging.getLogger(__name__)

DEFAULT_FREE_ID_TAG = "ocpp-gateway"  # the tag free sessions are recorded under unless configured
PLUGGED_STATES = frozenset({VehicleState.B, VehicleState.C, VehicleState.D})


@dataclass(frozen=True, slots=True)
class ConnectorPolicy:
    """How sessions on one connector are authorised; ``id_tag`` is the tag of the ``free`` policy."""

    policy: AuthPolicy = AuthPolicy.FREE
    id_tag: str | None = DEFAULT_FREE_ID_TAG


class Sessions:
    """The session state machines of every connector, and the rules that need more than one."""

    def __init__(
        self,
        connector_ids: list[int],
        policies: Mapping[int, ConnectorPolicy],
        billing_wh: Callable[[int], int | None],
        emit: Callable[[Effect], None],
    ) -> None:
        self._billing_wh = billing_wh
        self._emit = emit
        self.machines = {}
        for connector_id in connector_ids:
            policy = policies.get(connector_id, ConnectorPolicy())
            self.machines[connector_id] = TransactionMachine(connector_id, policy.policy, policy.id_tag)
        self._warned_no_register: set[int] = set()
        self.out_of_service: set[int] = set()  # connectors the operator made unavailable

    def _energy(self, connector_id: int) -> int:
        """The billing register now; 0 (with one warning) for a connector that has none."""
        energy = self._billing_wh(connector_id)
        if energy is None:
            if connector_id not in self._warned_no_register:
                self._warned_no_register.add(connector_id)
                log.warning(
                    "connector %s has no billing register (lifetime energy or an assigned meter): "
                    "its sessions are recorded with meter values 0",
                    connector_id,
                )
            return 0
        return energy

    def _run(self, effects: list[Effect]) -> None:
        for effect in effects:
            self._emit(effect)

    # -- from the charger ------------------------------------------------------------------------
    def vehicle_state(self, connector_id: int, state: VehicleState | None, at: datetime) -> None:
        """A poll saw ``state``; a change between unplugged and plugged drives the session."""
        machine = self.machines.get(connector_id)
        if machine is None or state is None:
            return
        plugged = state in PLUGGED_STATES
        if connector_id in self.out_of_service and machine.transaction is None:
            machine.plugged = plugged  # remembered, but no session starts on an unavailable connector
            return
        if plugged and not machine.plugged:
            self._run(machine.on_plugged(self._energy(connector_id), at))
        elif state is VehicleState.A and machine.plugged:
            self._run(machine.on_unplugged(self._energy(connector_id), at))

    def expire_waiting(self, now: datetime, timeout_s: float) -> list[int]:
        """ConnectionTimeOut: authorised starts whose car did not come are dropped; returns their connectors."""
        expired = []
        for machine in self.machines.values():
            if machine.expire(now, timeout_s):
                log.info(
                    "connector %s: no car within %g s of the authorisation; dropped", machine.connector_id, timeout_s
                )
                expired.append(machine.connector_id)
        return expired

    def awaiting_car(self, connector_id: int) -> bool:
        """A start is authorised, or being authorised, and no session has begun: the connector is taken."""
        machine = self.machines.get(connector_id)
        return machine is not None and machine.phase in (Phase.AUTHORIZING, Phase.AUTHORIZED)

    def device_answers(self, connector_id: int) -> None:
        """The charger (again) answers: outside a session it must not deliver energy unless the
        policy is free (whose session starts with the car anyway)."""
        machine = self.machines.get(connector_id)
        if machine is not None and machine.policy is not AuthPolicy.FREE and machine.transaction is None:
            self._emit(EnableCharging(connector_id, False))

    def id_tag_presented(self, connector_id: int, id_tag: str, at: datetime) -> None:
        machine = self.machines.get(connector_id)
        if machine is not None:
            self._run(machine.on_id_tag(id_tag, self._energy(connector_id), at))

    # -- from the back office --------------------------------------------------------------------
    def authorization(self, connector_id: int, id_tag: str, status: AuthStatus, at: datetime) -> None:
        machine = self.machines.get(connector_id)
        if machine is not None:
            self._run(machine.on_authorization(id_tag, status, self._energy(connector_id), at))

    def remote_start(
        self,
        connector_id: int | None,
        id_tag: str,
        authorize_first: bool,
        at: datetime,
        exclude: Set[int] = frozenset(),
    ) -> bool:
        """RemoteStartTransaction; without a connector the first idle one with a car (or any idle)
        is used, never one of ``exclude`` (a native charger's: only its charger can start it)."""
        if connector_id is None:
            idle = [
                m
                for m in self.machines.values()
                if m.transaction is None
                and m.pending_id_tag is None
                and m.connector_id not in self.out_of_service
                and m.connector_id not in exclude
            ]
            chosen = next((m for m in idle if m.plugged), idle[0] if idle else None)
            if chosen is None:
                return False
            connector_id = chosen.connector_id
        machine = self.machines.get(connector_id)
        if machine is None or connector_id in self.out_of_service:
            return False
        accepted, effects = machine.on_remote_start(id_tag, authorize_first, self._energy(connector_id), at)
        self._run(effects)
        return accepted

    def remote_stop(self, local_ref: str, at: datetime) -> bool:
        machine = self._by_ref(local_ref)
        if machine is None:
            return False
        accepted, effects = machine.on_remote_stop(self._energy(machine.connector_id), at)
        self._run(effects)
        return accepted

    def start_rejected(self, local_ref: str, stop_on_invalid_id: bool, at: datetime) -> None:
        machine = self._by_ref(local_ref)
        if machine is not None:
            energy = self._energy(machine.connector_id)
            self._run(machine.on_start_rejected(energy, at, stop_on_invalid_id))

    def stop_all(self, reason: StopReason, at: datetime) -> None:
        """End every running session (a reset, a shutdown)."""
        for machine in self.machines.values():
            self._run(machine.stop(self._energy(machine.connector_id), at, reason))

    def stop_one(self, connector_id: int, reason: StopReason, at: datetime) -> bool:
        """End the session on ``connector_id``; False if none runs there."""
        machine = self.machines.get(connector_id)
        if machine is None or machine.transaction is None:
            return False
        self._run(machine.stop(self._energy(connector_id), at, reason))
        return True

    def started_at(self, connector_id: int) -> datetime | None:
        """When the session on ``connector_id`` started; None without one."""
        machine = self.machines.get(connector_id)
        return machine.transaction.started_at if machine and machine.transaction else None

    def _by_ref(self, local_ref: str) -> TransactionMachine | None:
        return next((m for m in self.machines.values() if m.transaction and m.transaction.local_ref == local_ref), None)
