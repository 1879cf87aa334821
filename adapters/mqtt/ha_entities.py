"""Home Assistant entities as data, and the Jinja templates they read the gateway's JSON state with.

Pure data, no I/O: ``adapters.mqtt.discovery`` turns these into discovery configs. A value the
gateway does not have (``null``, a phase the device lacks, a key an older gateway does not send)
renders as ``None``, which HA shows as *unknown*; an empty rendering would be ignored and keep a
stale value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from adapters.mqtt.payloads import Payload

#: Phases shown per connector and meter; a single-phase device leaves L2 and L3 unknown.
PHASES = 3

_NOT_IN_ENTITY_ID = re.compile(r"[^a-z0-9]+")


def entity_slug(text: str) -> str:
    """``text`` as part of an entity id: lower case ``[a-z0-9]`` runs joined by single underscores."""
    return _NOT_IN_ENTITY_ID.sub("_", text.lower()).strip("_") or "x"


# -- value templates: Jinja that HA renders against the JSON state --------------------------------
def value(key: str) -> str:
    """The state's ``key``; ``None`` (unknown in HA) when it is null or missing."""
    return f"{{{{ value_json.{key} | default(None) }}}}"


def phase(key: str, index: int) -> str:
    """Element ``index`` of the per-phase list ``key``; ``None`` when the list is shorter."""
    return (
        f"{{% set phases = value_json.{key} or [] %}}{{{{ phases[{index}] if phases | length > {index} else None }}}}"
    )


def attributes(keys: Iterable[str]) -> str:
    """A ``json_attributes_template`` picking ``keys`` from the state (null when missing)."""
    picked = ", ".join(f"'{key}': value_json.{key} | default(None)" for key in keys)
    return f"{{{{ {{{picked}}} | tojson }}}}"


# -- entities as data ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Quantity:
    """What HA needs to chart and convert a numeric sensor (its documented class/unit pairs)."""

    device_class: str | None
    state_class: str | None  # None: HA keeps no long-term statistics of it
    unit: str | None
    precision: int | None = None


QUANTITIES: dict[str, Quantity] = {
    "power": Quantity("power", "measurement", "W", 0),
    "energy": Quantity("energy", "total_increasing", "Wh", 0),  # lifetime registers; a reset starts a new cycle
    # One finished session's energy: no state class. HA refuses "measurement" for energy, and
    # "total"/"total_increasing" would add up the differences between one session and the next
    # (a 5 kWh session after a 20 kWh one would count -15 kWh, or +5). The lifetime register is
    # the one for the energy dashboard.
    "energy_of_one": Quantity("energy", None, "Wh", 0),
    "current": Quantity("current", "measurement", "A", 1),
    "voltage": Quantity("voltage", "measurement", "V", 0),
    "frequency": Quantity("frequency", "measurement", "Hz", 2),
    "temperature": Quantity("temperature", "measurement", "°C", 1),
    "battery": Quantity("battery", "measurement", "%", 0),
    "duration": Quantity("duration", "measurement", "s", 0),
    "count": Quantity(None, "measurement", None),
    "counter": Quantity(None, "total_increasing", None),
}


@dataclass(frozen=True, slots=True)
class Entity:
    """One HA entity: ``component`` (sensor, binary_sensor, ...), a ``key`` unique within its
    device, a ``name`` (HA puts the device name before it) and the component's own options.

    ``follows_device`` False: only the gateway's availability counts, because the gateway knows
    the value while the device is silent (its status, its faults, whether it answers); a problem
    sensor that went *unavailable* on a communication loss would hide exactly that problem.
    """

    component: str
    key: str
    name: str
    options: Payload = field(default_factory=dict)
    follows_device: bool = True


def _extras(options: Payload, diagnostic: bool, attrs: Iterable[str]) -> Payload:
    if diagnostic:
        options["entity_category"] = "diagnostic"
    if attrs:
        options["json_attributes_template"] = attributes(attrs)
    return options


def sensor(
    key: str,
    name: str,
    template: str,
    quantity: str | None = None,
    *,
    diagnostic: bool = False,
    attrs: Iterable[str] = (),
) -> Entity:
    """A sensor; ``quantity`` (a key of QUANTITIES) makes it numeric, without one it shows text."""
    options: Payload = {"value_template": template}
    if quantity is not None:
        q = QUANTITIES[quantity]
        if q.device_class is not None:
            options["device_class"] = q.device_class
        if q.state_class is not None:
            options["state_class"] = q.state_class
        if q.unit is not None:
            options["unit_of_measurement"] = q.unit
        if q.precision is not None:
            options["suggested_display_precision"] = q.precision
    return Entity("sensor", key, name, _extras(options, diagnostic, attrs))


def enum(
    key: str, name: str, template: str, choices: Iterable[str], *, diagnostic: bool = False, attrs: Iterable[str] = ()
) -> Entity:
    """An enum sensor: HA offers ``choices`` in automations; no unit, no state class. The gateway
    knows these values whatever the device does, so they follow the gateway's availability only."""
    options: Payload = {"value_template": template, "device_class": "enum", "options": list(choices)}
    return Entity("sensor", key, name, _extras(options, diagnostic, attrs), follows_device=False)


def binary(
    key: str,
    name: str,
    template: str,
    device_class: str | None = None,
    *,
    diagnostic: bool = False,
    attrs: Iterable[str] = (),
    follows_device: bool = True,
) -> Entity:
    """A binary sensor whose template renders ``ON``, ``OFF`` or ``None`` (unknown)."""
    options: Payload = {"value_template": template, "payload_on": "ON", "payload_off": "OFF"}
    if device_class is not None:
        options["device_class"] = device_class
    return Entity("binary_sensor", key, name, _extras(options, diagnostic, attrs), follows_device)


def per_phase(key: str, name: str, quantity: str, *, diagnostic: bool = False) -> list[Entity]:
    """One sensor per phase L1..L3 of the list ``key``."""
    return [
        sensor(f"{entity_slug(name)}_l{i + 1}", f"{name} L{i + 1}", phase(key, i), quantity, diagnostic=diagnostic)
        for i in range(PHASES)
    ]


def number(key: str, name: str, template: str, low: int, high: int, unit: str, **options: object) -> Entity:
    payload: Payload = {"command_template": template, "min": low, "max": high, "step": 1, "mode": "box"}
    return Entity("number", key, name, {**payload, "unit_of_measurement": unit, **options})
