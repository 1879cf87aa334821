"""Home Assistant MQTT discovery: the config messages that make the gateway's devices appear in HA.

Pure data, no I/O: the bridge publishes what ``Discovery.configs`` returns (retained) after every
connect and again when Home Assistant announces ``online`` on ``<discovery prefix>/status``.

One HA device per charger, per meter and for the gateway itself. Entities get no topics of their
own: each reads one of the retained JSON state topics the bridge publishes anyway (docs/mqtt.md)
through a ``value_template``, so HA shows what every other MQTT client sees. A value the gateway
does not have (``null``, a phase the device lacks, a key an older gateway does not send) renders
as ``None``, which HA shows as *unknown*; an empty rendering would be ignored and keep a stale value.

Discovery is per entity (``<prefix>/<component>/<node_id>/<object_id>/config``) rather than per
device (``<prefix>/device/...``, HA 2024.11 and later): every HA version understands it, and one
entity is removed by clearing its one topic, where device discovery needs the whole device
republished. Entity ids are suggested with ``default_entity_id`` (HA 2025.10 and later; older
versions ignore it); the deprecated ``object_id`` option is never sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version

from adapters.mqtt.discovery_load import CONNECTOR_SHARE_ENTITIES, SITE_COMMAND_ENTITIES, SITE_LOAD_ENTITIES
from adapters.mqtt.discovery_sessions import LAST_SESSION_ENTITIES, SESSIONS_TODAY
from adapters.mqtt.ha_entities import (
    Entity,
    binary,
    entity_slug,
    enum,
    number,
    per_phase,
    sensor,
    value,
)
from adapters.mqtt.payloads import AVAILABILITY_OFFLINE, AVAILABILITY_ONLINE, Payload, Topics
from gateway.domain.model import ConnectorStatus
from gateway.services.ocpp_status import ERROR_CODE, STATUS
from gateway.services.site import Site

DEFAULT_DISCOVERY_PREFIX = "homeassistant"
ORIGIN_NAME = "ocpp-gateway"

#: The highest current limit the HA number offers, in A (a Mode 3 AC connector on 32 A fuses).
CURRENT_LIMIT_MAX_A = 32

#: OCPP 1.6 vocabulary the gateway reports upstream (``ocpp_status``, ``ocpp_error_code``).
OCPP_STATUSES: tuple[str, ...] = tuple(dict.fromkeys(STATUS.values()))
OCPP_ERROR_CODES: tuple[str, ...] = ("NoError", *sorted(set(ERROR_CODE.values())))
#: ``registration`` in ``<prefix>/upstream/state``: the last BootNotification result.
REGISTRATIONS: tuple[str, ...] = ("Accepted", "Pending", "Rejected", "none")

_NOT_IN_TOPIC = re.compile(r"[^A-Za-z0-9_-]+")


def package_version() -> str:
    """The installed ocpp-gateway version, for ``origin`` and the gateway device."""
    try:
        return version("ocpp-gateway")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def topic_id(text: str) -> str:
    """``text`` as a discovery topic level: ``[A-Za-z0-9_-]``, what HA accepts in node and object ids."""
    return _NOT_IN_TOPIC.sub("_", text).strip("_") or "_"


#: Availability from ``<prefix>/device/<name>/state``: offline only when ``online`` is false, so
#: ``null`` (not polled yet) shows values as unknown rather than flickering to unavailable.
DEVICE_AVAILABLE = f"{{{{ '{AVAILABILITY_OFFLINE}' if value_json.online == false else '{AVAILABILITY_ONLINE}' }}}}"
PROBLEM = "{{ 'ON' if value_json.faults else 'OFF' }}"
METER_PROBLEM = "{{ 'ON' if value_json.faults or value_json.device_online == false else 'OFF' }}"
#: Control-pilot state B, C or D: a car is plugged in; A: none; unknown, E or F: unknown.
PLUGGED = "{{ {'A': 'OFF', 'B': 'ON', 'C': 'ON', 'D': 'ON'}.get(value_json.vehicle_state) }}"
SESSION_ACTIVE = "{{ 'ON' if value_json.session_active else 'OFF' }}"
ONLINE = "{{ 'ON' if value_json.online else ('OFF' if value_json.online == false else None) }}"
CONNECTED = "{{ 'ON' if value_json.connected else 'OFF' }}"
IN_SERVICE = "{{ 'OFF' if value_json.available == false else 'ON' }}"


#: Every connector, read from ``<prefix>/connector/<n>/state``.
CONNECTOR_ENTITIES: tuple[Entity, ...] = (
    enum(
        "status", "Status", value("status"), [s.value for s in ConnectorStatus], attrs=("status_since", "vehicle_state")
    ),
    binary("problem", "Problem", PROBLEM, "problem", attrs=("faults",), follows_device=False),
    binary("plug", "Plug", PLUGGED, "plug"),
    binary("session_active", "Session active", SESSION_ACTIVE, attrs=("session_started_at",)),
    sensor("power", "Power", value("power_w"), "power"),
    sensor("energy", "Energy", value("energy_wh"), "energy"),
    sensor("session_energy", "Session energy", value("session_energy_wh"), "energy"),
    *per_phase("current_a", "Current", "current"),
    *per_phase("voltage_v", "Voltage", "voltage", diagnostic=True),
    sensor("offered_current", "Offered current", value("offered_current_a"), "current"),
    sensor(
        "soc",
        "State of charge",
        value("soc_percent"),
        "battery",
        attrs=("soc_source", "soc_estimated", "soc_measured_at", "soc_target_percent"),
    ),
    sensor("temperature", "Temperature", value("temperature_c"), "temperature", diagnostic=True),
    sensor("frequency", "Frequency", value("frequency_hz"), "frequency", diagnostic=True),
    enum("ocpp_status", "OCPP status", value("ocpp_status"), OCPP_STATUSES, diagnostic=True),
    enum("ocpp_error_code", "OCPP error code", value("ocpp_error_code"), OCPP_ERROR_CODES, diagnostic=True),
    sensor("transaction_id", "Transaction", value("transaction_id"), diagnostic=True),
    sensor("id_tag", "ID tag", value("id_tag"), diagnostic=True),
    *CONNECTOR_SHARE_ENTITIES,
)

#: Every meter, read from ``<prefix>/meter/<name>/state``.
METER_ENTITIES: tuple[Entity, ...] = (
    sensor("power", "Power", value("power_w"), "power"),
    sensor("energy", "Energy", value("energy_wh"), "energy"),
    sensor("energy_export", "Energy export", value("energy_export_wh"), "energy"),
    *per_phase("current_a", "Current", "current"),
    *per_phase("voltage_v", "Voltage", "voltage", diagnostic=True),
    sensor("frequency", "Frequency", value("frequency_hz"), "frequency", diagnostic=True),
    binary("problem", "Problem", METER_PROBLEM, "problem", attrs=("faults", "device_online"), follows_device=False),
)

#: Every field device, read from ``<prefix>/device/<name>/state``.
DEVICE_ENTITIES: tuple[Entity, ...] = (
    binary(
        "online",
        "Communication",
        ONLINE,
        "connectivity",
        diagnostic=True,
        attrs=("reason", "changed_at"),
        follows_device=False,
    ),
)


CURRENT_LIMIT = number(
    "current_limit",
    "Current limit",
    '{"current_a": {{ value }}}',
    0,
    CURRENT_LIMIT_MAX_A,
    "A",
    device_class="current",
    value_template=value("current_limit_a"),
)
SOC_TARGET = number(
    "soc_target",
    "SoC target",
    '{"soc_target_percent": {{ value }}}',
    1,
    100,
    "%",
    value_template=value("soc_target_percent"),
)
# The switch sends JSON but its state is rendered as ON/OFF: state_on/state_off say so (they
# default to the payloads sent).
AVAILABLE = Entity(
    "switch",
    "available",
    "Available",
    {
        "payload_on": '{"available": true}',
        "payload_off": '{"available": false}',
        "value_template": IN_SERVICE,
        "state_on": "ON",
        "state_off": "OFF",
    },
)
START = Entity("button", "session_start", "Start session", {"payload_press": '{"action": "start"}'})
STOP = Entity("button", "session_stop", "Stop session", {"payload_press": '{"action": "stop"}'})

#: ``[mqtt.commands]`` switch -> (command topic level ``.../set/<level>``, its entities). Only
#: switches with entities: ``soc_input`` is for car integrations, not people. Payloads: docs/mqtt.md.
COMMAND_ENTITIES: dict[str, tuple[str, tuple[Entity, ...]]] = {
    "current_limit": ("current_limit", (CURRENT_LIMIT,)),
    "availability": ("available", (AVAILABLE,)),
    "session": ("session", (START, STOP)),
    "soc_target": ("soc_target", (SOC_TARGET,)),
}


def gateway_entities(topics: Topics) -> list[tuple[str, Entity]]:
    """(state topic, entity) of the gateway device: the CSMS link, the outbox and site totals."""
    site = topics.site
    return [
        (
            topics.upstream,
            binary(
                "csms_connected", "CSMS connection", CONNECTED, "connectivity", attrs=("registration", "changed_at")
            ),
        ),
        (
            topics.upstream,
            enum("csms_registration", "CSMS registration", value("registration"), REGISTRATIONS, diagnostic=True),
        ),
        (
            topics.outbox,
            sensor(
                "outbox_records",
                "Outbox records",
                value("records"),
                "count",
                attrs=("oldest_created_at", "size_bytes", "thinned", "problems"),
            ),
        ),
        (
            topics.outbox,
            sensor("outbox_oldest_age", "Outbox oldest age", value("oldest_age_s"), "duration", diagnostic=True),
        ),
        (topics.outbox, sensor("outbox_dropped", "Outbox dropped", value("dropped"), "counter", diagnostic=True)),
        (site, sensor("total_power", "Total power", value("total_power_w"), "power")),
        (site, sensor("connectors_charging", "Connectors charging", value("connectors_charging"), "count")),
        (site, sensor("grid_power", "Grid power", value("grid_power_w"), "power")),
        (site, sensor("grid_energy", "Grid energy", value("grid_energy_wh"), "energy")),
        *((site, entity) for entity in SITE_LOAD_ENTITIES),
        (topics.sessions, SESSIONS_TODAY),
    ]


# -- discovery messages ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Discovery:
    """Discovery configs of one gateway: ``prefix`` is HA's discovery prefix, ``topics`` the
    gateway's own topics, ``commands`` the ``[mqtt.commands]`` switches that are on.

    Ids derive from the topic prefix, unique per gateway on a broker (two gateways on one prefix
    would overwrite each other's state anyway): ``node_id`` and unique ids from all of it,
    suggested entity ids from its last level (the site id by default).
    """

    prefix: str
    topics: Topics
    commands: frozenset[str] = frozenset()
    sw_version: str = field(default_factory=package_version)

    def __post_init__(self) -> None:
        if not self.prefix or self.prefix.endswith("/") or any(ch in self.prefix for ch in "+#\x00"):
            raise ValueError(f"discovery prefix {self.prefix!r} must be a topic without wildcards or a trailing '/'")

    @property
    def status_topic(self) -> str:
        """Where HA announces ``online`` (its birth message) and ``offline``."""
        return f"{self.prefix}/status"

    @property
    def node_id(self) -> str:
        return topic_id(self.topics.prefix)

    @property
    def site(self) -> str:
        """The last level of the topic prefix: the start of every suggested entity id."""
        return self.topics.prefix.rsplit("/", 1)[-1]

    def configs(self, site: Site) -> list[tuple[str, Payload]]:
        """(config topic, payload) of every entity of the gateway, its chargers and its meters.

        Raises ``ValueError`` if two entities would share an id (devices named ``a.b`` and ``a_b``).
        """
        gateway: Payload = {
            "identifiers": [self.node_id],
            "name": f"OCPP gateway {self.site}",
            "manufacturer": ORIGIN_NAME,
            "model": "OCPP 1.6 gateway",
            "sw_version": self.sw_version,
        }
        messages = [
            self._config(entity, gateway, "gateway", state, None) for state, entity in gateway_entities(self.topics)
        ]
        for switch, (level, entities) in SITE_COMMAND_ENTITIES.items():
            if switch in self.commands:
                for entity in entities:
                    options = {**entity.options, "command_topic": self.topics.site_command(level), "retain": False}
                    messages.append(
                        self._config(replace(entity, options=options), gateway, "gateway", self.topics.site, None)
                    )
        chargers: dict[str, list[int]] = {}
        for cid in sorted(site.connectors):
            chargers.setdefault(site.connectors[cid].device, []).append(cid)
        for name, connector_ids in chargers.items():
            for cid in connector_ids:
                # A charger with one connector needs no "Connector n" in its entity names.
                label = "" if len(connector_ids) == 1 else f"Connector {cid} "
                messages += self._connector_configs(name, cid, label)
        for name in sorted(site.meters):
            device = self._device(name, "Charger" if name in chargers else "Energy meter")
            messages += [self._config(e, device, name, self.topics.meter(name), name) for e in METER_ENTITIES]
        for name in site.devices():
            device = self._device(name, "Charger" if name in chargers else "Energy meter")
            messages += [self._config(e, device, name, self.topics.device(name), name) for e in DEVICE_ENTITIES]
        _check_unique(messages)
        return messages

    def cleared(self, site: Site) -> list[str]:
        """Config topics of the command entities whose switch is off. An empty retained message
        on each makes an entity from a run with the switch on disappear from HA."""
        site_entities = [
            self._config_topic(entity.component, topic_id(f"gateway_{entity.key}"))
            for switch, (_level, entities) in SITE_COMMAND_ENTITIES.items()
            if switch not in self.commands
            for entity in entities
        ]
        return site_entities + [
            self._config_topic(entity.component, topic_id(f"{site.connectors[cid].device}_c{cid}_{entity.key}"))
            for switch, (_level, entities) in COMMAND_ENTITIES.items()
            if switch not in self.commands
            for cid in sorted(site.connectors)
            for entity in entities
        ]

    def _connector_configs(self, device_name: str, cid: int, label: str) -> list[tuple[str, Payload]]:
        device = self._device(device_name, "Charger")
        owner, state = f"{device_name}_c{cid}", self.topics.connector(cid)
        messages = [self._config(_named(e, label), device, owner, state, device_name) for e in CONNECTOR_ENTITIES]
        last = self.topics.last_session(cid)
        messages += [self._config(_named(e, label), device, owner, last, device_name) for e in LAST_SESSION_ENTITIES]
        for switch, (level, entities) in COMMAND_ENTITIES.items():
            if switch not in self.commands:
                continue
            for entity in entities:
                options = {**entity.options, "command_topic": self.topics.command(cid, level), "retain": False}
                command = replace(_named(entity, label), options=options)
                # Buttons have no state to read.
                reads = state if "value_template" in options else None
                messages.append(self._config(command, device, owner, reads, device_name))
        return messages

    def _device(self, name: str, model: str) -> Payload:
        return {
            "identifiers": [f"{self.node_id}_{topic_id(name)}"],
            "name": name,
            "model": model,
            "via_device": self.node_id,
        }

    def _config_topic(self, component: str, object_id: str) -> str:
        return f"{self.prefix}/{component}/{self.node_id}/{object_id}/config"

    def _config(
        self, entity: Entity, device: Payload, owner: str, state_topic: str | None, field_device: str | None
    ) -> tuple[str, Payload]:
        """The config of ``entity`` of ``owner`` (a connector, meter, device or the gateway);
        ``field_device`` is the charger or meter whose communication state it follows, if any."""
        object_id = topic_id(f"{owner}_{entity.key}")
        availability: list[Payload] = [
            {
                "topic": self.topics.availability,
                "payload_available": AVAILABILITY_ONLINE,
                "payload_not_available": AVAILABILITY_OFFLINE,
            }
        ]
        if field_device is not None and entity.follows_device:
            availability.append(
                {
                    "topic": self.topics.device(field_device),
                    "value_template": DEVICE_AVAILABLE,
                    "payload_available": AVAILABILITY_ONLINE,
                    "payload_not_available": AVAILABILITY_OFFLINE,
                }
            )
        payload: Payload = {
            "name": entity.name,
            "unique_id": f"{self.node_id}_{object_id}",
            "default_entity_id": f"{entity.component}.{entity_slug(f'{self.site}_{owner}_{entity.key}')}",
            "device": device,
            "origin": {"name": ORIGIN_NAME, "sw_version": self.sw_version},
            "availability": availability,
            "availability_mode": "all",
        }
        if state_topic is not None:
            payload["state_topic"] = state_topic
            if "json_attributes_template" in entity.options:
                payload["json_attributes_topic"] = state_topic
        payload.update(entity.options)
        return self._config_topic(entity.component, object_id), payload


def _named(entity: Entity, label: str) -> Entity:
    """``entity`` with ``label`` ("Connector 2 ") before its name, in HA's sentence case:
    "Connector 2 power", but "Connector 2 SoC target"."""
    if not label:
        return entity
    first, _, rest = entity.name.partition(" ")
    if first[1:] == first[1:].lower():
        first = first.lower()
    return replace(entity, name=f"{label}{first} {rest}".rstrip())


def _check_unique(messages: list[tuple[str, Payload]]) -> None:
    seen: set[object] = set()
    for topic, payload in messages:
        for key in (topic, payload["unique_id"]):
            if key in seen:
                raise ValueError(f"two Home Assistant entities would share the id {key!r}: rename a device")
            seen.add(key)
