"""Whether the gateway does its whole job now, and if not, what is wrong: ``/readyz``, the status
page's badge and the first line of ``ocpp-gateway status``.

The gateway goes on billing whatever is down (that is its point), so "the process runs" says
little: a site whose chargers, CSMS and broker are all unreachable must not look green. Ready
means every part the site needs works now: every device answers (a native charger is
connected), the CSMS is connected and has accepted the gateway, the MQTT broker is connected and
the outbox's disk takes writes. Connector faults are not on the list: they are the charger's, and
the gateway reports them as it should.

A part not heard from yet is *waited for*, not a problem: a Modbus device until its first poll,
and for ``STARTUP_GRACE_S`` after the start the CSMS, the broker and native chargers, which take a
moment to connect. After that, silence is a problem too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gateway.domain.outbox import BacklogStats
from gateway.services.site import Site
from gateway.services.telemetry import Telemetry

#: How long after the start a link that has not come up yet (and has not failed) counts as starting.
STARTUP_GRACE_S = 60.0

READY, STARTING, DEGRADED = "ready", "starting", "degraded"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing that does not work: ``part`` is ``csms``, ``device``, ``mqtt`` or ``disk``."""

    part: str
    message: str


@dataclass(frozen=True, slots=True)
class Readiness:
    """``state``: ``ready`` (nothing wrong, nothing waited for), ``starting`` (nothing wrong, but
    something not heard from yet) or ``degraded`` (something is wrong)."""

    state: str
    problems: tuple[Problem, ...]
    waiting_for: tuple[str, ...]

    @property
    def ready(self) -> bool:
        return self.state == READY


def readiness(site: Site, telemetry: Telemetry, backlog: BacklogStats, now: datetime) -> Readiness:
    """The site's readiness at ``now`` (``backlog``: the outbox's figures, read once by the caller)."""
    in_grace = (now - telemetry.started_at).total_seconds() < STARTUP_GRACE_S
    problems: list[Problem] = []
    waiting: list[str] = []

    up = site.upstream
    if not up.connected:
        if up.reason:
            problems.append(Problem("csms", f"CSMS not connected: {up.reason}"))
        elif in_grace and up.changed_at is None:  # the first attempt is under way
            waiting.append("CSMS")
        else:
            problems.append(Problem("csms", "CSMS not connected"))
    elif up.registration != "Accepted":
        if up.registration == "none" and in_grace:  # BootNotification under way
            waiting.append("CSMS")
        else:
            boot = f"BootNotification {up.registration}"
            problems.append(Problem("csms", f"the CSMS has not accepted the gateway ({boot})"))

    for name in site.devices():
        polls = telemetry.polls.get(name)
        health = site.device_health(name)
        if polls is not None:  # Modbus: polled by the gateway
            if health.online is False:
                problems.append(Problem("device", f"device {name} not answering: {health.reason}"))
            elif health.online is None and polls.errors == 0:  # not polled yet
                waiting.append(name)
            elif health.online is None:  # failed polls, but not yet enough to count as lost
                problems.append(Problem("device", f"device {name} not answering yet ({_failed(polls.errors)})"))
        elif health.online is False:  # a native OCPP charger: connects to the gateway
            reason = f": {health.reason}" if health.reason else ""
            problems.append(Problem("device", f"charger {name} not connected{reason}"))
        elif health.online is None:
            if in_grace:
                waiting.append(name)
            else:
                problems.append(Problem("device", f"charger {name} has not connected since the gateway started"))

    mqtt = telemetry.mqtt
    if not mqtt.connected:
        if mqtt.reason:
            problems.append(Problem("mqtt", f"MQTT broker not connected: {mqtt.reason}"))
        elif in_grace and mqtt.since is None:
            waiting.append("MQTT broker")
        else:
            problems.append(Problem("mqtt", "MQTT broker not connected"))

    if backlog.disk_problem is not None:
        problems.append(Problem("disk", backlog.disk_problem))

    state = DEGRADED if problems else STARTING if waiting else READY
    return Readiness(state, tuple(problems), tuple(waiting))


def _failed(errors: int) -> str:
    return "its first poll failed" if errors == 1 else f"its first {errors} polls failed"
