"""The site picture (``/api/status``) as text for a terminal: ``ocpp-gateway status`` and the demo.

Reads only the JSON object, never the Site, so it shows the same whether the gateway runs in
this process or on the other side of an HTTP request.
"""

from __future__ import annotations

from typing import Any

#: Column widths of the connector and meter table: at least these, wider for a longer value up
#: to the cap (beyond it a value is cut with "~"), so every row lines up whatever its status says.
DEVICE_WIDTH, STATUS_WIDTH, MAX_WIDTH = 16, 22, 36


def render(picture: dict[str, Any], csms_note: str = "", mqtt_note: str = "") -> str:
    """The picture in ~80 columns: links first, then connectors, meters and devices."""
    site = picture["site"]
    name = f" ({site['name']})" if site.get("name") else ""
    up, outbox, mqtt = picture["upstream"], picture["outbox"], picture["mqtt"]
    csms_down = f" ({up['reason']})" if not up["connected"] and up.get("reason") else ""
    lines = [
        f"site {site['id']}{name}: {_state(picture)}",
        *(f"  ! {problem['message']}" for problem in picture.get("problems") or []),
        f"  CSMS    {up['endpoint']}{_note(csms_note)}: {_link(up['connected'])}{csms_down}, boot {up['registration']}",
        f"  outbox  {_backlog(outbox)}",
        f"  MQTT    {mqtt['broker']}{_note(mqtt_note)}: {_link(mqtt['connected'])}"
        + (f" ({mqtt['reason']})" if mqtt.get("reason") else ""),
        *_sharing(site.get("load"), picture["connectors"]),
        "",
    ]
    meters = [(m, _meter_state(m)) for m in picture["meters"]]
    names = [c["device"] for c in picture["connectors"]] + [m["meter"] for m, _ in meters]
    statuses = [_status(c) for c in picture["connectors"]] + [state for _, state in meters]
    dw, sw = _width(names, DEVICE_WIDTH), _width(statuses, STATUS_WIDTH)
    lines.append(
        f"  {'conn':>4}  {'device':<{dw}} {'status':<{sw}} {'power':>10}  {'energy register':>16}  "
        f"{'session':>10}  {'SoC':>5}"
    )
    for c in picture["connectors"]:
        lines.append(
            f"  {c['connector_id']:>4}  {_cut(c['device'], dw):<{dw}} {_cut(_status(c), sw):<{sw}} "
            f"{_fmt(c['power_w'], 'W'):>10}  {_fmt(c['billing_energy_wh'], 'Wh'):>16}  "
            f"{_fmt(c['session_energy_wh'], 'Wh'):>10}  {_fmt(c['soc_percent'], '%'):>5}"
        )
    for m, state in meters:
        lines.append(
            f"  {'-':>4}  {_cut(m['meter'], dw):<{dw}} {_cut(state, sw):<{sw}} {_fmt(m['power_w'], 'W'):>10}  "
            f"{_fmt(m['energy_wh'], 'Wh'):>16}"
        )
    lines += ["", "  devices"]
    dw = _width([d["device"] for d in picture["devices"]], DEVICE_WIDTH)
    for d in picture["devices"]:
        polls = f"  ({d['polls']} polls, {d['poll_errors']} failed)" if d["kind"] == "modbus" else ""
        lines.append(f"    {_cut(d['device'], dw):<{dw}} {d['kind']:<7} {_device_health(d)}{polls}")
    return "\n".join(lines)


def _sharing(load: dict[str, Any] | None, connectors: list[dict[str, Any]]) -> list[str]:
    """The status page's "Power sharing" card in a few lines: what the chargers may draw and why,
    then each connector's share. Nothing while nothing is shared or configured, so a site without
    load management looks as it always did."""
    if not load or (load["limit_a"] is None and load["fuse_a"] is None and load["site_limit_a"] is None):
        return []
    limit = "no limit shared" if load["limit_a"] is None else f"{load['limit_a']:.1f} A per phase"
    why = f": {load['limit_label']}" if load["limit_a"] is not None and load.get("limit_label") else ""
    extra = [f"main fuse {load['fuse_a']:.0f} A"] if load["fuse_a"] is not None else []
    extra += [f"site limit {load['site_limit_a']:.1f} A"] if load["site_limit_a"] is not None else []
    lines = [f"  sharing chargers may draw {limit}{why}" + (f" ({', '.join(extra)})" if extra else "")]
    for c in connectors:
        if c.get("share_a") is not None:
            share = f"{c['share_a']:.1f} A" if c["share_a"] else "paused"
            lines.append(f"    {c['connector_id']:>4}  {share:>7}  {c.get('share_label') or c['share_reason']}")
    return lines


def _state(picture: dict[str, Any]) -> str:
    """The first line's verdict: ready, starting (and for what), or DEGRADED (the problems follow)."""
    state = picture.get("state") or ("ready" if picture.get("ready") else "starting")
    waiting = ", ".join(picture.get("waiting_for") or [])
    if state == "ready":
        return "ready"
    if state == "starting":
        return f"starting: waiting for {waiting}" if waiting else "starting"
    count = len(picture.get("problems") or [])
    return f"DEGRADED: {count} problem(s)" + (f"; still waiting for {waiting}" if waiting else "")


def _device_health(d: dict[str, Any]) -> str:
    if d["kind"] == "ocpp":
        return {True: "connected", False: "NOT connected", None: "never connected"}[d["online"]]
    if d["online"] is None:  # failed polls before it counts as lost are "not answering yet"
        return "NOT answering yet" if d["poll_errors"] else "not polled yet"
    return "answering" if d["online"] else f"NOT answering: {d['reason']}"


def _meter_state(m: dict[str, Any]) -> str:
    where = {None: "meter", 0: "site meter"}.get(m["connector_id"], f"meter of {m['connector_id']}")
    return {True: where, False: "not answering", None: "waiting"}[m["device_online"]]


def _width(values: list[str], least: int) -> int:
    return min(max([least, *(len(v) for v in values)]), MAX_WIDTH)


def _cut(value: str, width: int) -> str:
    return value if len(value) <= width else value[: width - 1] + "~"


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
