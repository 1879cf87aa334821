"""The status page: the site picture (``/api/status``) as one HTML page that reads well on a phone.

Rendered on the server from the same JSON the API returns, so the page needs no script to show
anything and a test can read it as text. It reloads itself every few seconds. Every value from a
device, a charger or the config is escaped: a charger may put anything in a fault text. The
history's parts (plot, sparklines, sessions, event log) come from ``adapters.web.history_page``;
a tiny inline script shows their times in the browser's time zone (UTC without script).
"""

from __future__ import annotations

from html import escape
from typing import Any

from adapters.web.history_page import HistorySections, HistoryView, time_element

REFRESH_S = 5

_CSS = """
:root{--ok:#1b7f3b;--bad:#b3261e;--warn:#8a5a00;--dim:#5f6368;--card:#fff;--bg:#f3f4f6}
*{box-sizing:border-box}
body{margin:0;font:16px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);color:#111}
header{padding:12px 16px;background:#111827;color:#fff}
header h1{margin:0;font-size:1.2rem}
header p{margin:2px 0 0;color:#cbd5e1;font-size:.85rem}
main{padding:12px;display:grid;gap:12px;grid-template-columns:repeat(auto-fill,minmax(280px,1fr))}
section{background:var(--card);border-radius:10px;padding:12px 14px;box-shadow:0 1px 2px #0002}
section h2{margin:0 0 6px;font-size:1rem;display:flex;justify-content:space-between;gap:8px}
dl{margin:0;display:grid;grid-template-columns:auto 1fr;gap:2px 12px}
dt{color:var(--dim)}
dd{margin:0;text-align:right;font-variant-numeric:tabular-nums}
.badge{border-radius:999px;padding:1px 10px;font-size:.85rem;font-weight:600;color:#fff;background:var(--dim)}
.badge{white-space:nowrap}
.ok{background:var(--ok)}.bad{background:var(--bad)}.warn{background:var(--warn)}
.fault{color:var(--bad);font-weight:600;margin:6px 0 0}
.wide{grid-column:1/-1}
table{width:100%;border-collapse:collapse;font-size:.9rem}
td,th{padding:4px;text-align:left;vertical-align:top;border-bottom:1px solid #e5e7eb}
.detail{font-size:.8rem;color:var(--dim);overflow-wrap:anywhere}
button{margin:8px 8px 0 0;padding:6px 12px;border-radius:6px;border:1px solid #999;background:#fff;font:inherit}
.scroll{overflow-x:auto}
#sessions-table td,#events-table td{overflow-wrap:anywhere}
#events-table td:first-child,#sessions-table .tag{white-space:nowrap}
.legend{list-style:none;margin:6px 0 0;padding:0;display:flex;flex-wrap:wrap;gap:4px 14px;font-size:.85rem}
.swatch{display:inline-block;width:18px;margin-right:6px;vertical-align:middle}
.spark-box{margin-top:8px}.spark-box p{margin:0}
"""

_SCRIPT = """
// Buttons carry their command as data-path / data-body; the answer's text is shown if refused.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-path]");
  if (!button) return;
  button.disabled = true;
  const answer = await fetch(button.dataset.path, {method: "POST", body: button.dataset.body,
                                                   headers: {"Content-Type": "application/json"}});
  if (!answer.ok) { alert(await answer.text()); }
  location.reload();
});
"""

_TIME_SCRIPT = """
// Times are sent in UTC (<time datetime="...Z">); shown here in the browser's own time zone.
for (const t of document.querySelectorAll("time[datetime]")) {
  const moment = new Date(t.getAttribute("datetime"));
  if (isNaN(moment)) continue;
  t.title = t.textContent;
  t.textContent = moment.toLocaleString([], {month: "short", day: "numeric", hour: "2-digit", minute: "2-digit"});
}
"""

#: The site's badge per readiness state (see gateway.services.readiness).
_STATE_BADGE = {"ready": ("ok", "ready"), "starting": ("warn", "starting"), "degraded": ("bad", "degraded")}

#: Badge colour per connector status: green ready/charging, amber paused, red faulted/unavailable.
_STATUS_CLASS = {
    "available": "ok",
    "occupied": "ok",
    "charging": "ok",
    "suspended_ev": "warn",
    "suspended_evse": "warn",
    "finishing": "ok",
    "unavailable": "bad",
    "faulted": "bad",
}


def render_page(picture: dict[str, Any], history: HistoryView | None = None) -> str:
    """The whole HTML document for ``picture`` (see gateway.services.site_picture), with the
    history's sections when there is a ``history``."""
    site = picture["site"]
    title = escape(site["name"] or site["id"])
    parts = HistorySections(history) if history is not None else None
    sections = [_overview(picture)]
    if parts is not None:
        sections.append(parts.plot())
    if (sharing := _load(site["load"])) is not None:
        sections.append(sharing)
    for c in picture["connectors"]:
        sections.append(_connector(c, picture["commands"], parts.spark(c["connector_id"]) if parts else ""))
    sections += [_meter(m) for m in picture["meters"]]
    sections.append(_devices(picture["devices"]))
    if parts is not None:
        sections += [parts.sessions(), parts.events()]
    script = f"<script>{_SCRIPT}</script>" if picture["commands"] else ""
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f'<meta http-equiv=refresh content="{REFRESH_S}">'
        f"<title>{title}: ocpp-gateway</title><style>{_CSS}</style>{script}</head><body>"
        f"<header><h1>{title}</h1><p>site {escape(site['id'])} · {time_element(picture['generated_at'])}"
        f" · refreshes every {REFRESH_S} s{_gateway(picture.get('gateway'))}</p></header>"
        f"<main>{''.join(sections)}</main><script id=local-times>{_TIME_SCRIPT}</script></body></html>\n"
    )


def _gateway(gateway: dict[str, Any] | None) -> str:
    """`` · ocpp-gateway 0.1.0, up 3 h 05 min`` for the header."""
    if gateway is None:
        return ""
    uptime = gateway["uptime_s"]
    up = f", up {_uptime(uptime)}" if uptime is not None else ""
    return f" · <span id=version>ocpp-gateway {escape(str(gateway['version']))}{up}</span>"


def _uptime(seconds: float) -> str:
    minutes = int(max(seconds, 0) // 60)
    days, hours = divmod(minutes // 60, 24)
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {minutes % 60:02d} min" if hours else f"{minutes} min"


def _overview(picture: dict[str, Any]) -> str:
    up, outbox, mqtt, site = picture["upstream"], picture["outbox"], picture["mqtt"], picture["site"]
    state = _STATE_BADGE.get(picture["state"], ("bad", picture["state"]))
    waiting = ", ".join(picture["waiting_for"])
    csms_down = f" · {escape(up['reason'])}" if not up["connected"] and up["reason"] else ""
    rows = [
        ("CSMS", _link(up["connected"]) + f" · {escape(up['registration'])}{csms_down}"),
        ("CSMS address", escape(up["endpoint"])),
        ("Waiting for the CSMS", _backlog(outbox)),
        ("MQTT", _link(mqtt["connected"]) + (f" · {escape(mqtt['reason'])}" if mqtt["reason"] else "")),
        ("MQTT broker", escape(mqtt["broker"])),
        ("Charging now", f"{site['connectors_charging']} · {_fmt(site['total_power_w'], 'W')}"),
    ]
    if site["grid_power_w"] is not None:
        rows.append(("Grid meter", _fmt(site["grid_power_w"], "W")))
    if waiting:
        rows.append(("Waiting for", escape(waiting)))
    # what keeps the site from ready first, then what else the outbox reports (a damaged file set aside)
    texts = [p["message"] for p in picture["problems"]]
    texts += [p for p in outbox["problems"] if p not in texts]
    texts += [p for p in picture.get("history", {}).get("problems", []) if p not in texts]
    problems = "".join(f"<p class=fault>{escape(text)}</p>" for text in texts)
    return f"<section class=wide id=overview><h2>Site {_badge(*state)}</h2>{_dl(rows)}{problems}</section>"


def _connector(c: dict[str, Any], commands: bool, spark: str = "") -> str:
    status = str(c["status"])
    rows = [
        ("Power", _fmt(c["power_w"], "W")),
        ("Energy register", _fmt(c["billing_energy_wh"], "Wh")),
        ("This session", _fmt(c["session_energy_wh"], "Wh")),
        ("Battery", _soc(c)),
        ("OCPP", f"{escape(str(c['ocpp_status']))} · {escape(str(c['ocpp_error_code']))}"),
    ]
    if c["transaction_id"] is not None or c["id_tag"] is not None:
        number = escape(str(c["transaction_id"] or "pending"))
        rows.append(("Transaction", f"{number} · {escape(str(c['id_tag']))}"))
    if c["current_limit_a"] is not None:
        rows.append(("Current ceiling", _fmt(c["current_limit_a"], "A")))
    if c["share_a"] is not None:
        share = _amps(c["share_a"]) if c["share_a"] else "paused (0 A)"
        rows.append(("Share", f"{share} · {escape(str(c['share_label']))}"))
    if not c["available"]:
        rows.append(("In service", "no"))
    if not c["upstream"]:
        rows.append(("CSMS", "its own (passthrough)"))
    faults = "".join(
        f"<p class=fault>Fault: {escape(f['label'])}{': ' + escape(f['info']) if f['info'] else ''}</p>"
        for f in c["faults"]
    )
    buttons = _buttons(c) if commands and c["upstream"] else ""
    badge = _badge(_STATUS_CLASS.get(status, ""), c["status_label"])
    return (
        f'<section class=connector id="connector-{c["connector_id"]}">'
        f"<h2><span>{c['connector_id']} · {escape(c['device'])}</span>{badge}</h2>"
        f"{_dl(rows)}{faults}{spark}{buttons}</section>"
    )


def _load(load: dict[str, Any]) -> str | None:
    """The site's power sharing: its limit and why, and per phase the grid against the limit.
    None while there is nothing to show (no decision yet, nothing shared and no site limit)."""
    if load["limit_a"] is None and load["site_limit_a"] is None and load["fuse_a"] is None:
        return None
    rows = []
    if load["limit_a"] is not None:
        rows.append(("Chargers may draw", f"{_amps(load['limit_a'])} per phase · {escape(str(load['limit_label']))}"))
    else:
        rows.append(("Chargers may draw", "no limit shared"))
    if load["fuse_a"] is not None:
        rows.append(("Main fuse", _amps(load["fuse_a"])))
    if load["site_limit_a"] is not None:
        rows.append(("Site limit (MQTT)", _amps(load["site_limit_a"])))
    table = ""
    if load["phase_limits_a"] is not None:
        grid = load["grid_a"] or [None] * len(load["phase_limits_a"])
        offered = load["offered_a"] or [None] * len(load["phase_limits_a"])
        cells = [
            f"<tr><td>L{i + 1}</td><td>{_amps(grid[i])}</td><td>{_amps(limit)}</td><td>{_amps(offered[i])}</td>"
            f"<td class=detail>{escape(str(source))}</td></tr>"
            for i, (limit, source) in enumerate(zip(load["phase_limits_a"], load["phase_limit_reasons"], strict=True))
        ]
        head = "<tr><th>Phase</th><th>Grid</th><th>Chargers may draw</th><th>Offered</th><th>From</th></tr>"
        table = f"<table id=phases>{head}{''.join(cells)}</table>"
    return f"<section class=wide id=load><h2>Power sharing</h2>{_dl(rows)}{table}</section>"


def _buttons(c: dict[str, Any]) -> str:
    cid = int(c["connector_id"])
    out = []
    if c["session_active"]:
        out.append(_button(f"/api/connectors/{cid}/stop", "{}", "Stop session"))
    body = '{"available": false}' if c["available"] else '{"available": true}'
    label = "Take out of service" if c["available"] else "Put back in service"
    out.append(_button(f"/api/connectors/{cid}/availability", body, label))
    return "".join(out)


def _button(path: str, body: str, label: str) -> str:
    return f"<button data-path='{escape(path)}' data-body='{escape(body)}'>{escape(label)}</button>"


def _meter(m: dict[str, Any]) -> str:
    role = {None: "meter", 0: "site meter"}.get(m["connector_id"], f"meter of connector {m['connector_id']}")
    state = {True: ("ok", "answering"), False: ("bad", "not answering"), None: ("", "waiting")}[m["device_online"]]
    rows = [("Role", role), ("Power", _fmt(m["power_w"], "W")), ("Energy register", _fmt(m["energy_wh"], "Wh"))]
    faults = "".join(f"<p class=fault>Fault: {escape(f['label'])}</p>" for f in m["faults"])
    return (
        f"<section class=meter><h2><span>{escape(m['meter'])}</span>{_badge(*state)}</h2>{_dl(rows)}{faults}</section>"
    )


def _devices(devices: list[dict[str, Any]]) -> str:
    rows = []
    for d in devices:
        state = _device_badge(d)
        detail = escape(d["reason"] or "")
        if d["kind"] == "modbus":
            last = f", last {d['last_poll_ms']} ms" if d["last_poll_ms"] is not None else ""
            detail = f"{d['polls']} polls, {d['poll_errors']} failed{last}" + (f"<br>{detail}" if detail else "")
        rows.append(f"<tr><td>{escape(d['device'])}</td><td>{_badge(*state)}</td><td class=detail>{detail}</td></tr>")
    return f"<section class=wide id=devices><h2>Devices</h2><table>{''.join(rows)}</table></section>"


def _device_badge(d: dict[str, Any]) -> tuple[str, str]:
    """A device's badge. Before a Modbus device counts as lost (``offline_after_failures``) its
    polls may already fail: that is "not answering yet", not "not polled yet"."""
    if d["kind"] == "ocpp":
        return {True: ("ok", "connected"), False: ("bad", "not connected"), None: ("", "never connected")}[d["online"]]
    if d["online"] is None:
        return ("bad", "not answering yet") if d["poll_errors"] else ("", "not polled yet")
    return ("ok", "answering") if d["online"] else ("bad", "not answering")


def _soc(c: dict[str, Any]) -> str:
    if c["soc_percent"] is None:
        return "-"
    estimate = " (estimate)" if c["soc_estimated"] else ""
    return f"{c['soc_percent']:.0f} %{estimate}"


def _backlog(outbox: dict[str, Any]) -> str:
    if not outbox["records"]:
        return "nothing"
    age = outbox["oldest_age_s"]
    oldest = f", oldest {age:,.0f} s" if age is not None else ""
    held = outbox["held_in_memory"]
    memory = f", {held:,} in memory only" if held else ""
    return f"{outbox['records']:,} message(s){oldest}{memory}"


def _link(connected: bool) -> str:
    return _badge("ok", "connected") if connected else _badge("bad", "not connected")


def _badge(kind: str, text: str) -> str:
    return f"<span class='badge {kind}'>{escape(text)}</span>"


def _dl(rows: list[tuple[str, str]]) -> str:
    return "<dl>" + "".join(f"<dt>{escape(k)}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _fmt(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:,.0f} {unit}"


def _amps(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} A"
