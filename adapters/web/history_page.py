"""The status page's history: the last 24 hours as a plot, each connector's sparkline, the recent
sessions and the event log (``HistoryView``: one read of the sessions and one of the events per
page; the series of all connectors read and drawn once a minute, ``draw_series``).

Times are ``<time datetime="...Z">`` elements with a UTC text: the page's small inline script
shows them in the browser's time zone, and without script they still read right. Id tags are the
masked forms only, whatever the page's password.

Power limits are stored in A per phase; the plots show them as power at **230 V on 3 phases**
(690 W per A), the nominal European three-phase supply, so that they share the axis with the
power they limit. A single-phase charger's share drawn this way is three times what it can take:
the plot is for seeing when limits bound, not for reading off kW.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any

from adapters.web.plot import Line, Point, plot, sparkline
from gateway.domain.history import EventRecord, SeriesRecord, SessionRecord
from gateway.services.site_picture import FAULT_LABELS

VOLTS, PHASES = 230.0, 3
WATTS_PER_AMP = VOLTS * PHASES
CONVERSION = f"A \u00d7 {VOLTS:g} V \u00d7 {PHASES}"  # how the legends say it
SITE, GRID, LIMIT = ("#2563eb", "#dc2626", "#6b7280")  # the colours of the lines

#: How a bill stands toward the CSMS, in words (``sessions.delivery``; None: still charging).
DELIVERY_WORDS = {
    None: "-",
    "queued": "waiting to be sent",
    "delivered": "delivered",
    "parked": "parked (refused by the CSMS)",
}


@dataclass(frozen=True, slots=True)
class SeriesDrawing:
    """A window of the series, drawn: the site's plot with its legend, and each connector's
    sparkline (HTML; none for a connector without samples)."""

    plot: str
    sparks: Mapping[int, str]


@dataclass(frozen=True, slots=True)
class HistoryView:
    """What the page shows of the history: one read of each, made for this page (the series'
    drawing is made once a minute), or the reason they could not be read."""

    start: datetime
    end: datetime
    sessions: Sequence[SessionRecord] = ()
    events: Sequence[EventRecord] = ()
    drawing: SeriesDrawing | None = None
    error: str | None = None


def draw_series(series: Sequence[SeriesRecord], start: datetime, end: datetime) -> SeriesDrawing:
    """The plot and the sparklines of ``series`` (oldest first, every connector): the rows grouped
    once per connector, the chargers' sum per minute, then drawn."""
    moments: dict[str, datetime] = {}  # every connector's sample of a minute shares its string
    power: dict[int, list[Point]] = defaultdict(list)
    limit: dict[int, list[Point]] = defaultdict(list)
    total: dict[datetime, float | None] = {}
    for row in series:
        moment = moments.get(row.minute) or moments.setdefault(row.minute, datetime.fromisoformat(row.minute))
        power[row.connector_id].append((moment, row.power_w))
        limit[row.connector_id].append((moment, _watts(row.limit_a)))
        if row.connector_id != 0:
            known = total.get(moment)
            total[moment] = known if row.power_w is None else (known or 0.0) + row.power_w
    lines = [Line("site", SITE, sorted(total.items())), Line("grid", GRID, power.get(0, []))]
    if any(v is not None for _, v in limit.get(0, [])):
        lines.append(Line("limit", LIMIT, limit[0], dashed=True))
    svg = plot(lines, start, end, title="Power over the last 24 hours, in kW")
    legend = [
        _key(SITE, "Chargers (sum)"),
        _key(GRID, "Grid meter"),
        _key(LIMIT, f"Chargers may draw ({CONVERSION})", dashed=True),
    ]
    sparks = {cid: _spark(cid, points, limit.get(cid, []), start, end) for cid, points in power.items() if cid != 0}
    return SeriesDrawing(f"{svg}<ul class=legend>{''.join(legend)}</ul>", sparks)


def _spark(connector_id: int, power: list[Point], share: list[Point], start: datetime, end: datetime) -> str:
    """A connector's power over the window (dashed: its share), or "" without samples."""
    lines = [Line("power", SITE, power)]
    if any(v is not None for _, v in share):
        lines.append(Line("share", LIMIT, share, dashed=True))
    svg = sparkline(lines, start, end, title=f"Connector {connector_id}: last 24 hours")
    if not svg:
        return ""
    peak = max((v for _, v in power if v is not None), default=None)
    shown = f" · peak {peak / 1000:,.1f} kW" if peak is not None else ""
    shared = f" · dashed: its share ({CONVERSION})" if len(lines) > 1 else ""
    return f"<div class=spark-box>{svg}<p class=detail>Last 24 h{shown}{shared}</p></div>"


class HistorySections:
    """The history's parts of one page, each where it belongs."""

    def __init__(self, view: HistoryView) -> None:
        self.view = view

    def plot(self) -> str:
        """The site's last 24 hours: what the chargers drew, the grid meter, the chargers' limit."""
        view = self.view
        drawing = view.drawing or draw_series((), view.start, view.end)
        problem = f"<p class=fault>{escape(view.error)}</p>" if view.error else ""
        return f"<section class=wide id=plot><h2>Last 24 hours</h2>{problem}{drawing.plot}</section>"

    def spark(self, connector_id: int) -> str:
        return self.view.drawing.sparks.get(connector_id, "") if self.view.drawing is not None else ""

    def sessions(self) -> str:
        """The last sessions, four columns so that a phone shows them whole."""
        rows = [
            f"<tr><td>{_time(s.started_at)}<div class=detail>connector {s.connector_id}</div></td>"
            f"<td class=tag>{escape(s.masked_id_tag)}</td>"
            f"<td>{_kwh(s.energy_wh)}<div class=detail>{_took(s)}</div></td>"
            f"<td>{escape(DELIVERY_WORDS.get(s.delivery, str(s.delivery)))}</td></tr>"
            for s in self.view.sessions
        ]
        head = "<tr><th>Started</th><th>Card</th><th>Energy</th><th>Bill</th></tr>"
        body = f"<table id=sessions-table>{head}{''.join(rows)}</table>" if rows else self._none("No sessions yet.")
        return f"<section class=wide id=sessions><h2>Recent sessions</h2><div class=scroll>{body}</div></section>"

    def events(self) -> str:
        rows = [
            f"<tr><td>{_time(e.at)}</td><td>{escape(event_words(e))}{_detail(e)}</td></tr>" for e in self.view.events
        ]
        body = f"<table id=events-table>{''.join(rows)}</table>" if rows else self._none("Nothing happened yet.")
        return f"<section class=wide id=events><h2>Event log</h2>{body}</section>"

    def _none(self, text: str) -> str:
        """What an empty table says: nothing there, or that the history could not be read."""
        return f"<p class=fault>{escape(self.view.error)}</p>" if self.view.error else f"<p>{escape(text)}</p>"


def event_words(event: EventRecord) -> str:
    """One event in the words of a site owner."""
    detail, kind = event.detail, event.kind
    where = _where(event)
    fault = FAULT_LABELS.get(str(detail.get("kind")), str(detail.get("kind", "")))
    words = {
        "fault_raised": f"Fault on {where}: {fault}",
        "fault_cleared": f"Fault cleared on {where}: {fault}",
        "device_lost": f"{where} stopped answering",
        "device_back": f"{where} answers again",
        "csms_down": "Link to the CSMS lost",
        "csms_up": "Connected to the CSMS",
        "unavailable": f"{where} taken out of service",
        "available": f"{where} back in service",
        "command": f"Command {detail.get('command', '')}" + (f" for {where}" if where != "-" else ""),
        "broker_down": "Link to the MQTT broker lost",
        "broker_up": "Connected to the MQTT broker",
        "limit_binds": "Load management holds chargers below what they ask",
        "limit_frees": "Load management no longer holds chargers back",
        "security": f"Security: {str(detail.get('kind', '')).replace('_', ' ')}",
    }
    return words.get(kind, kind.replace("_", " ").capitalize())


#: Detail keys already in an event's words (the rest are shown small beneath them).
_IN_WORDS = {"kind", "command"}
_DETAIL_WORDS = {"duration_s": "lasted", "vendor_code": "code", "limit_a": "limit (A)"}


def _detail(event: EventRecord) -> str:
    parts = []
    for key, value in event.detail.items():
        if key in _IN_WORDS or value is None or value == "":
            continue
        if key == "duration_s" and isinstance(value, int | float):
            shown = _duration(value)
        elif key == "held" and isinstance(value, list):  # load management: which connectors, at what
            held = [h for h in value if isinstance(h, dict)]
            shown = ", ".join(f"{h.get('connector_id')} at {h.get('current_a')} A" for h in held)
        else:
            shown = _text(value)
        parts.append(f"{_DETAIL_WORDS.get(key, key.replace('_', ' '))}: {shown}")
    return f"<div class=detail>{escape(' · '.join(parts))}</div>" if parts else ""


def _where(event: EventRecord) -> str:
    if event.connector_id is not None:
        return f"connector {event.connector_id}" + (f" ({event.device})" if event.device else "")
    return event.device or "-"


def _text(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 200 else text[:197] + "..."


def time_element(iso: str | None) -> str:
    """``<time>`` with the UTC text a reader without script sees; the page's script shows it in
    the browser's time zone."""
    if not iso:
        return "-"
    shown = iso[:16].replace("T", " ") + " UTC"
    return f"<time datetime='{escape(iso)}'>{escape(shown)}</time>"


_time = time_element


def _key(colour: str, label: str, *, dashed: bool = False) -> str:
    style = "dashed" if dashed else "solid"
    return f"<li><span class=swatch style='border-top:3px {style} {colour}'></span>{escape(label)}</li>"


def _watts(amps: float | None) -> float | None:
    return None if amps is None else amps * WATTS_PER_AMP


def _kwh(energy_wh: int | None) -> str:
    return "-" if energy_wh is None else f"{energy_wh / 1000:,.2f} kWh"


def _took(session: SessionRecord) -> str:
    return "running" if session.stopped_at is None else _duration(session.duration_s)


def _duration(seconds: float | None) -> str:
    """``1 h 05 min``, ``3 min``, ``12 s``; "-" for none."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"
