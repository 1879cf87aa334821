"""``ocpp-gateway sessions``: the history's sessions and their totals in a terminal, or as CSV.

It reads the history file itself, read-only (``SqliteHistoryStore.open_read_only``), rather than
asking the running gateway: it answers whether the gateway runs or not (SQLite's write-ahead log
lets a reader beside the writer), needs no status page, and never creates, migrates or sets aside
the file. The file is 0600 in a 0700 folder, the gateway's user's: being able to read it (as that
user, or root) is what entitles a user to the full id tags of the CSV export.

The sums come from gateway/services/history_report.py (pure); this module reads, filters and
prints.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import TextIO

from gateway.cli_args import DEFAULT_CONFIG, connector_number, moment, time_zone, year_month
from gateway.config import GatewayConfig, load_config
from gateway.domain.authorization import mask_id_tag
from gateway.domain.errors import ConfigError
from gateway.domain.history import MAX_ROWS, HistoryQuery, SessionRecord
from gateway.services.history_report import (
    Period,
    Standing,
    Total,
    by_connector,
    by_month,
    by_tag_and_month,
    csv_rows,
    duration,
    kwh,
    overall,
    select,
    standing,
    tag_key,
    tag_labels,
)

EXIT_USAGE = 2  # as every command's config mistake or missing file
DEVICE_WIDTH = 16  # a longer device name is cut with "~" so the table stays near 80 columns


class SessionsUnavailable(Exception):
    """The sessions cannot be shown; the message says why, in one line."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """The ``sessions`` command and its arguments, on ``ocpp-gateway``'s subcommands."""
    parser = sub.add_parser("sessions", help="list the sessions the history kept, with totals per connector and month")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="its config (default: config.toml)")
    parser.add_argument("--since", type=moment, metavar="DATE|TIME", help="sessions that started from then on")
    parser.add_argument(
        "--until", type=moment, metavar="DATE|TIME", help="sessions that started before then (a DATE includes that day)"
    )
    parser.add_argument("--month", type=year_month, metavar="YYYY-MM", help="sessions that started in that month")
    parser.add_argument("--connector", type=connector_number, metavar="N", help="only this connector's sessions")
    parser.add_argument("--id-tag", metavar="TAG", help="only this id tag's sessions (the full tag)")
    parser.add_argument(
        "--tz", type=time_zone, metavar="ZONE", help="time zone of the times, days and months (default: the box's)"
    )
    parser.add_argument("--csv", action="store_true", help="the sessions as CSV, with full id tags and UTC times")
    parser.set_defaults(func=cmd_sessions)
    return parser


def cmd_sessions(args: argparse.Namespace) -> int:
    """Exit 0 with the report; 2 with one line on stderr when there is nothing to read (as the
    other commands end on a config mistake or a missing file)."""
    try:
        return sessions(load_config(args.config), args, sys.stdout)
    except ConfigError as exc:
        print(f"{args.config}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for key, reason in exc.problems:
            print(f"  {key}: {reason}", file=sys.stderr)
    except SessionsUnavailable as exc:
        print(f"sessions: {exc}", file=sys.stderr)
    return EXIT_USAGE


def sessions(config: GatewayConfig, args: argparse.Namespace, out: TextIO) -> int:
    """Print the report (or the CSV) of ``config``'s history; raises SessionsUnavailable."""
    if not config.history.enabled:
        raise SessionsUnavailable(f"[history] enabled = false in {args.config}: the gateway keeps no history")
    tz: tzinfo | None = args.tz
    period = period_of(args, tz)
    state_dir = Path(config.site.state_dir)
    records = read_sessions(state_dir)
    if len(records) == MAX_ROWS:
        print(f"sessions: only the newest {MAX_ROWS} sessions were read: older ones are not in this", file=sys.stderr)
    try:  # a row the gateway never wrote (a time that is no time, text for a number) ends here, in a line
        chosen = select(records, period, args.connector, args.id_tag)
        text = csv_text(chosen) if args.csv else render(chosen, tz, _heading(args, tz)) + "\n"
    except (ValueError, TypeError) as exc:
        raise SessionsUnavailable(f"cannot read {_history_file(state_dir)}: a row it cannot show ({exc})") from None
    out.write(text)
    return 0


def csv_text(records: Sequence[SessionRecord]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(csv_rows(records, full_tags=True))
    return buffer.getvalue()


def _history_file(state_dir: Path) -> Path:
    from adapters.storage.history_db import FILE_NAME

    return (state_dir / "history" / FILE_NAME).absolute()


def read_sessions(state_dir: Path) -> list[SessionRecord]:
    """Every session the history holds (up to ``MAX_ROWS``, newest first), read-only."""
    from adapters.storage.history_db import HistoryUnreadable, SqliteHistoryStore

    path = _history_file(state_dir)
    try:
        store = SqliteHistoryStore.open_read_only(state_dir / "history")
        try:
            return store.sessions(HistoryQuery(limit=MAX_ROWS))
        finally:
            store.close()
    except FileNotFoundError:
        hint = "" if state_dir.is_absolute() else f" ([site] state_dir {str(state_dir)!r} is relative to where it runs)"
        raise SessionsUnavailable(
            f"no history yet at {path}: the gateway keeps one while it runs with [history] enabled{hint}"
        ) from None
    except PermissionError:
        raise SessionsUnavailable(f"cannot read {path}: permission denied; run as the gateway's user or root") from None
    except IsADirectoryError:
        raise SessionsUnavailable(f"cannot read {path}: a folder stands where the history file belongs") from None
    except HistoryUnreadable as exc:
        raise SessionsUnavailable(f"cannot read {path}: {exc}") from None
    except (ValueError, TypeError) as exc:  # a row the store cannot turn into a record
        raise SessionsUnavailable(f"cannot read {path}: a row it cannot show ({exc})") from None
    except OSError as exc:  # a read that failed (a damaged page): the store says "history: <reason>"
        raise SessionsUnavailable(f"cannot read {path}: {exc.strerror or str(exc).removeprefix('history: ')}") from None


def period_of(args: argparse.Namespace, tz: tzinfo | None) -> Period:
    """``--month`` or ``--since``/``--until`` as aware UTC bounds; a DATE given to ``--until``
    includes that day. Raises SessionsUnavailable for a period that ends before it begins or
    lies beyond what a calendar holds."""
    since, until = args.since, args.until
    try:
        if args.month is not None:  # its first day to its last, both included
            first: date = args.month
            since, until = first, (first + timedelta(days=31)).replace(day=1) - timedelta(days=1)
        period = Period(_bound(since, tz), _bound(until, tz, end_of_day=True))
    except (OverflowError, OSError, ValueError):
        raise SessionsUnavailable("--since/--until: a time out of range") from None
    if period.since is not None and period.until is not None and period.since >= period.until:
        raise SessionsUnavailable("--since must be before --until")
    return period


def _bound(value: date | datetime | None, tz: tzinfo | None, end_of_day: bool = False) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):  # a DATE: its first moment (or the next day's, for --until)
        value = datetime.combine(value + timedelta(days=1) if end_of_day else value, datetime.min.time())
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz) if tz is not None else value.astimezone()  # naive: in --tz or the box's
    return value.astimezone(UTC)


def zone_name(tz: tzinfo | None) -> str:
    return str(tz) if tz is not None else f"the box's local time ({'/'.join(dict.fromkeys(time.tzname))})"


def _heading(args: argparse.Namespace, tz: tzinfo | None) -> str:
    """What was asked, in a line: the period, the filters, the zone."""
    parts = []
    if args.month is not None:
        parts.append(f"of {args.month:%Y-%m}")
    if args.since is not None:
        parts.append(f"since {args.since.isoformat()}")
    if args.until is not None:
        parts.append(f"until {args.until.isoformat()}" + ("" if isinstance(args.until, datetime) else " (included)"))
    if args.connector is not None:
        parts.append(f"on connector {args.connector}")
    if args.id_tag is not None:
        parts.append(f"of id tag {mask_id_tag(args.id_tag)}")
    return " ".join(["sessions", *parts] if parts else ["all sessions"]) + f"; times in {zone_name(tz)}"


def render(records: Sequence[SessionRecord], tz: tzinfo | None, heading: str) -> str:
    """The sessions (oldest first) and their totals, in aligned columns near 80 wide."""
    if not records:
        return f"{heading}\nno sessions"
    labels = tag_labels(records)
    rows = [_session_row(r, tz, labels[tag_key(r.id_tag)]) for r in records]
    header = ("start", "conn", "device", "id tag", "kWh", "h:mm", "stop", "bill")
    lines = [heading, *_table(header, rows, right={1, 4, 5})]
    totals = overall(records)
    if totals.count:
        per_connector = {(str(k),): t for k, t in by_connector(records).items()}
        per_month = {(k,): t for k, t in by_month(records, tz).items()}
        per_tag = sorted(((month, labels[key]), t) for (month, key), t in by_tag_and_month(records, tz).items())
        lines += ["", "per connector", *_totals(("conn",), per_connector, right=frozenset({0}))]
        lines += ["", "per month", *_totals(("month",), per_month)]
        lines += ["", "per id tag and month", *_totals(("month", "id tag"), dict(per_tag))]
        lines += ["", f"total: {_count(totals.count)}, {kwh(totals.energy_wh)} kWh"]
    return "\n".join(lines + _footnotes(records))


def _session_row(record: SessionRecord, tz: tzinfo | None, label: str) -> tuple[str, ...]:
    start = None if record.started_at is None else datetime.fromisoformat(record.started_at).astimezone(tz)
    device = record.device if len(record.device) <= DEVICE_WIDTH else record.device[: DEVICE_WIDTH - 1] + "~"
    state = standing(record)
    energy = {Standing.COUNTED: kwh(record.energy_wh or 0), Standing.UNKNOWN: "?", Standing.RUNNING: "-"}[state]
    running = state is Standing.RUNNING
    return (
        "?" if start is None else f"{start:%Y-%m-%d %H:%M}",
        str(record.connector_id),
        device,
        label,
        energy,
        "-" if running else duration(record.duration_s),
        "running" if running else (record.stop_reason or "?"),
        "" if record.delivery is None else record.delivery.value,
    )


def _totals(
    keys: tuple[str, ...], sums: dict[tuple[str, ...], Total], right: frozenset[int] = frozenset()
) -> list[str]:
    """A totals table: the key columns (``right``: those right-aligned), then sessions and kWh."""
    rows = [(*key, str(t.count), kwh(t.energy_wh)) for key, t in sums.items()]
    return _table((*keys, "sessions", "kWh"), rows, right={*right, len(keys), len(keys) + 1}, indent="  ")


def _footnotes(records: Sequence[SessionRecord]) -> list[str]:
    states = [standing(r) for r in records]
    notes = []
    if running := states.count(Standing.RUNNING):
        are = "session is" if running == 1 else "sessions are"
        notes.append(f"{running} {are} still running (-): not in the totals, no meter stop yet")
    if unknown := states.count(Standing.UNKNOWN):
        have = "session has" if unknown == 1 else "sessions have"
        notes.append(f"{unknown} {have} an unknown meter start (?): not in the totals, the history missed the start")
    return ["", *notes] if notes else []


def _count(n: int) -> str:
    return f"{n} session{'' if n == 1 else 's'}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int], indent: str = "") -> list[str]:
    """``header`` and ``rows`` in columns as wide as their widest cell; columns in ``right`` are
    right-aligned (numbers), the others left-aligned."""
    rows = [[_printable(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        aligned = (c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
        return (indent + " ".join(aligned)).rstrip()

    return [line(header), *map(line, rows)]


def _printable(cell: str) -> str:
    """A stored text as it may reach a terminal: a control character (an escape sequence in the
    last characters of an id tag, say) shows as ``?`` instead of acting on the terminal."""
    return cell if cell.isprintable() else "".join(c if c.isprintable() else "?" for c in cell)
