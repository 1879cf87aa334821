"""``/metrics``: the gateway's figures in the Prometheus text format (version 0.0.4).

Written by hand (a few dozen series; the format is simple and stable) from the telemetry and
the site picture, at the moment of the scrape: nothing is kept twice. Names follow
Prometheus' conventions (``_total`` counters, ``_seconds``, base units; energy stays in Wh, the
unit of the registers it is read from, and says so in its name).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from gateway.domain.model import ConnectorStatus
from gateway.domain.phase_limits import Reason
from gateway.services.telemetry import POLL_BUCKETS_S, Telemetry

PREFIX = "ocpp_gateway_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Sample = tuple[dict[str, str], float]


class Exposition:
    """Collects metric families and writes them out, each with its HELP and TYPE lines."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> None:
        full = PREFIX + name
        self._lines.append(f"# HELP {full} {help_text}")
        self._lines.append(f"# TYPE {full} {kind}")
        for labels, value in samples:
            self._lines.append(f"{full}{_labels(labels)} {_value(value)}")

    def histogram(self, name: str, help_text: str, series: Iterable[tuple[dict[str, str], Any]]) -> None:
        """``series``: (labels, PollStats) pairs, written as ``_bucket``/``_sum``/``_count``."""
        full = PREFIX + name
        self._lines += [f"# HELP {full} {help_text}", f"# TYPE {full} histogram"]
        for labels, stats in series:
            pairs = _pairs(labels)  # escaped once per series, not once per bucket
            before_le = pairs + "," if pairs else ""
            for le, count in zip(_LE, stats.cumulative(), strict=True):
                self._lines.append(f'{full}_bucket{{{before_le}le="{le}"}} {count}')
            self._lines.append(f"{full}_sum{_labels(labels)} {_value(stats.seconds_sum)}")
            self._lines.append(f"{full}_count{_labels(labels)} {stats.polls}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def render_metrics(telemetry: Telemetry, picture: dict[str, Any]) -> str:
    """Every series, as of now."""
    out = Exposition()
    gauge, counter = "gauge", "counter"
    ready = [({}, picture["ready"])]
    out.family("ready", gauge, "1 while every part works (devices, CSMS, broker, disk; as /readyz).", ready)
    problems = [({"part": part}, sum(p["part"] == part for p in picture["problems"])) for part in _PARTS]
    out.family("problems", gauge, "What keeps the gateway from ready, by part (as /readyz).", problems)
    started = telemetry.started_at.timestamp()
    out.family("start_time_seconds", gauge, "When the gateway started (Unix time).", [({}, started)])
    polls = sorted(telemetry.polls.items())
    out.histogram(
        "poll_duration_seconds",
        "How long one poll of a device took (failed ones included; with the wait for a shared RTU bus).",
        (({"device": name}, stats) for name, stats in polls),
    )
    errors = [({"device": name}, stats.errors) for name, stats in polls]
    out.family("poll_errors_total", counter, "Polls of a device that failed (timeout, refused, bad answer).", errors)
    devices = [({"device": d["device"], "kind": d["kind"]}, d["online"] is True) for d in picture["devices"]]
    out.family("device_online", gauge, "1 while a device answers (a native charger: while connected).", devices)

    up, outbox = picture["upstream"], picture["outbox"]
    out.family("upstream_connected", gauge, "1 while the CSMS connection is up.", [({}, up["connected"])])
    accepted = up["registration"] == "Accepted"
    out.family("upstream_accepted", gauge, "1 once the CSMS accepted BootNotification.", [({}, accepted)])
    sent = [({"action": action}, n) for action, n in sorted(telemetry.messages_sent.items())]
    out.family("upstream_messages_sent_total", counter, "CALLs to the CSMS that it answered, by action.", sent)
    failed = [({"action": a, "reason": why}, n) for (a, why), n in sorted(telemetry.messages_failed.items())]
    out.family("upstream_messages_failed_total", counter, "CALLs to the CSMS that failed, by action and why.", failed)
    out.family("outbox_records", gauge, "Billing messages waiting for the CSMS.", [({}, outbox["records"])])
    out.family("outbox_bytes", gauge, "Disk space the waiting messages take.", [({}, outbox["size_bytes"])])
    age = [({}, outbox["oldest_age_s"] or 0.0)]
    out.family("outbox_oldest_age_seconds", gauge, "Age of the oldest waiting message (0: none waits).", age)
    out.family("outbox_dropped_total", counter, "Messages given up (attempts, disk bound).", [({}, outbox["dropped"])])
    out.family("outbox_thinned_total", counter, "Periodic samples removed by thinning.", [({}, outbox["thinned"])])
    parked = [({}, outbox["parked"])]
    out.family("outbox_parked", gauge, "StopTransactions the CSMS kept refusing, set aside.", parked)
    failing = [({}, outbox["disk_problem"] is not None)]
    out.family("outbox_disk_failing", gauge, "1 while the outbox's disk refuses writes.", failing)
    held = [({}, outbox["held_in_memory"])]
    out.family("outbox_held_in_memory", gauge, "Messages held in memory only (a crash loses them).", held)
    out.family("mqtt_connected", gauge, "1 while the MQTT broker connection is up.", [({}, telemetry.mqtt.connected)])
    if (history := picture.get("history")) is not None and history["enabled"]:
        set_aside = [({}, len(history["problems"]))]
        out.family("history_problems", gauge, "Problems of the history's file since the start (set aside).", set_aside)

    connectors, meters = picture["connectors"], picture["meters"]
    statuses = [({**_cid(c), "status": s}, c["status"] == s) for c in connectors for s in _STATUSES]
    out.family("connector_status", gauge, "1 for each connector's current status (as on MQTT).", statuses)
    faults = [(_cid(c), len(c["faults"])) for c in connectors]
    out.family("connector_faults", gauge, "Active faults on a connector.", faults)
    for name, key, help_text in (
        ("power_watts", "power_w", "Charging power."),
        ("energy_register_watt_hours", "billing_energy_wh", "The connector's billing register (Wh)."),
        ("session_energy_watt_hours", "session_energy_wh", "Energy of the running session (Wh)."),
        ("soc_percent", "soc_percent", "The car's state of charge, where known."),
    ):
        out.family(f"connector_{name}", gauge, help_text, _present(connectors, key, _cid))
    out.family(
        "meter_power_watts", gauge, "Power through a meter (import positive).", _present(meters, "power_w", _meter)
    )
    registers = _present(meters, "energy_wh", _meter)
    out.family("meter_energy_register_watt_hours", gauge, "A meter's import register (Wh).", registers)
    _load(out, picture["site"]["load"], connectors)
    return out.text()


def _load(out: Exposition, load: dict[str, Any], connectors: list[dict[str, Any]]) -> None:
    """Site power sharing: limits, grid current and offers per phase, each connector's share. The
    reasons are 0/1 series over their fixed vocabulary (labels bounded: 3 phases x 4 sources,
    connectors x 11 reasons); values the gateway does not have are no series."""
    gauge = "gauge"
    limits, sources = load["phase_limits_a"] or [], load["phase_limit_reasons"] or []
    out.family(
        "site_charging_limit_amperes",
        gauge,
        "What all chargers together may draw on a phase (A), while the site's power is shared.",
        [(_phase(i), a) for i, a in enumerate(limits)],
    )
    out.family(
        "site_charging_limit_source",
        gauge,
        "1 for what each phase's limit comes from (fuse, fallback, csms, site_limit).",
        [({**_phase(i), "source": s}, source == s) for i, source in enumerate(sources) for s in _LIMIT_SOURCES],
    )
    grid = [(_phase(i), a) for i, a in enumerate(load["grid_a"] or []) if a is not None]
    out.family("site_grid_current_amperes", gauge, "The grid meter's current per phase (A), for sharing.", grid)
    offered = [(_phase(i), a) for i, a in enumerate(load["offered_a"] or []) if a is not None]
    out.family("site_offered_amperes", gauge, "What the chargers are offered together per phase (A).", offered)
    for name, key, help_text in (
        ("site_fuse_amperes", "fuse_a", "The main fuse per phase (A), with [load_management]."),
        ("site_limit_amperes", "site_limit_a", "The site limit set over MQTT (A per phase), while one is set."),
    ):
        out.family(name, gauge, help_text, [] if load[key] is None else [({}, load[key])])
    shares = [c for c in connectors if c["share_a"] is not None]
    out.family(
        "connector_share_amperes",
        gauge,
        "A connector's share of the site's power (A; 0: paused).",
        _present(shares, "share_a", _cid),
    )
    reasons = [({**_cid(c), "reason": r}, c["share_reason"] == r) for c in shares for r in _REASONS]
    out.family("connector_share_reason", gauge, "1 for the reason that binds a connector's share.", reasons)


def _phase(index: int) -> dict[str, str]:
    return {"phase": f"L{index + 1}"}


def _cid(c: dict[str, Any]) -> dict[str, str]:
    return {"connector": str(c["connector_id"])}


def _meter(m: dict[str, Any]) -> dict[str, str]:
    return {"meter": m["meter"]}


def _present(rows: list[dict[str, Any]], key: str, labels: Any) -> list[Sample]:
    """Only the rows that have the value: a missing reading is no series, never a made-up zero."""
    return [(labels(row), row[key]) for row in rows if row[key] is not None]


def _labels(labels: dict[str, str]) -> str:
    return "{" + _pairs(labels) + "}" if labels else ""


def _pairs(labels: dict[str, str]) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())


def _escape(value: str) -> str:
    if "\\" not in value and '"' not in value and "\n" not in value:
        return value  # nearly always: names are letters, digits, '.', '_' and '-'
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _value(value: float | bool) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        if math.isnan(value):
            return "NaN"
        return repr(value)
    return str(value)


_LE = tuple(_value(bound) for bound in (*POLL_BUCKETS_S, math.inf))  # the histogram's "le" labels
_STATUSES = tuple(status.value for status in ConnectorStatus)
_REASONS = tuple(reason.value for reason in Reason)
_LIMIT_SOURCES = (Reason.FUSE.value, Reason.FALLBACK.value, Reason.CSMS.value, Reason.SITE_LIMIT.value)
_PARTS = ("csms", "device", "mqtt", "disk")  # the parts of gateway.services.readiness.Problem
