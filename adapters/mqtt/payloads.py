"""Topic names, fault events and encoding of the MQTT adapter; the state payloads themselves are
``gateway.services.state_payloads`` (shared with the status page).

Kept free of any client library so the wire schema (documented in ``docs/mqtt.md``) can be
unit-tested without a broker.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from gateway.domain.model import Fault, iso_utc
from gateway.services.state_payloads import Payload, fault_payload

AVAILABILITY_ONLINE = "online"
AVAILABILITY_OFFLINE = "offline"

#: Keys that change with every poll even when nothing else did; ignored by ``same_state``.
VOLATILE_KEYS: frozenset[str] = frozenset({"measured_at"})

_UNSAFE_IN_TOPIC = re.compile(r"[/+#\s\x00]+")


def topic_segment(name: str) -> str:
    """``name`` made safe for one topic level: ``/``, ``+``, ``#``, NUL and blanks become ``_``.

    Device names come from the config; a ``/`` would silently create an extra topic level and
    ``+``/``#`` are wildcards that brokers reject in a publish. The payload keeps the real name.
    """
    safe = _UNSAFE_IN_TOPIC.sub("_", name)
    return safe or "_"


@dataclass(frozen=True, slots=True)
class Topics:
    """Every topic the bridge publishes, under one prefix such as ``ocpp-gateway/demo-site``."""

    prefix: str

    def __post_init__(self) -> None:
        # Validate here, as aiomqtt's Topic does, so a bad prefix fails at start-up and not at
        # the first publish minutes later.
        # Same rules as gateway.config's MqttConfig (a leading '/' is legal MQTT, if unusual).
        if not self.prefix or self.prefix.endswith("/"):
            raise ValueError(f"MQTT topic prefix {self.prefix!r} must be non-empty without a trailing '/'")
        if "+" in self.prefix or "#" in self.prefix or "\x00" in self.prefix:
            raise ValueError(f"MQTT topic prefix {self.prefix!r} must not contain '+', '#' or NUL")

    @property
    def availability(self) -> str:
        return f"{self.prefix}/availability"

    @property
    def upstream(self) -> str:
        return f"{self.prefix}/upstream/state"

    @property
    def outbox(self) -> str:
        return f"{self.prefix}/outbox/state"

    @property
    def site(self) -> str:
        return f"{self.prefix}/site/state"

    def connector(self, connector_id: int) -> str:
        return f"{self.prefix}/connector/{connector_id}/state"

    def last_session(self, connector_id: int) -> str:
        """The connector's last finished session (retained)."""
        return f"{self.prefix}/connector/{connector_id}/last_session"

    @property
    def sessions(self) -> str:
        """Sessions started today, the box's local day (retained)."""
        return f"{self.prefix}/site/sessions"

    def connector_fault(self, connector_id: int) -> str:
        """Fault events of one connector (not retained: the state topic has the current list)."""
        return f"{self.prefix}/connector/{connector_id}/fault"

    def meter(self, name: str) -> str:
        return f"{self.prefix}/meter/{topic_segment(name)}/state"

    def meter_fault(self, name: str) -> str:
        """Fault events of one meter (not retained)."""
        return f"{self.prefix}/meter/{topic_segment(name)}/fault"

    def device(self, name: str) -> str:
        return f"{self.prefix}/device/{topic_segment(name)}/state"

    @property
    def error(self) -> str:
        """Why a command was not carried out (not retained)."""
        return f"{self.prefix}/error"

    @property
    def commands(self) -> str:
        """The subscription filter of every command topic: ``<prefix>/connector/<n>/set/<command>``."""
        return f"{self.prefix}/connector/+/set/+"

    def command(self, connector_id: int, name: str) -> str:
        return f"{self.prefix}/connector/{connector_id}/set/{name}"

    @property
    def site_commands(self) -> str:
        """The subscription filter of the site's command topics: ``<prefix>/site/set/<command>``."""
        return f"{self.prefix}/site/set/+"

    def site_command(self, name: str) -> str:
        return f"{self.prefix}/site/set/{name}"


def fault_event(
    connector_id: int | None, fault: Fault, *, raised: bool, at: datetime, meter: str | None = None
) -> Payload:
    """One fault raised or cleared (on a connector or a meter), stamped with the time of the poll that saw it."""
    where: Payload = {"connector_id": connector_id} if meter is None else {"meter": meter}
    return {
        **where,
        "event": "raised" if raised else "cleared",
        **fault_payload(fault),
        "at": iso_utc(at),
    }


def encode(payload: Mapping[str, object]) -> bytes:
    """Compact UTF-8 JSON; ``allow_nan=False`` so a stray NaN fails here, not in a consumer."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def same_state(previous: Mapping[str, object] | None, current: Mapping[str, object]) -> bool:
    """True if ``current`` says nothing new compared with ``previous`` (timestamps of polls ignored).

    A poll that finds identical values must not produce a message: retained state is for
    changes, and a busy site polls every second.
    """
    if previous is None:
        return False
    strip = {k: v for k, v in current.items() if k not in VOLATILE_KEYS}
    return strip == {k: v for k, v in previous.items() if k not in VOLATILE_KEYS}
