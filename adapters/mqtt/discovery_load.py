"""Home Assistant entities of site power sharing (docs/load-management.md, "What you see").

On the gateway device, read from ``<prefix>/site/state``'s ``load`` object: what all chargers
together may draw (the tightest phase, and per phase), what that limit comes from, and, when
``[mqtt.commands] site_limit`` is on, a number that sets the site limit. On every connector, read
from its state: its share and the reason that binds it. The grid current per phase is the grid
meter's own device (its Current L1..L3 sensors).
"""

from __future__ import annotations

from collections.abc import Iterable

from adapters.mqtt.ha_entities import PHASES, Entity, entity_slug, enum, number, sensor, value
from gateway.domain.phase_limits import Reason
from gateway.services.shared_load import MAX_SITE_LIMIT_A

#: What a site's limit can come from (``load.limit_reason``).
LIMIT_SOURCES: tuple[str, ...] = (Reason.FUSE, Reason.FALLBACK, Reason.CSMS, Reason.SITE_LIMIT)
#: What can bind a connector's share (``share_reason``).
SHARE_REASONS: tuple[str, ...] = tuple(reason.value for reason in Reason)


# ``load`` is read as ``(value_json.load or {})``: a state without it (an older gateway) renders
# unknown, where ``value_json.load.x`` would be an error in HA's log.
_LOAD = "(value_json.load or {})"


def load_value(key: str) -> str:
    """The ``load`` object's ``key``; ``None`` (unknown in HA) when it is null or missing."""
    return f"{{{{ {_LOAD}.{key} | default(None) }}}}"


def load_phase(key: str, index: int) -> str:
    """Element ``index`` of the ``load`` object's per-phase list ``key``; ``None`` when it has none."""
    return f"{{% set phases = {_LOAD}.{key} or [] %}}{{{{ phases[{index}] if phases | length > {index} else None }}}}"


def load_attributes(keys: Iterable[str]) -> str:
    """A ``json_attributes_template`` picking ``keys`` from the state's ``load`` object."""
    picked = ", ".join(f"'{key}': {_LOAD}.{key} | default(None)" for key in keys)
    return f"{{{{ {{{picked}}} | tojson }}}}"


def load_per_phase(key: str, name: str) -> list[Entity]:
    """One diagnostic current sensor per phase L1..L3 of the ``load`` object's list ``key``."""
    return [
        sensor(f"{entity_slug(name)}_l{i + 1}", f"{name} L{i + 1}", load_phase(key, i), "current", diagnostic=True)
        for i in range(PHASES)
    ]


def _limit() -> Entity:
    entity = sensor("charging_limit", "Charging limit", load_value("limit_a"), "current")
    attrs = ("phase_limits_a", "phase_limit_reasons", "offered_a", "fuse_a", "site_limit_a", "decided_at")
    return Entity(
        entity.component,
        entity.key,
        entity.name,
        {**entity.options, "json_attributes_template": load_attributes(attrs)},
    )


#: The gateway device's sharing entities, all read from ``<prefix>/site/state``.
SITE_LOAD_ENTITIES: tuple[Entity, ...] = (
    _limit(),
    enum("charging_limit_reason", "Charging limit reason", load_value("limit_reason"), LIMIT_SOURCES),
    *load_per_phase("phase_limits_a", "Charging limit"),
    *load_per_phase("offered_a", "Offered current"),
)

#: Every connector's share, read from ``<prefix>/connector/<n>/state``.
CONNECTOR_SHARE_ENTITIES: tuple[Entity, ...] = (
    sensor("share", "Share", value("share_a"), "current", attrs=("share_reason",)),
    enum("share_reason", "Share reason", value("share_reason"), SHARE_REASONS),
)

SITE_LIMIT = number(
    "site_limit",
    "Site limit",
    '{"current_a": {{ value }}}',
    0,
    int(MAX_SITE_LIMIT_A),
    "A",
    device_class="current",
    value_template=load_value("site_limit_a"),
)

#: ``[mqtt.commands]`` switch -> (site command topic level ``<prefix>/site/set/<level>``, its entities).
SITE_COMMAND_ENTITIES: dict[str, tuple[str, tuple[Entity, ...]]] = {
    "site_limit": ("limit", (SITE_LIMIT,)),
}
