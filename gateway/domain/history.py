"""What the operator's history keeps: the facts the history service hands its store, and what the
store gives back.

The history answers the operator's weekly questions without the CSMS (which sessions ran, what each
billed, when a charger faulted and for how long, what the site drew). It is a record of what the
gateway saw, kept beside the billing path and never in it: the outbox delivers the bills, the
history only remembers them. Pure data, no I/O; the store (a port) decides how it is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

SERIES_DAYS = 7  # one-minute series are kept this long (the issue asks for at least 7 days)
DEFAULT_RETENTION_DAYS = 400  # sessions and events: more than 13 months, one year compared to the last


class DeliveryState(StrEnum):
    """Where the session's bill stands toward the CSMS (its StopTransaction, in the outbox)."""

    QUEUED = "queued"  # stopped; the StopTransaction waits in the outbox (or is on its way)
    DELIVERED = "delivered"  # the CSMS answered the StopTransaction
    PARKED = "parked"  # the CSMS kept refusing one of its ends: set aside for the operator


class EventKind(StrEnum):
    """What the event log records; ``detail`` holds the rest (JSON)."""

    FAULT_RAISED = "fault_raised"
    FAULT_CLEARED = "fault_cleared"
    DEVICE_LOST = "device_lost"
    DEVICE_BACK = "device_back"
    CSMS_DOWN = "csms_down"
    CSMS_UP = "csms_up"
    UNAVAILABLE = "unavailable"  # a connector was taken out of service
    AVAILABLE = "available"  # and put back
    COMMAND = "command"  # a command received: ``detail`` names it and its ``source`` (csms, mqtt, page)
    BROKER_DOWN = "broker_down"  # the MQTT broker link
    BROKER_UP = "broker_up"
    LIMIT_BINDS = "limit_binds"  # load management began to hold chargers below what they asked
    LIMIT_FREES = "limit_frees"  # and stopped
    SECURITY = "security"  # a security event: ``detail`` has its ``kind``, ``text`` and ``count``


# -- writes: what the service hands the store, applied together in one transaction -----------------
@dataclass(frozen=True, slots=True)
class SessionStarted:
    """A session began: ``meter_start_wh`` is the billing register the StartTransaction carries."""

    local_ref: str
    connector_id: int
    device: str
    id_tag: str  # kept whole on the box; views show ``mask_id_tag`` forms only
    started_at: datetime
    meter_start_wh: int


@dataclass(frozen=True, slots=True)
class SessionStopped:
    """A session ended: ``meter_stop_wh`` is the billing register the StopTransaction carries.

    Carries the session's connector, device and id tag again so that a stop whose start the store
    never saw (the file was set aside in between) still makes a row."""

    local_ref: str
    connector_id: int
    device: str
    id_tag: str
    stopped_at: datetime
    meter_stop_wh: int
    stop_reason: str
    peak_power_w: float | None


@dataclass(frozen=True, slots=True)
class SessionNumbered:
    """The CSMS gave the session its transaction id."""

    local_ref: str
    transaction_id: int


@dataclass(frozen=True, slots=True)
class SessionDelivery:
    """The session's bill moved on in the outbox (delivered or parked)."""

    local_ref: str
    state: DeliveryState


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """One line of the event log; ``at`` is when the poll or link change that showed it was made."""

    at: datetime
    kind: EventKind
    connector_id: int | None = None
    device: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SeriesSample:
    """One connector's values at a minute mark (connector 0: the grid meter). The last reading
    made up to the mark, not an average: a charger polled every few seconds is close enough."""

    minute: datetime
    connector_id: int
    power_w: float | None
    energy_wh: int | None
    status: str | None
    limit_a: float | None = None  # per phase: a connector's share; connector 0: what all chargers may draw


HistoryWrite = SessionStarted | SessionStopped | SessionNumbered | SessionDelivery | HistoryEvent | SeriesSample


@dataclass(frozen=True, slots=True)
class Retention:
    """How long each kind of history is kept, in days, and how many rows at most: a charger
    that flaps a fault bit every poll must not fill the disk within the days (about 150 bytes
    a row: the caps hold sessions and events under about 120 MB together)."""

    sessions_days: int = DEFAULT_RETENTION_DAYS
    events_days: int = DEFAULT_RETENTION_DAYS
    series_days: int = SERIES_DAYS
    max_sessions: int = 250_000  # a 50-connector depot at 10 sessions a connector a day, 500 days
    max_events: int = 500_000


# -- reads ----------------------------------------------------------------------------------------
MAX_ROWS = 100_000  # the most rows one read returns (a year of a busy site's sessions fits)


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """Which rows a read wants. Times bound the row's own time (a session's start, an event's
    time, a sample's minute): ``since`` inclusive, ``until`` exclusive. ``id_tag`` matches the
    full tag exactly (sessions only); ``kinds`` filters events. Newest first, at most ``limit``,
    but series, which come oldest first (a plot reads them in time order)."""

    since: datetime | None = None
    until: datetime | None = None
    connector_id: int | None = None
    id_tag: str | None = None
    kinds: tuple[str, ...] = ()
    limit: int = 1000

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_ROWS:
            raise ValueError(f"limit is 1 to {MAX_ROWS}, not {self.limit}")


EVERYTHING = HistoryQuery()  # no filter, the newest 1000


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One session as stored. ``id_tag`` is the full tag: only ``masked_id_tag`` may leave the
    box through a view, a log line or MQTT (the full tag is for the authenticated export only)."""

    local_ref: str
    connector_id: int
    device: str
    id_tag: str
    masked_id_tag: str
    started_at: str | None  # ISO 8601 UTC
    stopped_at: str | None
    meter_start_wh: int | None
    meter_stop_wh: int | None
    energy_wh: int | None
    duration_s: float | None
    peak_power_w: float | None
    stop_reason: str | None
    csms_transaction_id: int | None
    delivery: DeliveryState | None  # None while the session runs

    def __repr__(self) -> str:  # never the full tag, in a log line or a traceback
        return f"SessionRecord({self.local_ref!r}, connector {self.connector_id}, {self.masked_id_tag})"


@dataclass(frozen=True, slots=True)
class EventRecord:
    at: str  # ISO 8601 UTC
    kind: str
    connector_id: int | None
    device: str | None
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SeriesRecord:
    minute: str  # ISO 8601 UTC
    connector_id: int
    power_w: float | None
    energy_wh: int | None
    status: str | None
    limit_a: float | None = None
