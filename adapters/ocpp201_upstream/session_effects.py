"""The Site's session effects as queued TransactionEvents: Started, Ended, and the ends of sessions a
dead process left open.

Every start and stop goes through the durable outbox under the session's local reference, whether
the CSMS is there or not (``offline`` says which). The ledger is written before a Started is
queued, and an Ended is queued before the ledger forgets the session is open: a kill at any point
leaves either nothing to send or a session the next start ends itself (PowerLoss, or Reboot after
a clean stop) with the last register and time written down for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from adapters.ocpp201_upstream.ledger import Ledger201, Session201
from adapters.ocpp201_upstream.mapping import charging_state
from adapters.ocpp201_upstream.transaction_events import ended_payload, started_payload, state_changed_payload
from gateway.domain.events import ConnectorStatusChanged, SessionStoppedAtRestart
from gateway.domain.outbox import NewRecord, RecordKind
from gateway.domain.transactions import StartTransaction, StopReason, StopTransaction
from gateway.services.outbox import Outbox
from gateway.services.site import Site

log = logging.getLogger(__name__)

LOCAL_TOKEN = "ISO14443"  # a card shown at a charger (RFID)
CENTRAL_TOKEN = "Central"  # a tag the gateway or the CSMS gave (free charging, remote start)


class SessionFeed:
    """Turns StartTransaction/StopTransaction effects into queued TransactionEvents."""

    def __init__(self, site: Site, ledger: Ledger201, outbox: Outbox, online: Callable[[], bool]) -> None:
        self.site = site
        self.ledger = ledger
        self.outbox = outbox
        self._online = online
        self.remote_starts: dict[int | None, tuple[str, str, int]] = {}  # EVSE -> (id tag, token type, remoteStartId)
        self.card_tags: dict[int, str] = {}  # EVSE -> the id tag a card showed (Authorize), until its start
        self._charging_states: dict[str, str] = {}  # local ref -> the chargingState last queued
        self._last_status: dict[int, ConnectorStatusChanged] = {}  # EVSE -> its last status change

    def origin(self, start: StartTransaction) -> tuple[str, str, int | None]:
        """What started the domain's session: (triggerReason, idToken type, remoteStartId)."""
        remote = self.remote_starts.get(start.connector_id) or self.remote_starts.get(None)
        if remote is not None and remote[0] == start.id_tag:
            self.remote_starts = {k: v for k, v in self.remote_starts.items() if v is not remote}
            return "RemoteStart", remote[1], remote[2]
        if self._card_shown(start) or self.site.native.owns(start.connector_id):
            # (a native charger's own start: it authorised the card itself, from its list or cache)
            return "Authorized", LOCAL_TOKEN, None
        return "CablePluggedIn", CENTRAL_TOKEN, None  # free charging: the car plugged in, the configured tag

    def started(self, start: StartTransaction, origin: tuple[str, str, int | None] | None = None) -> None:
        trigger, token_type, remote_start_id = origin or self.origin(start)
        self.ledger.started(start, token_type, remote_start_id)
        self.opened(start.local_ref)
        payload = started_payload(start, trigger, token_type, remote_start_id, offline=not self._online())
        at = payload["timestamp"]
        self.outbox.enqueue(NewRecord(RecordKind.START, "TransactionEvent", payload, at, start.local_ref))
        if (last := self._last_status.get(start.connector_id)) is not None:  # a state reached before the start
            self.status_changed(replace(last, changed_at=max(last.changed_at, start.started_at)))

    def online(self) -> bool:
        return self._online()

    def opened(self, local_ref: str, state: str = "EVConnected") -> None:
        """A transaction begins (its car connected) or says ``state`` itself: no Updated repeats it."""
        self._charging_states[local_ref] = state

    def _card_shown(self, start: StartTransaction) -> bool:
        """Whether ``start``'s tag is the card last shown at its EVSE; a native charger's Authorize
        names no connector (OCPP 1.6), so a card shown at any of its EVSEs counts."""
        native = self.site.native.owns(start.connector_id)
        where = self.site.native.connectors_of(start.connector_id) if native else [start.connector_id]
        for evse_id in where:
            if self.card_tags.get(evse_id) == start.id_tag:
                del self.card_tags[evse_id]
                return True
        self.card_tags.pop(start.connector_id, None)
        return False

    def status_changed(self, change: ConnectorStatusChanged) -> None:
        """A running session's chargingState changed (Charging, SuspendedEV...): an Updated with
        triggerReason ChargingStateChanged, since 2.0.1's StatusNotification no longer says it.
        Queued as a kept kind (never thinned): it dates the idle time a CSMS may bill."""
        self._last_status[change.connector_id] = change
        ref = self.ledger.running.get(change.connector_id)
        state = charging_state(change.status)
        if ref is None or state is None or self._charging_states.get(ref) == state:
            return
        self._charging_states[ref] = state
        if self.ledger.register_seen(ref, None, change.changed_at):  # on disk before it is queued: an
            self.ledger.save()  # Ended after a kill is never stamped before an event of its session
        payload = state_changed_payload(ref, state, change.changed_at, offline=not self._online())
        self.outbox.enqueue(NewRecord(RecordKind.ALIGNED, "TransactionEvent", payload, payload["timestamp"], ref))

    def stopped(
        self, stop: StopTransaction, *, offline: bool | None = None, reasons: tuple[str, str] | None = None
    ) -> None:
        """Queue the Ended first, then mark the session closed (a kill in between: see the module doc)."""
        session = self.ledger.sessions.get(stop.local_ref)
        token_type = session.token_type if session is not None else CENTRAL_TOKEN
        offline = not self._online() if offline is None else offline
        payload = ended_payload(stop, token_type, offline=offline, reasons=reasons)
        self.outbox.enqueue(
            NewRecord(RecordKind.STOP, "TransactionEvent", payload, payload["timestamp"], stop.local_ref)
        )
        self.ledger.closed(stop.local_ref, stop.connector_id)
        self._charging_states.pop(stop.local_ref, None)

    def stop_orphans(self, clean_shutdown: bool) -> None:
        """End the sessions the last process left open (Reboot after a clean stop, else PowerLoss)."""
        reason = StopReason.REBOOT if clean_shutdown else StopReason.POWER_LOSS
        queued = {(info.kind, info.local_ref) for info in self.outbox.store.index()}
        for orphan in self.ledger.left_open_by_last_run():
            ref = orphan.local_ref
            if (RecordKind.STOP, ref) in queued:  # killed between queueing its Ended and closing it
                self.ledger.closed(ref, orphan.connector_id)
            elif (RecordKind.START, ref) not in queued and orphan.next_seq_no == 0:
                log.info("EVSE %s: session %s never reached the queue; nothing to end", orphan.connector_id, ref)
                self.ledger.finished(ref)
            else:
                self._end_orphan(orphan, reason)

    def _end_orphan(self, orphan: Session201, reason: StopReason) -> None:
        stopped_at = datetime.fromisoformat(orphan.last_register_at)
        stop = StopTransaction(
            orphan.connector_id, orphan.local_ref, orphan.id_tag, orphan.last_register_wh, stopped_at, reason
        )
        log.warning(
            "EVSE %s: session %s was open when the gateway stopped; ended (%s) at %s Wh",
            orphan.connector_id,
            orphan.local_ref,
            reason.value,
            orphan.last_register_wh,
        )
        self.stopped(stop, offline=True)  # it ended while the station was down
        domain_ref = orphan.domain_ref if orphan.window else orphan.local_ref  # a transaction wider than the session
        if domain_ref is not None:  # (tx_points.py) tells the session's record its own reference
            self.site.request(SessionStoppedAtRestart(replace(stop, local_ref=domain_ref)))
