"""The 2.0.1 station's ledger of sessions: what must survive a restart until the CSMS has a session's end.

Per session (by the gateway's local reference, which is also its transactionId): how it started
(connector, id token and its type, remoteStartId, register and time), the latest register and
time sent for it (so a session open when the process died is ended with a real reading), and
its sequence numbers.

seqNo (OCPP 2.0.1: "incremental sequence number, helps with determining if all messages of a
transaction have been received") counts per transaction from 0 (Started). It is given when a
TransactionEvent is sent, not when it is queued: the outbox may thin periodic Updated events or
drop one the CSMS kept refusing, and a number taken by a record that never leaves would be a
gap the CSMS reads as a lost message. The number is written down before the frame leaves, with
the record it was given to (named by a digest of its payload, which stays the same whether the
record waits on disk or, while the disk refuses writes, in memory), so the same record sent again
(a lost link, a kill before the answer) carries the same number: the CSMS sees the numbers in
order, without gaps.

A batch (several queued Updated events in one TransactionEvent, replay_batches.py) is named by its
head's digest, and the ledger also writes down the outbox number of the last record joined to it
(``seq_through``): sent again, the batch is built again only up to that record, so records queued
behind it since do not change what the number was given to.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from adapters.ocpp201_upstream import mapping
from gateway.domain.model import iso_utc
from gateway.domain.ports import SettingsStore
from gateway.domain.transactions import StartTransaction

SECTION = "ocpp201_transactions"


@dataclass
class Session201:
    """One session as the ledger keeps it (JSON-able)."""

    local_ref: str
    connector_id: int
    id_tag: str
    token_type: str
    meter_start_wh: int
    started_at: str
    last_register_wh: int
    last_register_at: str
    remote_start_id: int | None = None
    open: bool = True  # False once its Ended is queued
    next_seq_no: int = 0
    seq_record: str | None = None  # the record (its payload's digest) that took the last number
    seq_record_no: int = 0
    seq_through: int | None = None  # the last outbox record in the batch that took it (None: alone)
    window: bool = False  # a transaction that does not end with the domain's session (tx_points.py)
    domain_ref: str | None = None  # then: the domain's session in it now (None: none)


def record_key(payload: dict[str, Any]) -> str:
    """A queued event's name for the ledger: a digest of its payload (which holds its time, its
    trigger and its values, so two events of one session do not share it)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:20]


class Ledger201:
    """Sessions not yet ended upstream, kept in ``store`` (one section, rewritten on change)."""

    def __init__(self, store: SettingsStore) -> None:
        self._store = store
        stored = store.load(SECTION)
        self.sessions: dict[str, Session201] = {}
        if isinstance(stored, dict):
            for ref, item in stored.items():
                try:
                    self.sessions[str(ref)] = Session201(**item)
                except TypeError:
                    continue  # a damaged entry: the rest still counts
        self.running: dict[int, str] = {}  # connector -> local ref of the session running now

    def left_open_by_last_run(self) -> list[Session201]:
        return [s for s in self.sessions.values() if s.open and s.local_ref not in self.running.values()]

    def started(
        self, start: StartTransaction, token_type: str, remote_start_id: int | None, *, window: bool = False
    ) -> Session201:
        """A transaction begins (``window``: one that does not end with the domain's session), in
        one save: a kill must not leave it half-described."""
        at = iso_utc(start.started_at)
        session = Session201(
            start.local_ref,
            start.connector_id,
            start.id_tag,
            token_type,
            start.meter_start_wh,
            at,
            start.meter_start_wh,
            at,
            remote_start_id,
            window=window,
        )
        self.sessions[start.local_ref] = session
        self.running[start.connector_id] = start.local_ref
        self.save()
        return session

    def register_seen(self, local_ref: str, value_wh: int | None, at: datetime) -> bool:
        """A newer register or time of an open session (saved by the caller with ``save``)."""
        session = self.sessions.get(local_ref)
        if session is None:
            return False
        changed = False
        if value_wh is not None and value_wh > session.last_register_wh:
            session.last_register_wh, changed = value_wh, True
        if at > datetime.fromisoformat(session.last_register_at):
            session.last_register_at, changed = iso_utc(at), True
        return changed

    def closed(self, local_ref: str, connector_id: int) -> None:
        """The session's Ended is queued: no longer open (kept for its sequence numbers)."""
        if self.running.get(connector_id) == local_ref:
            del self.running[connector_id]
        if (session := self.sessions.get(local_ref)) is not None:
            session.open = False
            self.save()

    def finished(self, local_ref: str) -> None:
        """The CSMS answered the session's Ended: forget it."""
        if self.sessions.pop(local_ref, None) is not None:
            self.save()

    def numbered(self, local_ref: str, record_key: str) -> tuple[int, int | None] | None:
        """(seqNo, ``seq_through``) if the record named ``record_key`` took the session's last
        number (it is being sent again); None if it has none yet."""
        session = self.sessions.get(local_ref)
        if session is None or session.seq_record != record_key:
            return None
        return session.seq_record_no, session.seq_through

    def seq_no(self, local_ref: str, record_key: str, through: int | None = None) -> int:
        """The seqNo of the TransactionEvent whose payload digest is ``record_key`` (``record_key``
        below; the same when it is sent again); a new one is written down, with ``through`` (the
        last record of its batch), before it is returned."""
        session = self.sessions.get(local_ref)
        if session is None:  # its ledger entry was lost: number it anew rather than not at all
            session = Session201(
                local_ref, 0, "", "Central", 0, iso_utc(datetime.now().astimezone()), 0, "", open=False
            )
            session.last_register_at = session.started_at
            self.sessions[local_ref] = session
        if session.seq_record == record_key:
            return session.seq_record_no
        number = session.next_seq_no
        session.next_seq_no, session.seq_record, session.seq_record_no = number + 1, record_key, number
        session.seq_through = through
        self.save()
        return number

    def local_ref(self, transaction_id: str) -> str | None:
        """The session whose transactionId is ``transaction_id`` (see mapping.transaction_id)."""
        return next((ref for ref in self.sessions if mapping.transaction_id(ref) == transaction_id), None)

    def save(self) -> bool:
        return self._store.save(SECTION, {ref: asdict(session) for ref, session in self.sessions.items()})
