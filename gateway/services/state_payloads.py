"""The site's state as JSON-able dicts: one schema for MQTT topics and the status page's API.

Pure functions of the Site's view, free of any protocol, so the wire schema (documented in
``docs/mqtt.md``; the status API returns the same objects) can be unit-tested without a broker
or a web server. Units are in the key names, times are UTC ISO 8601 with ``Z``, and a value the
source does not have is ``null`` (never a made-up zero).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime

from gateway.domain.authorization import mask_id_tag
from gateway.domain.battery import SocSource
from gateway.domain.model import Connector, ConnectorStatus, Fault, Meter, Reading, iso_utc
from gateway.domain.outbox import BacklogStats
from gateway.domain.phase_limits import ConnectorShare, SiteLoad
from gateway.services.ocpp_status import status_notification_fields
from gateway.services.session_tally import LastSession

Payload = dict[str, object]

#: Reading fields published for connectors and meters, in wire order. Listed explicitly (not
#: taken from ``Reading.__slots__``) because this is a public contract: a new domain field must
#: be added here and to docs/mqtt.md on purpose; a unit test fails until it is.
READING_FIELDS: tuple[str, ...] = (
    "energy_wh",
    "energy_export_wh",
    "session_energy_wh",
    "power_w",
    "current_a",
    "voltage_v",
    "frequency_hz",
    "temperature_c",
    "soc_percent",
    "offered_current_a",
)

#: ``soc_source`` on the wire: a car integration's report can only have come in over MQTT.
SOC_SOURCE: dict[SocSource, str] = {
    SocSource.CHARGER: "charger",
    SocSource.REPORT: "mqtt",
    SocSource.ESTIMATE: "estimate",
}


def _number(value: float | None) -> float | None:
    """A JSON-safe number: NaN and infinities (a decoder's sentinel slipping through) become null."""
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _iso(moment: datetime | None) -> str | None:
    return iso_utc(moment) if moment is not None else None


def reading_fields(reading: Reading | None) -> Payload:
    """The measured values and ``measured_at`` of ``reading``; all null (phase lists empty) if none yet."""
    fields: Payload = {}
    for name in READING_FIELDS:
        value = getattr(reading, name) if reading is not None else None
        if name in ("current_a", "voltage_v"):
            fields[name] = [_number(v) for v in value] if value else []
        else:
            fields[name] = _number(value)
    fields["measured_at"] = _iso(reading.measured_at) if reading is not None else None
    return fields


def fault_payload(fault: Fault) -> Payload:
    return {"kind": fault.kind.value, "vendor_code": fault.vendor_code, "info": fault.info}


def connector_state(
    connector: Connector, billing_wh: int | None = None, share: ConnectorShare | None = None
) -> Payload:
    """The retained state of one connector: status (the gateway's and the OCPP one the CSMS is
    told), health, faults, its latest reading, its session and its share of the site's power
    (``share``: the last sharing decision's, None while it is in no session).

    ``billing_wh`` is the connector's billing register now: the session's energy is that minus
    its meterStart, the same figure the CSMS will bill (a charger's own session counter is
    never shown as it)."""
    payload: Payload = {
        "connector_id": connector.connector_id,
        "device": connector.device,
        "status": connector.status.value,
        "status_since": iso_utc(connector.status_since),
        "vehicle_state": connector.vehicle_state.value if connector.vehicle_state is not None else None,
        "device_online": connector.device_online,
        "faults": [fault_payload(f) for f in connector.faults],
    }
    payload.update(reading_fields(connector.reading))
    # The best SoC the Site knows (not only the charger's), where it comes from and when it was
    # measured: its age is now - soc_measured_at, worked out by the reader, whose clock runs on.
    soc = connector.soc
    payload["soc_percent"] = _number(soc.soc_percent) if soc is not None else None
    payload["soc_source"] = SOC_SOURCE[soc.source] if soc is not None else None
    payload["soc_measured_at"] = iso_utc(soc.measured_at) if soc is not None else None
    payload["soc_estimated"] = soc.estimated if soc is not None else False
    payload["soc_target_percent"] = connector.soc_target_percent
    payload["session_active"] = connector.session_active
    ocpp = status_notification_fields(connector.connector_id, connector.status, connector.faults)
    payload["ocpp_status"], payload["ocpp_error_code"] = ocpp["status"], ocpp["error_code"]
    session = connector.session
    payload["transaction_id"] = session.transaction_id if session is not None else None
    payload["id_tag"] = mask_id_tag(session.id_tag) if session is not None else None
    payload["session_started_at"] = iso_utc(session.started_at) if session is not None else None
    delivered = billing_wh - session.meter_start_wh if session is not None and billing_wh is not None else None
    payload["session_energy_wh"] = delivered
    payload["current_limit_a"] = connector.current_ceiling_a
    payload["available"] = connector.available
    payload["share_a"] = _number(share.current_a) if share is not None else None
    payload["share_reason"] = share.reason.value if share is not None else None
    return payload


def site_state(
    connectors: Iterable[Connector],
    grid: Meter | None,
    upstream_connected: bool,
    backlog: BacklogStats,
    now: datetime,
    load: SiteLoad | None = None,
    site_limit_a: float | None = None,
) -> Payload:
    """The whole site at a glance: what its connectors draw, what the grid meter (the meter on
    connector 0) says, whether the CSMS is there, how much waits for it, and how the chargers
    share the site's power (``load``: the last sharing decision; ``site_limit_a``: the MQTT site
    limit set now; see ``load_state``)."""
    connectors = list(connectors)
    answering = [c for c in connectors if c.device_online and c.reading is not None]
    powers = [c.reading.power_w for c in answering if c.reading is not None and c.reading.power_w is not None]
    grid_reading = grid.reading if grid is not None and grid.device_online else None
    backlog_fields = outbox_state(backlog, now)
    return {
        "total_power_w": _number(sum(powers)) if powers else None,
        "connectors_charging": sum(1 for c in connectors if c.status is ConnectorStatus.CHARGING),
        "grid_power_w": _number(grid_reading.power_w) if grid_reading is not None else None,
        "grid_energy_wh": _number(grid_reading.energy_wh) if grid_reading is not None else None,
        "upstream_connected": upstream_connected,
        "backlog_records": backlog_fields["records"],
        "backlog_oldest_age_s": backlog_fields["oldest_age_s"],
        "load": load_state(load, site_limit_a),
    }


def _per_phase(values: Iterable[float] | None) -> list[float | None] | None:
    return None if values is None else [_number(round(v, 3)) for v in values]


def load_state(load: SiteLoad | None, site_limit_a: float | None) -> Payload:
    """The site's power sharing (docs/load-management.md, "What you see").

    ``limit_a`` is what all chargers together may draw on the tightest phase and ``limit_reason``
    what that limit comes from (fuse, fallback, csms, site_limit); per phase (L1, L2, L3) in
    ``phase_limits_a`` and ``phase_limit_reasons``. All null while nothing is shared (no
    ``[load_management]``, no ChargePointMaxProfile, no site limit) or before the first decision
    (``decided_at`` null). ``grid_a``: the grid meter per phase (null while it does not answer or
    without load management); ``offered_a``: per phase what the chargers are offered together;
    ``shares``: per connector in a session its share in A and the reason that binds it.
    ``site_limit_a`` is the MQTT site limit set now (null: none).
    """
    limits = load.limits if load is not None else None
    shares = sorted(load.shares.items()) if load is not None else []
    return {
        "decided_at": _iso(load.decided_at) if load is not None else None,
        "limit_a": _number(load.limit_a) if load is not None else None,
        "limit_reason": load.reason.value if load is not None and load.reason is not None else None,
        "phase_limits_a": _per_phase(limit.limit_a for limit in limits) if limits is not None else None,
        "phase_limit_reasons": [limit.source.value for limit in limits] if limits is not None else None,
        "grid_a": _per_phase(load.grid_a) if load is not None else None,
        "offered_a": _per_phase(load.offered_a) if load is not None else None,
        "fuse_a": load.fuse_a if load is not None else None,
        "site_limit_a": site_limit_a,
        "shares": [
            {
                "connector_id": cid,
                "current_a": _number(share.current_a),
                "reason": share.reason.value,
                "priority": share.priority,
                "drawn_a": _number(round(share.drawn_a, 2)) if share.drawn_a is not None else None,
            }
            for cid, share in shares
        ],
    }


def meter_state(meter: Meter) -> Payload:
    """The retained state of one meter; ``connector_id`` 0 = whole site, null = not tied to a connector."""
    payload: Payload = {
        "meter": meter.name,
        "connector_id": meter.connector_id,
        "device_online": meter.device_online,
        "faults": [fault_payload(f) for f in meter.faults],
    }
    payload.update(reading_fields(meter.reading))
    return payload


def upstream_state(connected: bool, registration: str, changed_at: datetime | None, reason: str = "") -> Payload:
    """The CSMS link: socket ``connected``, the BootNotification ``registration`` result and,
    while it is down, the ``reason`` last reported (null when there is none).

    ``changed_at`` is null when the bridge has not seen a change since it started (the Site does
    not keep that time).
    """
    return {
        "connected": connected,
        "registration": registration,
        "changed_at": _iso(changed_at),
        "reason": reason or None,
    }


def outbox_state(stats: BacklogStats, now: datetime) -> Payload:
    """The queue of billing messages waiting for the CSMS: how many, how old the oldest is, and
    what had to be given up (dropped after failed attempts or for disk space, or thinned).

    A disk that refuses writes is a problem like a damaged store (``problems``), and has its own
    fields too (``disk_problem``, ``held_in_memory``): what is held in memory only is what a crash
    now would lose."""
    oldest = datetime.fromisoformat(stats.oldest_created_at) if stats.oldest_created_at else None
    problems = [f"{problem.what} ({problem.path})" for problem in stats.problems]
    if stats.disk_problem is not None:
        problems.append(stats.disk_problem)
    return {
        "records": stats.records,
        "size_bytes": stats.size_bytes,
        "oldest_created_at": stats.oldest_created_at,
        "oldest_age_s": round((now - oldest).total_seconds(), 1) if oldest is not None else None,
        "dropped": stats.dropped,
        "thinned": stats.thinned,
        "parked": stats.parked,
        "held_in_memory": stats.held_in_memory,
        "disk_problem": stats.disk_problem,
        "problems": problems,
    }


def device_state(device: str, online: bool | None, reason: str | None, changed_at: datetime | None) -> Payload:
    """Whether a field device answers its polls; ``online`` is null before the first poll."""
    return {
        "device": device,
        "online": online,
        "reason": reason if online is False and reason else None,
        "changed_at": _iso(changed_at),
    }


def last_session_state(connector_id: int, last: LastSession | None) -> Payload:
    """A connector's last finished session (all null before its first): the energy it billed and
    its times; the id tag only masked (this leaves the box)."""
    return {
        "connector_id": connector_id,
        "energy_wh": last.energy_wh if last is not None else None,
        "started_at": _iso(last.started_at) if last is not None else None,
        "stopped_at": _iso(last.stopped_at) if last is not None else None,
        "id_tag": last.masked_id_tag if last is not None else None,
    }


def sessions_today_state(count: int, day_started_at: datetime) -> Payload:
    """Sessions started since the box's local midnight; ``day`` is that local date, ``since`` that
    midnight in UTC."""
    return {"sessions_today": count, "day": day_started_at.date().isoformat(), "since": iso_utc(day_started_at)}
