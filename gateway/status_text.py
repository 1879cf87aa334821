"""The site picture (``/api/status``) as text for a terminal: ``ocpp-gateway status`` and the demo.

Reads only the JSON object, never the Site, so it shows the same whether the gateway runs in
this process or on the other side of an HTTP request.
"""

from __future__ import annotations

from typing import Any


def render(picture: dict[str, Any], csms_note: str = "", mqtt_note: str = "") -> str:
    """The picture in ~80 columns: links first, then connectors, meters and devices."""
    site = picture["site"]
    name = f" ({site['name']})" if site.get("name") else ""
    waiting = ", ".join(picture.get("waiting_for") or [])
    ready = "ready" if picture.get("ready") else f"starting: waiting for the first poll of {waiting}"
    up, outbox, mqtt = picture["upstream"], picture["outbox"], picture["mqtt"]
    lines = [
        f"site {site['id']}{name}: {ready}",
        f"  CSMS    {up['endpoint']}{_note(csms_note)}: {_link(up['connected'])}, boot {up['registration']}",
        f"  outbox  {_backlog(outbox)}",
        f"  MQTT    {mqtt['broker']}{_note(mqtt_note)}: {_link(mqtt['connected'])}"
        + (f" ({mqtt['reason']})" if mqtt.get("reason") else ""),
        "",
        f"  {'conn':>4}  {'device':<16} {'status':<22} {'power':>10}  {'energy register':>16}  "
        f"{'session':>10}  {'SoC':>5}",
    ]
    for c in picture["connectors"]:
        lines.append(
            f"  {c['connector_id']:>4}  {c['device']:<16} {_status(c):<22} {_fmt(c['power_w'], 'W'):>10}  "
            f"{_fmt(c['billing_energy_wh'], 'Wh'):>16}  {_fmt(c['session_energy_wh'], 'Wh'):>10}  "
            f"{_fmt(c['soc_percent'], '%'):>5}"
        )
    for m in picture["meters"]:
        where = {None: "meter", 0: "site meter"}.get(m["connector_id"], f"meter of {m['connector_id']}")
        state = {True: where, False: "not answering", None: "waiting"}[m["device_online"]]
        lines.append(
            f"  {'-':>4}  {m['meter']:<16} {state:<22} {_fmt(m['power_w'], 'W'):>10}  {_fmt(m['energy_wh'], 'Wh'):>16}"
        )
    lines += ["", "  devices"]
    for d in picture["devices"]:
        health = {True: "answering", False: f"NOT answering: {d['reason']}", None: "not polled yet"}[d["online"]]
        if d["kind"] == "ocpp":
            health = {True: "connected", False: "NOT connected", None: "never connected"}[d["online"]]
        polls = f"  ({d['polls']} polls, {d['poll_errors']} failed)" if d["kind"] == "modbus" else ""
        lines.append(f"    {d['device']:<16} {d['kind']:<7} {health}{polls}")
    return "\n".join(lines)


def _status(connector: dict[str, Any]) -> str:
    """The connector's status, with its first fault when it has one."""
    faults = connector.get("faults") or []
    label = connector["status_label"]
    return f"{label}: {faults[0]['label']}" if faults else str(label)


def _backlog(outbox: dict[str, Any]) -> str:
    """What waits for the CSMS, and a disk that refuses to keep it (then it is in memory only)."""
    disk = f"; DISK PROBLEM: {outbox['disk_problem']}" if outbox.get("disk_problem") else ""
    if not outbox["records"]:
        return "empty" + disk
    age = outbox.get("oldest_age_s")
    oldest = f", oldest {age:,.0f} s old" if age is not None else ""
    return f"{outbox['records']:,} message(s) waiting for the CSMS{oldest}{disk}"


def _link(connected: bool) -> str:
    return "connected" if connected else "NOT connected"


def _note(note: str) -> str:
    return f" ({note})" if note else ""


def _fmt(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:,.0f} {unit}"
