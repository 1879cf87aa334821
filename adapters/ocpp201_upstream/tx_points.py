"""TxCtrlr.TxStartPoint / TxStopPoint: the 2.0.1 transaction as a window around the domain's session.

The domain's session (plugged AND authorised, gateway/domain/transactions.py) is what the gateway
bills; by default the 2.0.1 transaction is exactly that session (TxStartPoint PowerPathClosed,
TxStopPoint EVConnected,Authorized). OCPP 2.0.1 (Part 2, E01 and the TxCtrlr variables of the
appendix) lets a CSMS choose when the transaction starts, at the FIRST of the TxStartPoint
conditions to become true, and when it ends, as soon as ANY TxStopPoint condition is no longer
true. The gateway honours what a charger can tell it:

- EVConnected: a car is plugged in (the Site's ``VehicleConnectionChanged``, with the register read
  by that poll). Started at the plug-in (CablePluggedIn, no idToken); the domain session that
  follows is an Updated with the idToken (Authorized, or RemoteStart); a car that leaves without
  one ends it (EVDisconnected, no energy: the charger was never enabled).
- Authorized: a card, a remote start or free charging authorised the EVSE. With no car yet (the
  domain waits for it), Started at the authorisation with the idToken; a car that never comes
  (TxCtrlr.EVConnectionTimeOut) ends it (Timeout, EVConnectTimeout).
- PowerPathClosed: the domain's session itself.
- EnergyTransfer (start only): the first Charging status of the session; a session that never
  charged is no transaction at all.

As a stop point, EVConnected without Authorized or PowerPathClosed keeps the transaction open
after a card, the CSMS or a rejected token ended the session (an Updated StopAuthorized,
RemoteStop or Deauthorized), until the cable goes. The station's StopTxOnEVSideDisconnect is true,
so an unplug ends every transaction. ParkingBayOccupancy and DataSigned are refused: no device
tells them. Every event still goes through the outbox under the transaction's own reference, and
the ledger keeps it (with the session in it) until its Ended is answered; a transaction open at a
kill is ended at the next start like any other (PowerLoss).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from adapters.ocpp201_upstream.mapping import STOPPED, id_token
from adapters.ocpp201_upstream.session_effects import SessionFeed
from adapters.ocpp201_upstream.transaction_events import started_payload, state_changed_payload
from gateway.domain.events import (
    ConnectorReadingChanged,
    ConnectorStatusChanged,
    MeterReadingChanged,
    VehicleConnectionChanged,
)
from gateway.domain.model import ConnectorStatus
from gateway.domain.outbox import NewRecord, RecordKind
from gateway.domain.transactions import Phase, StartTransaction, StopReason, StopTransaction, new_local_ref
from gateway.services.site import Site

log = logging.getLogger(__name__)

ALL_POINTS = ("ParkingBayOccupancy", "EVConnected", "Authorized", "DataSigned", "PowerPathClosed", "EnergyTransfer")
START_POINTS = ("EVConnected", "Authorized", "PowerPathClosed", "EnergyTransfer")
STOP_POINTS = ("EVConnected", "Authorized", "PowerPathClosed")
DEFAULT_START_POINT = "PowerPathClosed"
DEFAULT_STOP_POINT = "EVConnected,Authorized"
NO_TOKEN = "NoAuthorization"  # the ledger's token type of a transaction nobody authorised yet
AUTHORISATION_ENDED = frozenset({StopReason.LOCAL, StopReason.REMOTE, StopReason.DEAUTHORIZED})
TIMEOUT = ("Timeout", "EVConnectTimeout")

Points = Callable[[], tuple[frozenset[str], frozenset[str]]]  # (start points, stop points) now


def point_list(supported: tuple[str, ...]) -> Callable[[str], str | None]:
    """The SetVariables check of a TxStartPoint / TxStopPoint MemberList: one or more of 2.0.1's
    TxStartStopPointEnumType, each once; a member the gateway cannot tell is UnsupportedParam."""

    def check(text: str) -> str | None:
        items = [item.strip() for item in text.split(",")]
        if not all(items) or len(set(items)) != len(items) or any(item not in ALL_POINTS for item in items):
            return "InvalidValue"
        return None if all(item in supported for item in items) else "UnsupportedParam"

    return check


@dataclass
class Window:
    """One EVSE's open transaction: its reference (transactionId, outbox, ledger) and the domain's
    session in it now (None: none, before the authorisation or after the card stop)."""

    ref: str
    connector_id: int
    domain_ref: str | None = None
    authorized: bool = False  # an authorisation holds (a card, a remote start, free charging)


class TxPoints:
    """Turns the Site's plug-ins, statuses and session starts and stops into transactions."""

    def __init__(self, site: Site, feed: SessionFeed, points: Points) -> None:
        self.site = site
        self.feed = feed
        self.ledger = feed.ledger
        self._points = points
        self.windows: dict[int, Window] = {}  # EVSE -> its open transaction
        self._plugged: dict[int, bool] = {}
        self._held: dict[int, StartTransaction] = {}  # EnergyTransfer: a session that has not charged yet
        self._registers: dict[int, tuple[int, datetime]] = {}  # EVSE -> its billing register, in event order
        self._metered = frozenset(m.connector_id for m in site.meters.values())  # EVSEs billed by a meter

    def take(self, event: object) -> None:
        if isinstance(event, VehicleConnectionChanged):
            self._car(event)
        elif isinstance(event, StartTransaction):
            self._session_started(event)
        elif isinstance(event, StopTransaction):
            self._session_stopped(event)
        elif isinstance(event, ConnectorStatusChanged):
            self._status(event)
        elif isinstance(event, ConnectorReadingChanged | MeterReadingChanged):
            self._reading(event)

    def _register_wh(self, cid: int) -> int | None:
        register = self._registers.get(cid)
        return register[0] if register is not None else None

    def _reading(self, event: ConnectorReadingChanged | MeterReadingChanged) -> None:
        """The register as of this point of the stream (the Site's is the latest poll's): a status
        change that starts or ends a transaction is stamped with the reading that showed it."""
        cid, energy_wh = event.connector_id, event.reading.energy_wh
        if cid is None or energy_wh is None or (isinstance(event, ConnectorReadingChanged) and cid in self._metered):
            return
        guarded = self.site.billing_register(cid)  # the Site's guard (a register gone backwards), if still this poll
        same_poll = guarded is not None and guarded[1] == event.reading.measured_at
        self._registers[cid] = guarded if same_poll and guarded is not None else (energy_wh, event.reading.measured_at)

    def session_of(self, transaction_id: str) -> str | None:
        """The domain session in the transaction the CSMS names ``transaction_id`` (None: none, or
        none in it yet): what a RequestStopTransaction stops, what a native charger's TxProfile names."""
        ref = self.ledger.local_ref(transaction_id)
        return self.domain_ref(ref) if ref is not None else None

    def domain_ref(self, ref: str) -> str | None:
        """The domain's session in transaction ``ref`` (what a RequestStopTransaction stops; None: none)."""
        window = next((w for w in self.windows.values() if w.ref == ref), None)
        return window.domain_ref if window is not None else ref

    def end_without_session(self, reason: StopReason) -> None:
        """End the transactions no domain session is in (a Reset: the domain ended its own), with
        the register last read."""
        for window in [w for w in self.windows.values() if w.domain_ref is None]:
            self._end(window, self._register_wh(window.connector_id), self.site.clock.now(), reason)

    def refused(self, ref: str) -> None:
        """The CSMS refused the idToken of transaction ``ref`` while no session is in it (a
        `Started` at the authorisation, before the car): it ends (DeAuthorized, StopTxOnInvalidId);
        a car that still comes starts a session the CSMS is asked about again."""
        window = next((w for w in self.windows.values() if w.ref == ref and w.domain_ref is None), None)
        if window is not None and window.authorized:
            self._end(window, self._register_wh(window.connector_id), self.site.clock.now(), StopReason.DEAUTHORIZED)

    # -- EVConnected -------------------------------------------------------------------------------
    def _car(self, event: VehicleConnectionChanged) -> None:
        cid = event.connector_id
        self._plugged[cid] = event.connected
        window = self.windows.get(cid)
        if event.connected:
            in_service = cid in self.site.upstream_connectors and cid not in self.site.sessions.out_of_service
            if window is None and "EVConnected" in self._points()[0] and in_service:  # (Inoperative: none)
                self._open(cid, "CablePluggedIn", event.energy_wh, event.at)
        elif window is not None and window.domain_ref is None:  # (a running session's own stop follows)
            self._end(window, event.energy_wh, event.at, StopReason.EV_DISCONNECTED)

    # -- Authorized (before the car) ----------------------------------------------------------------
    def authorized(self, connector_id: int | None, id_tag: str, token_type: str, remote_start_id: int | None) -> None:
        """A card or a RequestStartTransaction was accepted: with the start point Authorized and
        no car yet (the domain waits for it), the transaction starts now, with the idToken."""
        machines = self.site.sessions.machines
        if connector_id is None:  # the domain chose the EVSE
            waiting = (c for c, m in machines.items() if m.phase is Phase.AUTHORIZED and m.pending_id_tag == id_tag)
            connector_id = next(waiting, None)
        machine = machines.get(connector_id) if connector_id is not None else None
        if machine is None or machine.phase is not Phase.AUTHORIZED or "Authorized" not in self._points()[0]:
            return  # started already (the car was there), refused, or not a start point
        if connector_id in self.windows:
            return
        assert connector_id is not None
        register = self.site.billing_register(connector_id)
        trigger = "RemoteStart" if remote_start_id is not None else "Authorized"
        at = self.site.clock.now()
        energy_wh = register[0] if register is not None else None
        self._open(connector_id, trigger, energy_wh, at, id_tag, token_type, remote_start_id)

    # -- the domain's session ----------------------------------------------------------------------
    def _session_started(self, start: StartTransaction) -> None:
        cid = start.connector_id
        window = self.windows.get(cid)
        if window is None:
            if self._points()[0] == {"EnergyTransfer"}:
                self._held[cid] = start  # a transaction once it charges
                return
            self.feed.started(start)
            self.windows[cid] = Window(start.local_ref, cid, start.local_ref, authorized=True)
            return
        if window.domain_ref is not None:  # cannot happen: the domain stops a session before the next
            log.warning("EVSE %s: session %s began inside another; not sent", cid, start.local_ref)
            return
        trigger, token_type, remote_start_id = self.feed.origin(start)
        window.domain_ref = start.local_ref
        window_was_authorized, window.authorized = window.authorized, True
        session = self.ledger.sessions[window.ref]
        token = None
        if not window_was_authorized:  # authorised now (else it was before, and the car came)
            token = id_token(start.id_tag, token_type)
            trigger = "RemoteStart" if trigger == "RemoteStart" else "Authorized"
            session.id_tag, session.token_type = start.id_tag, token_type
            session.remote_start_id = remote_start_id
        else:
            trigger, remote_start_id = "CablePluggedIn", None
        session.domain_ref = start.local_ref
        self.ledger.save()  # the session in the transaction is on disk before its Updated is queued
        self._updated(window, trigger, start.started_at, token, remote_start_id)

    def _session_stopped(self, stop: StopTransaction) -> None:
        cid = stop.connector_id
        if (held := self._held.get(cid)) is not None and held.local_ref == stop.local_ref:
            del self._held[cid]
            log.info("EVSE %s: session %s ended before it charged: no transaction", cid, stop.local_ref)
            return
        window = self.windows.get(cid)
        if window is None or window.domain_ref != stop.local_ref:
            self.feed.stopped(stop)  # a session of no window of this process's: as it is
            return
        stop_points = self._points()[1]
        keep = (
            stop.reason in AUTHORISATION_ENDED
            and "EVConnected" in stop_points
            and not stop_points & {"Authorized", "PowerPathClosed"}
            and self._plugged.get(cid, False)
        )
        if not keep:
            del self.windows[cid]
            self.feed.stopped(replace(stop, local_ref=window.ref))
            return
        window.domain_ref, window.authorized = None, False
        session = self.ledger.sessions[window.ref]
        session.window, session.domain_ref = True, None
        self.ledger.register_seen(window.ref, stop.meter_stop_wh, stop.stopped_at)
        self.ledger.save()
        token = id_token(stop.id_tag, session.token_type)
        self._updated(window, STOPPED[stop.reason][1], stop.stopped_at, token, None)

    # -- statuses: EnergyTransfer, an authorisation whose car never came ---------------------------
    def _status(self, change: ConnectorStatusChanged) -> None:
        cid = change.connector_id
        self.feed.status_changed(change)  # first: a held session replays it when it starts
        held = self._held.get(cid)
        if held is not None and change.status is ConnectorStatus.CHARGING:
            del self._held[cid]
            register = self._registers.get(cid)
            if register is not None and register[0] >= held.meter_start_wh:  # the reading that charges
                held = replace(held, meter_start_wh=register[0], started_at=max(register[1], held.started_at))
            _, token_type, remote_start_id = self.feed.origin(held)
            self.feed.started(held, ("ChargingStateChanged", token_type, remote_start_id))
            self.windows[cid] = Window(held.local_ref, cid, held.local_ref, authorized=True)
            return
        window = self.windows.get(cid)
        if window is None or window.domain_ref is not None or self._plugged.get(cid, False):
            return
        if change.status is ConnectorStatus.AVAILABLE:  # authorised, no car within EVConnectionTimeOut
            self._end(window, self._register_wh(cid), change.changed_at, StopReason.OTHER, TIMEOUT)

    # -- queueing ------------------------------------------------------------------------------------
    def _open(
        self,
        cid: int,
        trigger: str,
        energy_wh: int | None,
        at: datetime,
        id_tag: str = "",
        token_type: str = NO_TOKEN,
        remote_start_id: int | None = None,
    ) -> None:
        """Start a transaction before the domain's session: in the ledger, then queued."""
        ref = new_local_ref(cid, at)
        start = StartTransaction(cid, ref, id_tag, energy_wh if energy_wh is not None else 0, at)
        self.ledger.started(start, token_type, remote_start_id, window=True)
        self.feed.opened(ref)
        online = self.feed.online()
        payload = started_payload(
            start, trigger, token_type, remote_start_id, offline=not online, with_register=energy_wh is not None
        )
        self.feed.outbox.enqueue(NewRecord(RecordKind.START, "TransactionEvent", payload, payload["timestamp"], ref))
        self.windows[cid] = Window(ref, cid, authorized=bool(id_tag))
        log.info("EVSE %s: transaction %s started (%s) before the session", cid, ref, trigger)

    def _updated(
        self, window: Window, trigger: str, at: datetime, token: dict[str, Any] | None, remote_start_id: int | None
    ) -> None:
        """An Updated of the transaction: authorised (with the idToken), its car came, or its
        authorisation ended while the car stays; the car is connected in each case."""
        offline = not self.feed.online()
        payload = state_changed_payload(
            window.ref,
            "EVConnected",
            at,
            offline=offline,
            trigger_reason=trigger,
            token=token,
            remote_start_id=remote_start_id,
        )
        self.feed.opened(window.ref)  # the state it says: a status change to it repeats nothing
        record = NewRecord(RecordKind.ALIGNED, "TransactionEvent", payload, payload["timestamp"], window.ref)
        self.feed.outbox.enqueue(record)

    def _end(
        self,
        window: Window,
        energy_wh: int | None,
        at: datetime,
        reason: StopReason,
        reasons: tuple[str, str] | None = None,
    ) -> None:
        """End a transaction no domain session is in now, with the register read at its end."""
        del self.windows[window.connector_id]
        session = self.ledger.sessions[window.ref]
        stop = StopTransaction(
            window.connector_id,
            window.ref,
            session.id_tag,
            energy_wh if energy_wh is not None else session.last_register_wh,
            at,
            reason,
        )
        self.feed.stopped(stop, reasons=reasons)
