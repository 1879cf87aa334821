"""MQTT command topics: ``<prefix>/connector/<n>/set/<command>`` and ``<prefix>/site/set/<command>``,
checked and handed to the Site.

Each command is switched on in ``[mqtt.commands]``; anyone who may publish on the broker may
otherwise steer the chargers. A payload that is not valid changes nothing and is answered on
``<prefix>/error``; a command that is off, unknown or retained is ignored with one log line per
topic. Retained commands are never acted on: a retained SoC of last week is not news, and the
broker hands every retained message to the bridge again after each reconnect.

Anyone who may publish may also publish garbage, so sizes are bounded *before* anything is
parsed or converted: the connector level of the topic (MAX_CONNECTOR_DIGITS: ``int()`` of 5000
digits raises), the payload (MAX_PAYLOAD_BYTES) and its JSON nesting (MAX_JSON_DEPTH: the
parser recurses, and a deep enough ``[[[[`` raises RecursionError). Topics are shortened in log
lines, error answers and the log-once memory, so a 64 KB topic costs neither memory nor log.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from adapters.mqtt.payloads import Payload, Topics
from gateway.domain.commands import CommandSource
from gateway.domain.errors import CommandRejected
from gateway.domain.model import iso_utc
from gateway.services.site import Site

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Command:
    """One command topic: the ``[mqtt.commands]`` switch that enables it and the keys it takes."""

    switch: str
    required: frozenset[str]  # at least one of these
    optional: frozenset[str] = frozenset()


#: Command topics by their last level.
COMMANDS: dict[str, Command] = {
    "soc": Command("soc_input", frozenset({"soc_percent", "capacity_wh"}), frozenset({"measured_at"})),
    "soc_target": Command("soc_target", frozenset({"soc_target_percent"})),
    "current_limit": Command("current_limit", frozenset({"current_a"})),
    "available": Command("availability", frozenset({"available"})),
    "session": Command("session", frozenset({"action"}), frozenset({"id_tag"})),
}
#: Commands for the whole site (``<prefix>/site/set/<level>``), by their last level.
SITE_COMMANDS: dict[str, Command] = {
    "limit": Command("site_limit", frozenset({"current_a"})),
}
# A command topic takes at most RATE_LIMIT messages per RATE_WINDOW_S; the rest of a flood is
# dropped (logged once per flood), so a looping automation cannot hammer a charger's registers.
RATE_LIMIT = 5
RATE_WINDOW_S = 10.0
MAX_TOLD = 1000  # (topic, reason) pairs remembered for log-once
SWITCHES = frozenset(command.switch for command in (*COMMANDS.values(), *SITE_COMMANDS.values()))
#: The largest command payload taken; the longest valid one (a SoC report with capacity and a
#: time) is about 100 bytes.
MAX_PAYLOAD_BYTES = 1024
#: Nesting of ``[``/``{`` allowed in a payload; every command is one flat object (depth 1).
MAX_JSON_DEPTH = 4
#: Digits of the connector level of a command topic; no site has 10,000 connectors.
MAX_CONNECTOR_DIGITS = 4
#: A topic longer than this is shown (logs, error answers) shortened to its first characters.
MAX_SHOWN_TOPIC_CHARS = 200


def shown_topic(topic: str) -> str:
    """``topic`` as it may appear in a log line or an answer: at most about MAX_SHOWN_TOPIC_CHARS."""
    if len(topic) <= MAX_SHOWN_TOPIC_CHARS:
        return topic
    return f"{topic[:MAX_SHOWN_TOPIC_CHARS]}...({len(topic)} characters)"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def json_depth_exceeds(text: str, limit: int) -> bool:
    """True if ``[``/``{`` nest deeper than ``limit`` in ``text`` (brackets in strings do not count).

    Checked before ``json.loads``, which recurses once per level and raises RecursionError
    (not ValueError) on deep input; a linear scan of a bounded payload cannot.
    """
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def parse_json_object(payload: bytes) -> dict[str, Any]:
    """The payload as a JSON object; raises CommandRejected naming what is wrong.

    Sizes are checked first (MAX_PAYLOAD_BYTES, MAX_JSON_DEPTH), so parsing can neither take
    long nor recurse deeply."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise CommandRejected(f"payload is {len(payload)} bytes; a command has at most {MAX_PAYLOAD_BYTES}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CommandRejected(f"payload is not JSON: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if json_depth_exceeds(text, MAX_JSON_DEPTH):
        raise CommandRejected(f"payload nests deeper than {MAX_JSON_DEPTH} levels; a command is one flat JSON object")
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise CommandRejected(f"payload is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CommandRejected("payload must be a JSON object")
    return data


def _shown_value(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else f"{text[:40]}..."


def _number(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CommandRejected(f"{key} must be a number or null, not {_shown_value(value)}")
    try:
        number = float(value)  # an int of 400 digits is valid JSON but no float: OverflowError
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise CommandRejected(f"{key} must be a finite number or null, not {_shown_value(value)}")
    return number


def _time(data: dict[str, Any], key: str) -> datetime | None:
    value = data.get(key)
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise CommandRejected(f"{key} must be an ISO 8601 time with a zone (e.g. 2025-03-01T12:00:05Z)")
    return moment


def _keys(command: Command, data: dict[str, Any]) -> None:
    known = command.required | command.optional
    unknown = sorted(set(data) - known)
    if unknown:
        raise CommandRejected(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    if not command.required & set(data):
        raise CommandRejected(f"give {' or '.join(sorted(command.required))}")


def command_topic(topics: Topics, topic: str) -> tuple[str | None, str] | None:
    """(connector segment, command) of ``<prefix>/connector/<n>/set/<command>``, (None, command) of
    ``<prefix>/site/set/<command>``; None for other topics."""
    site_head = f"{topics.prefix}/site/set/"
    if topic.startswith(site_head):
        name = topic[len(site_head) :]
        return None if "/" in name else (None, name)
    head = f"{topics.prefix}/connector/"
    if not topic.startswith(head):
        return None
    parts = topic[len(head) :].split("/")
    if len(parts) != 3 or parts[1] != "set":
        return None
    return parts[0], parts[2]


def _connector_id(segment: str) -> int:
    """The connector number of a topic level; checked for length before ``int()`` (which raises
    ValueError beyond 4300 digits, and is slow long before)."""
    if not segment.isdecimal() or not segment.isascii():  # isdecimal alone takes Arabic-Indic digits
        raise CommandRejected(f"no connector {segment if len(segment) <= 20 else segment[:20] + '...'!r}")
    if len(segment) > MAX_CONNECTOR_DIGITS:
        raise CommandRejected(f"no connector {segment[:MAX_CONNECTOR_DIGITS]}... ({len(segment)} digits)")
    return int(segment)


class CommandHandler:
    """Acts on command messages for the bridge; ``handle`` returns an error payload to publish, if any."""

    def __init__(
        self,
        site: Site,
        topics: Topics,
        enabled: Collection[str],
        monotonic: Callable[[], float] = time.monotonic,
        max_current_a: Mapping[int, float] | None = None,
    ) -> None:
        """``max_current_a``: per connector, the highest current its charger can be set to; a
        ceiling above it is refused (connectors not in it: the Site's own bound)."""
        unknown = set(enabled) - SWITCHES
        if unknown:
            raise ValueError(f"unknown MQTT command(s) {sorted(unknown)}; known: {sorted(SWITCHES)}")
        self._site = site
        self._topics = topics
        self._enabled = frozenset(enabled)
        self._told: set[tuple[str, str]] = set()  # (topic, why) already logged
        self._actions: dict[str, Callable[[int, dict[str, Any]], None]] = {
            "soc": self._report_soc,
            "soc_target": self._set_target,
            "current_limit": self._set_current_limit,
            "available": self._set_available,
            "session": self._start_or_stop,
        }
        self._site_actions: dict[str, Callable[[dict[str, Any]], None]] = {"limit": self._set_site_limit}
        self._monotonic = monotonic
        self._max_current_a = dict(max_current_a or {})
        self._recent: dict[str, deque[float]] = {}  # topic -> times of its latest messages

    def handle(self, topic: str, payload: bytes, *, retained: bool) -> Payload | None:
        """Carry out one message; the error to publish on ``<prefix>/error`` when it is not valid."""
        parsed = command_topic(self._topics, topic)
        if parsed is None:
            return None  # not a command topic (the subscription filter should not let one through)
        segment, name = parsed
        topic = shown_topic(topic)  # from here on the topic is only shown and remembered
        if not payload:  # how MQTT deletes a retained message: nothing to carry out
            log.debug("MQTT command %s: empty message ignored", topic)
            return None
        ignored = self._ignored_because(segment, name, retained)
        if ignored is not None:
            self._once(topic, ignored[0], "MQTT command %s ignored: %s", topic, ignored[1])
            return None
        if self._flooding(self._budget(segment, name)):
            self._once(
                topic, "flood", "MQTT command %s: more than %d in %g s, dropped", topic, RATE_LIMIT, RATE_WINDOW_S
            )
            return None
        self._told.discard((topic, "flood"))
        return self._carry_out(topic, name, segment, payload)

    def _budget(self, segment: str | None, name: str) -> str:
        """Whose rate limit a message counts against: its connector's command (``01`` is ``1``), or
        the site's; connectors the site does not have share one, so made-up topics cannot grow
        memory. (``name`` is a known command here.)"""
        if segment is None:
            return f"site/{name}"
        try:
            connector_id = _connector_id(segment)
        except CommandRejected:
            connector_id = None
        known = connector_id is not None and connector_id in self._site.connectors
        return f"{connector_id if known else '?'}/{name}"

    def _flooding(self, budget: str) -> bool:
        """True if ``budget`` already had RATE_LIMIT messages in the last RATE_WINDOW_S."""
        now = self._monotonic()
        recent = self._recent.setdefault(budget, deque())
        while recent and now - recent[0] >= RATE_WINDOW_S:
            recent.popleft()
        if len(recent) >= RATE_LIMIT:
            return True
        recent.append(now)
        return False

    def _ignored_because(self, segment: str | None, name: str, retained: bool) -> tuple[str, str] | None:
        """(kind, reason) when a message on this command must not be acted on."""
        known = COMMANDS if segment is not None else SITE_COMMANDS
        command = known.get(name)
        if command is None:
            return "unknown", f"no such command (known: {', '.join(known)})"
        if command.switch not in self._enabled:
            return "off", f"[mqtt.commands] {command.switch} is off"
        if retained:
            return "retained", "a retained message is not a new command (publish it without retain)"
        return None

    def _carry_out(self, topic: str, name: str, segment: str | None, payload: bytes) -> Payload | None:
        try:
            data = parse_json_object(payload)
            if segment is None:
                _keys(SITE_COMMANDS[name], data)
                self._site_actions[name](data)
            else:
                _keys(COMMANDS[name], data)
                self._actions[name](_connector_id(segment), data)
        except CommandRejected as exc:
            self._once(topic, "invalid", "MQTT command %s rejected: %s", topic, exc)
            return {"topic": topic, "reason": str(exc), "at": iso_utc(self._site.clock.now())}
        self._told.discard((topic, "invalid"))
        return None

    def _report_soc(self, connector_id: int, data: dict[str, Any]) -> None:
        soc_percent, capacity_wh = _number(data, "soc_percent"), _number(data, "capacity_wh")
        self._site.report_battery(connector_id, soc_percent, capacity_wh, _time(data, "measured_at"))

    def _set_target(self, connector_id: int, data: dict[str, Any]) -> None:
        percent = _number(data, "soc_target_percent")
        if percent is not None and not 1 <= percent <= 100:
            raise CommandRejected(f"soc_target_percent must be 1..100 or null, not {percent:g}")
        self._site.commands.set_soc_target(connector_id, percent, source=CommandSource.MQTT)

    def _set_current_limit(self, connector_id: int, data: dict[str, Any]) -> None:
        current_a, max_a = _number(data, "current_a"), self._max_current_a.get(connector_id)
        if current_a is not None and max_a is not None and not 0 <= current_a <= max_a:
            raise CommandRejected(
                f"current_a must be 0..{max_a:g} A (connector {connector_id}'s charger) or null, not {current_a:g}"
            )
        self._site.commands.set_current_ceiling(connector_id, current_a, source=CommandSource.MQTT)

    def _set_site_limit(self, data: dict[str, Any]) -> None:
        """What all chargers together may draw per phase (null: no site limit); the Site bounds it."""
        self._site.commands.set_site_limit(_number(data, "current_a"), source=CommandSource.MQTT)

    def _set_available(self, connector_id: int, data: dict[str, Any]) -> None:
        available = data["available"]
        if not isinstance(available, bool):
            raise CommandRejected(f"available must be true or false, not {_shown_value(available)}")
        if self._site.commands.change_availability(connector_id, available, source=CommandSource.MQTT) == "Rejected":
            raise CommandRejected(f"no connector {connector_id}")

    def _start_or_stop(self, connector_id: int, data: dict[str, Any]) -> None:
        action, id_tag = data["action"], data.get("id_tag")
        if id_tag is not None and (not isinstance(id_tag, str) or not 0 < len(id_tag) <= 20):
            raise CommandRejected("id_tag must be a string of 1 to 20 characters")
        if action == "start":
            self._site.commands.local_start(connector_id, id_tag, source=CommandSource.MQTT)
        elif action == "stop":
            if not self._site.commands.stop_session(connector_id, source=CommandSource.MQTT):
                raise CommandRejected(f"no session runs on connector {connector_id}")
        else:
            raise CommandRejected(f'action must be "start" or "stop", not {_shown_value(action)}')

    def _once(self, topic: str, why: str, message: str, *args: object) -> None:
        """A WARNING the first time ``topic`` is ignored or rejected for ``why``; DEBUG after that
        (a rejected command is logged again after one that was carried out)."""
        first = (topic, why) not in self._told
        if len(self._told) > MAX_TOLD:  # made-up topics must not grow memory without end
            self._told.clear()
        self._told.add((topic, why))
        log.log(logging.WARNING if first else logging.DEBUG, message, *args)
