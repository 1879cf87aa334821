"""The operator's session report: which sessions ran in a period, and what they add up to per
connector, per month and per id tag and month (the monthly sum per id tag is what an employer
reimburses). Pure: it takes the history's ``SessionRecord`` rows and gives rows and sums back;
``ocpp-gateway sessions`` prints them (gateway/cli_sessions.py).

Rules, so the sums agree with the bills:

* Energy is summed in Wh, as ints (the billing register's own unit): no float ever adds up.
* Only finished sessions with a known energy are counted. A running session has no meterStop
  yet, and a session whose start the history never saw (its file was set aside in between) has
  no meterStart: both are listed, neither is in any total, and the report says how many.
* A session belongs to the month of its start, in the zone the operator chose (``tz``; None:
  the box's own zone). A session without a known start is placed by its stop.
* Id tags are grouped whole (case-insensitively, as OCPP compares them), never by their masked
  form: two cards that end in the same four characters stay two lines. Views show masked
  labels, numbered when two tags would otherwise look the same.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from enum import StrEnum
from typing import Any, TypeVar

from gateway.domain.authorization import mask_id_tag
from gateway.domain.history import SessionRecord

K = TypeVar("K", int, str, tuple[str, str])

#: The CSV export's columns: the store's fields, by their names (docs/history.md, "sessions").
CSV_COLUMNS = (
    "local_ref",
    "connector_id",
    "device",
    "id_tag",
    "started_at",
    "stopped_at",
    "meter_start_wh",
    "meter_stop_wh",
    "energy_wh",
    "duration_s",
    "peak_power_w",
    "stop_reason",
    "csms_transaction_id",
    "delivery",
)
#: A spreadsheet runs a cell that starts with one of these as a formula (CSV injection): text
#: cells that do are exported with a leading apostrophe, which spreadsheets show as text.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class Standing(StrEnum):
    """Whether a session counts in the totals."""

    COUNTED = "counted"  # stopped, with its energy known
    RUNNING = "running"  # no stop yet: no meterStop
    UNKNOWN = "unknown"  # stopped, but its meterStart is unknown: its energy is "?"


@dataclass(frozen=True, slots=True)
class Total:
    count: int = 0
    energy_wh: int = 0

    def plus(self, energy_wh: int) -> Total:
        return Total(self.count + 1, self.energy_wh + energy_wh)


@dataclass(frozen=True, slots=True)
class Period:
    """``since`` inclusive, ``until`` exclusive (aware datetimes); None: open on that side."""

    since: datetime | None = None
    until: datetime | None = None

    def holds(self, moment: datetime | None) -> bool:
        if moment is None:  # no time at all: only an open period holds it
            return self.since is None and self.until is None
        return (self.since is None or moment >= self.since) and (self.until is None or moment < self.until)


def standing(record: SessionRecord) -> Standing:
    if record.stopped_at is None:
        return Standing.RUNNING
    return Standing.UNKNOWN if record.energy_wh is None else Standing.COUNTED


def session_time(record: SessionRecord) -> datetime | None:
    """When the session belongs: its start, or its stop when the start is unknown (aware, UTC)."""
    stamp = record.started_at or record.stopped_at
    return None if stamp is None else datetime.fromisoformat(stamp)


def month_of(record: SessionRecord, tz: tzinfo | None) -> str:
    """``YYYY-MM`` of the session's time in ``tz`` (None: the box's zone); ``?`` without a time."""
    moment = session_time(record)
    return "?" if moment is None else moment.astimezone(tz).strftime("%Y-%m")


def tag_key(id_tag: str) -> str:
    """What makes two id tags the same card: the whole tag, compared as OCPP does (case-insensitive)."""
    return id_tag.casefold()


def select(
    records: Iterable[SessionRecord],
    period: Period = Period(),
    connector_id: int | None = None,
    id_tag: str | None = None,
) -> list[SessionRecord]:
    """The sessions of ``period`` (by ``session_time``), of one connector and/or one full id tag,
    oldest first (a statement's order: the newest land just above the totals)."""
    key = None if id_tag is None else tag_key(id_tag)
    chosen = [
        r
        for r in records
        if period.holds(session_time(r))
        and (connector_id is None or r.connector_id == connector_id)
        and (key is None or tag_key(r.id_tag) == key)
    ]
    return sorted(chosen, key=lambda r: (r.started_at or r.stopped_at or "", r.local_ref))


def totals_by(records: Iterable[SessionRecord], key: Callable[[SessionRecord], K]) -> dict[K, Total]:
    """Count and Wh per ``key`` of the counted sessions only, in sorted key order."""
    sums: dict[K, Total] = {}
    for record in records:
        if standing(record) is Standing.COUNTED:
            assert record.energy_wh is not None
            k = key(record)
            sums[k] = sums.get(k, Total()).plus(record.energy_wh)
    return dict(sorted(sums.items(), key=lambda item: item[0]))


def by_connector(records: Iterable[SessionRecord]) -> dict[int, Total]:
    return totals_by(records, lambda r: r.connector_id)


def by_month(records: Iterable[SessionRecord], tz: tzinfo | None) -> dict[str, Total]:
    return totals_by(records, lambda r: month_of(r, tz))


def by_tag_and_month(records: Iterable[SessionRecord], tz: tzinfo | None) -> dict[tuple[str, str], Total]:
    """Keyed by (month, the tag's ``tag_key``): the full tag, never its mask."""
    return totals_by(records, lambda r: (month_of(r, tz), tag_key(r.id_tag)))


def overall(records: Iterable[SessionRecord]) -> Total:
    return totals_by(records, lambda _r: 0).get(0, Total())


def tag_labels(records: Sequence[SessionRecord]) -> dict[str, str]:
    """Each tag's label for a view, by ``tag_key``: its masked form (``****1234``), numbered
    (``****1234/1``, ``****1234/2``) in order of first appearance when two different tags mask
    alike, so the table tells apart what it groups apart without showing more of either."""
    masks: dict[str, str] = {}
    for record in records:
        masks.setdefault(tag_key(record.id_tag), mask_id_tag(record.id_tag))
    shared = Counter(masks.values())
    seen: Counter[str] = Counter()
    labels = {}
    for key, mask in masks.items():
        if shared[mask] > 1:
            seen[mask] += 1
            mask = f"{mask}/{seen[mask]}"
        labels[key] = mask
    return labels


def kwh(energy_wh: int) -> str:
    """Wh as kWh with 3 decimals, exactly (integer arithmetic, no rounding of a float)."""
    whole, part = divmod(abs(energy_wh), 1000)
    return f"{'-' if energy_wh < 0 else ''}{whole}.{part:03d}"


def duration(seconds: float | None) -> str:
    """``h:mm`` (whole minutes, rounded down), or ``?`` when unknown."""
    if seconds is None:
        return "?"
    minutes = int(max(seconds, 0) // 60)
    return f"{minutes // 60}:{minutes % 60:02d}"


def session_fields(record: SessionRecord, *, full_tags: bool) -> dict[str, Any]:
    """One session as the API and the exports show it: ``CSV_COLUMNS``, ``id_tag`` masked, and
    with ``full_tags`` (an authenticated reader) the whole tag as ``id_tag_full`` after it."""
    fields: dict[str, Any] = {}
    for column in CSV_COLUMNS:
        fields[column] = record.masked_id_tag if column == "id_tag" else getattr(record, column)
        if column == "id_tag" and full_tags:
            fields["id_tag_full"] = record.id_tag
    fields["delivery"] = None if record.delivery is None else record.delivery.value
    return fields


def csv_rows(records: Iterable[SessionRecord], *, full_tags: bool) -> list[list[str]]:
    """The export: a header row (``session_fields``' names), then one row per session with the
    stored UTC times; empty cells for unknown values, text a spreadsheet would run made inert."""
    columns = list(CSV_COLUMNS)
    if full_tags:
        columns.insert(columns.index("id_tag") + 1, "id_tag_full")
    rows = [columns]
    for record in records:
        fields = session_fields(record, full_tags=full_tags)
        if fields["duration_s"] is not None:
            fields["duration_s"] = f"{fields['duration_s']:.3f}"
        rows.append([spreadsheet_cell(fields[column]) for column in columns])
    return rows


def spreadsheet_cell(value: object) -> str:
    """A CSV cell: empty for none; text that starts like a formula gets a ``'`` (CSV injection)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return f"'{value}" if value.startswith(_FORMULA_STARTS) else value
    return str(value)
