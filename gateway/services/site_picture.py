"""The whole site at a glance, as one JSON-able object: what ``/api/status`` returns, and what the
status page, ``ocpp-gateway status`` and the demo's table render.

Connectors, meters, the CSMS link and the outbox use the MQTT payload shapes
(``gateway.services.state_payloads``), so a field means the same wherever a user meets it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gateway import __version__
from gateway.domain.model import Connector, ConnectorStatus, FaultKind, VehicleState, iso_utc
from gateway.domain.phase_limits import Reason
from gateway.services.readiness import readiness
from gateway.services.site import Site
from gateway.services.state_payloads import (
    Payload,
    connector_state,
    device_state,
    meter_state,
    outbox_state,
    site_state,
    upstream_state,
)
from gateway.services.telemetry import Telemetry

#: Bumped when a field is removed or changes meaning (added fields do not bump it). 2: ``ready``
#: means every part works now (``state``, ``problems``), no longer only "every device was polled";
#: ``waiting_for`` may name the CSMS, the broker and native chargers too.
PICTURE_VERSION = 2

#: Statuses and faults in the words of a site owner (``status_label``, a fault's ``label``).
STATUS_LABELS: dict[str, str] = {
    ConnectorStatus.AVAILABLE: "Available",
    ConnectorStatus.OCCUPIED: "Car plugged in",
    ConnectorStatus.CHARGING: "Charging",
    ConnectorStatus.SUSPENDED_EV: "Paused by the car",
    ConnectorStatus.SUSPENDED_EVSE: "Paused by the charger",
    ConnectorStatus.FINISHING: "Finishing",
    ConnectorStatus.UNAVAILABLE: "Unavailable",
    ConnectorStatus.FAULTED: "Faulted",
}
FAULT_LABELS: dict[str, str] = {
    FaultKind.OVER_TEMPERATURE: "Overheating",
    FaultKind.OVER_CURRENT: "Over-current",
    FaultKind.GROUND_FAULT: "Earth fault",
    FaultKind.SHORT_CIRCUIT: "Short circuit",
    FaultKind.OVER_VOLTAGE: "Over-voltage",
    FaultKind.UNDER_VOLTAGE: "Under-voltage",
    FaultKind.POWER_METER: "Energy meter fault",
    FaultKind.POWER_SWITCH: "Contactor fault",
    FaultKind.CONNECTOR_LOCK: "Connector lock fault",
    FaultKind.EV_COMMUNICATION: "Car communication fault",
    FaultKind.COMMUNICATION_LOST: "No communication",
    FaultKind.INTERNAL: "Internal error",
    FaultKind.OTHER: "Other fault",
}

#: What binds a share, or what the site's limit comes from, in the words of a site owner
#: (``share_label`` of a connector, ``limit_label`` of the site's ``load``).
REASON_LABELS: dict[str, str] = {
    Reason.FUSE: "fuse: the grid connection is full",
    Reason.FALLBACK: "fallback: the grid meter does not answer, a safe limit applies",
    Reason.CSMS: "the CSMS limits the site",
    Reason.SITE_LIMIT: "the site limit set over MQTT",
    Reason.OWN_LIMIT: "gets all it may take",
    Reason.TAKES_LESS: "the car takes less than it is offered",
    Reason.PRIORITY: "connectors of a higher priority come first",
    Reason.ROTATION: "waiting for its turn",
    Reason.RAISE_HELD: "more current follows shortly",
    Reason.SWITCH_HELD: "paused a short while, to spare the contactor",
    Reason.SILENT: "its charger does not answer: its last share is kept free",
    Reason.IDLE: "the car took nothing: it gets current when others leave room",
}


@dataclass(frozen=True, slots=True)
class SiteLabels:
    """What the picture says about the site that the Site itself does not know (from the config)."""

    site_id: str
    site_name: str = ""
    csms_endpoint: str = ""  # ws(s)://host/path/<charge point id>
    mqtt_broker: str = ""  # host:port
    commands: bool = False  # the status page may stop sessions and switch connectors


def _status_label(connector: Connector) -> str:
    """The status in words; Preparing without a car is a start that waits for one (OCPP 1.6
    reports both as Preparing, a person wants to know which)."""
    if connector.status is ConnectorStatus.OCCUPIED and connector.vehicle_state in (None, VehicleState.A):
        return "Waiting for the car"
    return STATUS_LABELS.get(connector.status, str(connector.status))


def site_picture(
    site: Site, telemetry: Telemetry, labels: SiteLabels, *, started_at: datetime | None = None
) -> Payload:
    """Everything the status page shows, now; times UTC ISO 8601, units in the key names.
    ``started_at``: when the gateway started (its uptime; None: not known here)."""
    now = site.clock.now()
    backlog = site.backlog  # worked out on each read (O(backlog)): once per picture
    load = site.load.state
    grid = next((m for m in site.meters.values() if m.connector_id == 0), None)
    connectors = []
    for connector in site.connectors.values():
        billing_wh = site.billing_energy_wh(connector.connector_id)
        state = connector_state(connector, billing_wh, site.load.share_of(connector.connector_id))
        state["billing_energy_wh"] = billing_wh
        state["upstream"] = connector.upstream  # False: a passthrough charger's, not on the merged charge point
        state["status_label"] = _status_label(connector)
        state["share_label"] = _reason_label(state["share_reason"])
        _label_faults(state)
        connectors.append(state)
    health = readiness(site, telemetry, backlog, now)
    up = site.upstream
    summary = site_state(
        site.connectors.values(), grid, site.upstream.connected, backlog, now, load, site.load.site_limit_a
    )
    summary["load"]["limit_label"] = _reason_label(summary["load"]["limit_reason"])  # type: ignore[index]
    return {
        "version": PICTURE_VERSION,
        "generated_at": iso_utc(now),
        "gateway": {
            "version": __version__,
            "started_at": iso_utc(started_at) if started_at is not None else None,
            "uptime_s": round((now - started_at).total_seconds()) if started_at is not None else None,
        },
        "site": {
            "id": labels.site_id,
            "name": labels.site_name,
            **summary,
        },
        "ready": health.ready,
        "state": health.state,  # ready, starting or degraded (see gateway.services.readiness)
        "problems": [{"part": p.part, "message": p.message} for p in health.problems],
        "waiting_for": list(health.waiting_for),
        "connectors": connectors,
        "meters": [_label_faults(meter_state(meter)) for meter in site.meters.values()],
        "devices": [_device(site, telemetry, name) for name in site.devices()],
        "upstream": {
            "endpoint": labels.csms_endpoint,
            **upstream_state(up.connected, up.registration, up.changed_at, up.reason),
        },
        "outbox": outbox_state(backlog, now),
        "mqtt": {
            "broker": labels.mqtt_broker,
            "connected": telemetry.mqtt.connected,
            "changed_at": iso_utc(telemetry.mqtt.since) if telemetry.mqtt.since else None,
            "reason": telemetry.mqtt.reason or None,
        },
        "commands": labels.commands,
    }


def _reason_label(reason: object) -> str | None:
    return None if reason is None else REASON_LABELS.get(str(reason), str(reason))


def _label_faults(state: Payload) -> Payload:
    """Give each fault of a connector or meter state its ``label`` in plain words."""
    for fault in state["faults"]:  # type: ignore[attr-defined]
        fault["label"] = FAULT_LABELS.get(fault["kind"], fault["kind"])
    return state


def _device(site: Site, telemetry: Telemetry, name: str) -> Payload:
    """A field device's health; Modbus ones (polled by the gateway) with their poll figures."""
    health = site.device_health(name)
    state = device_state(name, health.online, health.reason, health.since)
    polls = telemetry.polls.get(name)
    state["kind"] = "modbus" if polls is not None else "ocpp"
    state["polls"] = polls.polls if polls is not None else None
    state["poll_errors"] = polls.errors if polls is not None else None
    state["last_poll_ms"] = round(polls.last_s * 1000, 1) if polls is not None and polls.last_s is not None else None
    return state
