"""How the history's rows map to SQL: the schema and its migrations, each write as a statement,
a query as its WHERE clause, a row back as a record.

Apart from the store (``adapters.storage.history_db``), which owns the file, its opening,
damage and threads: this module only knows the tables.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any

from gateway.domain.authorization import mask_id_tag
from gateway.domain.history import (
    DeliveryState,
    HistoryEvent,
    HistoryQuery,
    HistoryWrite,
    SeriesSample,
    SessionDelivery,
    SessionNumbered,
    SessionRecord,
    SessionStarted,
    SessionStopped,
)
from gateway.domain.model import iso_utc

SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE sessions (
    local_ref TEXT PRIMARY KEY,           -- the gateway's reference, unique across restarts
    connector_id INTEGER NOT NULL,
    device TEXT NOT NULL,
    id_tag TEXT NOT NULL,                 -- the full tag: views show it masked
    started_at TEXT,                      -- ISO 8601 UTC, when the register was read
    stopped_at TEXT,                      -- NULL while the session runs
    meter_start_wh INTEGER,               -- the billing register, as in StartTransaction
    meter_stop_wh INTEGER,                -- the billing register, as in StopTransaction
    energy_wh INTEGER,                    -- meter_stop_wh - meter_start_wh
    peak_power_w REAL,
    stop_reason TEXT,
    csms_transaction_id INTEGER,
    delivery TEXT                         -- NULL while running, then queued / delivered / parked
);
CREATE INDEX sessions_started ON sessions (started_at);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,                     -- ISO 8601 UTC
    kind TEXT NOT NULL,
    connector_id INTEGER,
    device TEXT,
    detail TEXT NOT NULL                  -- JSON object
);
CREATE INDEX events_at ON events (at);
CREATE TABLE series (
    minute TEXT NOT NULL,                 -- ISO 8601 UTC, the minute mark
    connector_id INTEGER NOT NULL,        -- 0: the grid meter
    power_w REAL,
    energy_wh INTEGER,
    status TEXT,
    limit_a REAL,                         -- A per phase: the connector's share (0: all chargers' limit)
    PRIMARY KEY (minute, connector_id)
) WITHOUT ROWID;
"""
#: From each older schema version to the next (the index is the version migrated from, less one).
MIGRATIONS = ("ALTER TABLE series ADD COLUMN limit_a REAL",)
SESSION_COLUMNS = (
    "local_ref, connector_id, device, id_tag, started_at, stopped_at, meter_start_wh, meter_stop_wh, "
    "energy_wh, peak_power_w, stop_reason, csms_transaction_id, delivery"
)


def conditions(query: HistoryQuery, time_column: str) -> tuple[list[str], list[Any]]:
    """The conditions every table shares: its own time within [since, until), and the connector."""
    where: list[str] = []
    parameters: list[Any] = []
    if query.since is not None:
        where.append(f"{time_column} >= ?")
        parameters.append(iso_utc(query.since))
    if query.until is not None:
        where.append(f"{time_column} < ?")
        parameters.append(iso_utc(query.until))
    if query.connector_id is not None:
        where.append("connector_id = ?")
        parameters.append(query.connector_id)
    return where, parameters


def clause(where: list[str]) -> str:
    return f" WHERE {' AND '.join(where)}" if where else ""


def apply(db: sqlite3.Connection, item: HistoryWrite) -> None:
    if isinstance(item, SessionStarted):
        db.execute(
            "INSERT OR IGNORE INTO sessions (local_ref, connector_id, device, id_tag, started_at, meter_start_wh) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                item.local_ref,
                item.connector_id,
                item.device,
                item.id_tag,
                iso_utc(item.started_at),
                item.meter_start_wh,
            ),
        )
    elif isinstance(item, SessionStopped):
        db.execute(
            "INSERT OR IGNORE INTO sessions (local_ref, connector_id, device, id_tag) VALUES (?, ?, ?, ?)",
            (item.local_ref, item.connector_id, item.device, item.id_tag),
        )
        db.execute(
            "UPDATE sessions SET stopped_at = ?, meter_stop_wh = ?, energy_wh = ? - meter_start_wh, "
            "peak_power_w = ?, stop_reason = ?, delivery = COALESCE(delivery, ?) WHERE local_ref = ?",
            (
                iso_utc(item.stopped_at),
                item.meter_stop_wh,
                item.meter_stop_wh,
                item.peak_power_w,
                item.stop_reason,
                DeliveryState.QUEUED.value,
                item.local_ref,
            ),
        )
    elif isinstance(item, SessionNumbered):
        db.execute(
            "UPDATE sessions SET csms_transaction_id = ? WHERE local_ref = ?", (item.transaction_id, item.local_ref)
        )
    elif isinstance(item, SessionDelivery):
        # a parked end stays parked: a later delivery of the other end does not hide it
        db.execute(
            "UPDATE sessions SET delivery = ? WHERE local_ref = ? AND delivery IS NOT 'parked'",
            (item.state.value, item.local_ref),
        )
    elif isinstance(item, HistoryEvent):
        db.execute(
            "INSERT INTO events (at, kind, connector_id, device, detail) VALUES (?, ?, ?, ?, ?)",
            (iso_utc(item.at), item.kind.value, item.connector_id, item.device, json.dumps(item.detail)),
        )
    elif isinstance(item, SeriesSample):
        db.execute(
            "INSERT OR REPLACE INTO series (minute, connector_id, power_w, energy_wh, status, limit_a) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (iso_utc(item.minute), item.connector_id, item.power_w, item.energy_wh, item.status, item.limit_a),
        )


def session_record(row: tuple[Any, ...]) -> SessionRecord:
    (ref, connector_id, device, id_tag, started, stopped, start_wh, stop_wh, energy, peak, reason, tx, delivery) = row
    duration = None
    if started and stopped:
        duration = (datetime.fromisoformat(stopped) - datetime.fromisoformat(started)).total_seconds()
    return SessionRecord(
        ref,
        connector_id,
        device,
        id_tag,
        mask_id_tag(id_tag),
        started,
        stopped,
        start_wh,
        stop_wh,
        energy,
        duration,
        peak,
        reason,
        tx,
        DeliveryState(delivery) if delivery else None,
    )
