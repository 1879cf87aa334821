"""Commands to the Site from the back office, MQTT and the status page: start, stop, availability,
current ceilings.

A part of ``Site`` (a mixin): each command changes the Site's state and emits what the devices
and the upstream must do; none of them talks to a device itself.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from gateway.domain.errors import CommandRejected
from gateway.domain.events import AvailabilityChanged, CurrentCeilingChanged, Event
from gateway.domain.model import Connector
from gateway.domain.ports import Clock, SettingsStore
from gateway.domain.transactions import AuthPolicy, EnableCharging, StopReason
from gateway.services.sessions import DEFAULT_FREE_ID_TAG, Sessions

MAX_CEILING_A = 80.0  # the highest per-phase current a Mode 3 AC connector carries


class SiteCommands:
    """What may be asked of the Site; the state it changes is the Site's own."""

    clock: Clock
    connectors: dict[int, Connector]
    sessions: Sessions
    settings: SettingsStore
    _availability_after_session: dict[int, bool]
    _emit: Callable[[Event], None]
    _update_status: Callable[[Connector, datetime], None]

    @property
    def upstream_connectors(self) -> dict[int, Connector]:
        """The connectors of the site's one charge point (not those of passthrough chargers)."""
        return {cid: c for cid, c in self.connectors.items() if c.upstream}

    def remote_start(self, connector_id: int | None, id_tag: str, authorize_first: bool = False) -> bool:
        """A remote start: True if accepted (the session starts when the car is plugged in; until
        then the connector is taken: Preparing)."""
        accepted = self.sessions.remote_start(connector_id, id_tag, authorize_first, self.clock.now())
        self._refresh_statuses()
        return accepted

    def remote_stop(self, local_ref: str) -> bool:
        """A remote stop of the session recorded under ``local_ref``: True if it was running."""
        return self.sessions.remote_stop(local_ref, self.clock.now())

    def _refresh_statuses(self) -> None:
        """Statuses that follow the sessions' phases, not a poll (a start waiting for its car)."""
        for connector in self.upstream_connectors.values():
            self._update_status(connector, self.clock.now())

    def change_availability(self, connector_id: int, available: bool) -> str:
        """Take a connector (0: all) out of service or back: "Accepted", "Scheduled" (a session is
        running; applied when it ends) or "Rejected" (no such connector)."""
        ours = self.upstream_connectors  # a passthrough charger's availability is its CSMS's business
        targets = list(ours) if connector_id == 0 else [connector_id]
        if any(cid not in ours for cid in targets):
            return "Rejected"
        scheduled = False
        for cid in targets:
            if self.connectors[cid].session_active:
                self._availability_after_session[cid] = available
                scheduled = True
            else:
                self._set_available(cid, available)
        return "Scheduled" if scheduled else "Accepted"

    def _set_available(self, connector_id: int, available: bool) -> None:
        connector = self.connectors[connector_id]
        connector.available = available
        stored = {str(cid): c.available for cid, c in self.connectors.items()}
        self.settings.save("availability", stored)
        if available:
            self.sessions.out_of_service.discard(connector_id)
        else:
            self.sessions.out_of_service.add(connector_id)
            self._emit(EnableCharging(connector_id, False))
        now = self.clock.now()
        self._emit(AvailabilityChanged(connector_id, available, now))
        self._update_status(connector, now)

    def local_start(self, connector_id: int, id_tag: str | None) -> None:
        """Start a session on command (MQTT), as RemoteStartTransaction would: only on connectors
        with the ``remote`` policy (``free`` ones start on plug-in, ``local_list`` ones on a card),
        authorised first like a card. ``id_tag`` defaults to the connector's configured tag.
        Raises ``CommandRejected`` saying why when it cannot."""
        machine = self.sessions.machines.get(connector_id)
        if machine is None:
            raise CommandRejected(f"no connector {connector_id}")
        if machine.policy is not AuthPolicy.REMOTE:
            policy = machine.policy.value
            raise CommandRejected(f"connector {connector_id} has the {policy} policy: only remote ones start so")
        tag = id_tag or machine.free_id_tag or DEFAULT_FREE_ID_TAG
        if not self.remote_start(connector_id, tag, authorize_first=True):
            raise CommandRejected(f"connector {connector_id} is busy or out of service")

    def stop_session(self, connector_id: int, reason: StopReason = StopReason.LOCAL) -> bool:
        """End the session on one connector (a local stop, e.g. over MQTT); False if none runs."""
        return self.sessions.stop_one(connector_id, reason, self.clock.now())

    def set_current_ceiling(self, connector_id: int, current_a: float | None) -> None:
        """Cap ``connector_id`` at ``current_a`` (None: no cap) under any charging profile; kept
        across restarts. Raises ``CommandRejected`` for an unknown connector or a negative value."""
        if connector_id not in self.connectors:
            raise CommandRejected(f"no connector {connector_id}")
        if current_a is not None and not 0 <= current_a <= MAX_CEILING_A:
            raise CommandRejected(f"current_a must be between 0 and {MAX_CEILING_A:g} A, not {current_a:g}")
        self.connectors[connector_id].current_ceiling_a = current_a
        stored = {
            str(cid): c.current_ceiling_a for cid, c in self.connectors.items() if c.current_ceiling_a is not None
        }
        self.settings.save("current_ceilings", stored)
        self._emit(CurrentCeilingChanged(connector_id, current_a))

    def stop_all_sessions(self, reason: StopReason) -> None:
        """End every running session (a reset of the gateway), and every start waiting for its car."""
        self.sessions.stop_all(reason, self.clock.now())
        self._refresh_statuses()
