"""SecurityEventNotification: the Site's security events in OCPP 2.0.1's words (Part 2 Appendix 1).

Each ``SecurityEventSeen`` becomes one SecurityEventNotification {type, timestamp, techInfo}:
``timestamp`` is when it happened (not when it was sent), ``techInfo`` the Site's detail made
safe (control characters out, at most 255 characters; the detail never holds a secret or a full
id tag) with, for an event that stands for several (the Site's rate limit held the others
back), how many.

2.0.1 (A04) wants the critical ones (Appendix 1's "Critical" column) sent, and queued while the
CSMS is away; the others it lets a station keep in its own log. The gateway sends them all (a
CSMS that refused the credentials can only hear of it afterwards), in the order they happened,
after an Accepted boot, from a bounded queue in memory: when it is full, the oldest non-critical
one goes first (the oldest critical one only when all are critical), with a WARNING. Like
NotifyEvent, they are lost with the process; the history keeps its own line of each.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from ocpp.v201 import call

from adapters.ocpp201_upstream.problems import clean_text
from adapters.ocpp_link import send_call
from gateway.domain.events import SecurityEventSeen
from gateway.domain.model import iso_utc
from gateway.domain.security import SecurityEventKind
from gateway.services.site import Site

log = logging.getLogger(__name__)

MAX_QUEUED = 100  # events kept while the CSMS is away
TECH_INFO_MAX = 255  # SecurityEventNotificationRequest.techInfo
NOT_ONLINE_WAIT_S = 0.2  # the link is being closed (a reset): wait for the session's end

#: The gateway's kinds in 2.0.1's names, and whether the spec calls them critical.
EVENT_TYPES: dict[SecurityEventKind, tuple[str, bool]] = {
    SecurityEventKind.STARTUP: ("StartupOfTheDevice", True),
    SecurityEventKind.RESET: ("ResetOrReboot", True),
    SecurityEventKind.CSMS_REFUSED_CREDENTIALS: ("FailedToAuthenticateAtCsms", False),
    SecurityEventKind.CSMS_CERTIFICATE_INVALID: ("InvalidCsmsCertificate", True),
    SecurityEventKind.SECURITY_SETTINGS_CHANGED: ("ReconfigurationOfSecurityParameters", False),
    SecurityEventKind.LOGIN_FAILED: ("MaintenanceLoginFailed", True),
    SecurityEventKind.STORAGE_FULL: ("MemoryExhaustion", True),
    SecurityEventKind.INVALID_MESSAGES: ("InvalidMessages", False),
}


#: Device-model components whose variables are security parameters: who may charge, and how the
#: station proves itself (a CSMS's SetVariables of one is ReconfigurationOfSecurityParameters).
SECURITY_COMPONENTS = frozenset({"SecurityCtrlr", "AuthCtrlr", "AuthCacheCtrlr", "LocalAuthListCtrlr"})


def startup_events(site: Site, clean_shutdown: bool | None) -> None:
    """The station's own events at its start: it started, and, after a process that did not end
    on purpose (a kill, a crash, a power cut: the gateway cannot tell which), it was rebooted."""
    if clean_shutdown is False:
        site.security.report(SecurityEventKind.RESET, "the gateway restarted after its process ended unexpectedly")
    site.security.report(SecurityEventKind.STARTUP, "the gateway started")


def settings_watch(site: Site) -> Callable[[set[str]], None]:
    """A device-model listener: a change of a security parameter is a security event."""

    def changed(keys: set[str]) -> None:
        ours = sorted(key for key in keys if key.split(".")[0] in SECURITY_COMPONENTS)
        if ours:
            kind = SecurityEventKind.SECURITY_SETTINGS_CHANGED
            site.security.report(kind, "changed: " + ", ".join(ours), source=",".join(ours))

    return changed


def notification(event: SecurityEventSeen) -> call.SecurityEventNotification:
    """The request for one event (see the module docstring)."""
    type_, _ = EVENT_TYPES[event.kind]
    more = f" ({event.count} times since the last report)" if event.count > 1 else ""
    text = clean_text(event.detail, TECH_INFO_MAX - len(more)) + more
    return call.SecurityEventNotification(type=type_, timestamp=iso_utc(event.at), tech_info=text or None)


class SecurityEvents201:
    """The queue of SecurityEventNotifications, sent in order while the station is online."""

    def __init__(self, site: Site, online: Callable[[], bool], max_queued: int = MAX_QUEUED) -> None:
        self.site = site
        self._online = online
        self._max = max_queued
        self._queue: deque[SecurityEventSeen] = deque()
        self._ready = asyncio.Event()

    def take(self, event: SecurityEventSeen) -> None:
        if event.kind not in EVENT_TYPES:
            return
        if len(self._queue) >= self._max:
            self._drop_one()
        self._queue.append(event)
        self._ready.set()

    def _drop_one(self) -> None:
        victim = next((e for e in self._queue if not EVENT_TYPES[e.kind][1]), self._queue[0])
        log.warning(
            "SecurityEventNotification queue full (%d): %s of %s dropped", self._max, victim.kind, iso_utc(victim.at)
        )
        self._queue.remove(victim)

    def queued(self) -> list[SecurityEventSeen]:
        return list(self._queue)

    async def deliver(self, peer: Any) -> None:
        """Send the queue, head first, while the link lasts (run after an Accepted boot)."""
        while True:
            while not self._queue:
                self._ready.clear()
                await self._ready.wait()
            if not self._online():  # accepted no more (a reset closes the link): the next boot sends it
                await asyncio.sleep(NOT_ONLINE_WAIT_S)
                continue
            event = self._queue[0]
            result = await send_call(peer, notification(event))  # a cancel (the link went) leaves it at the head
            if self._queue and self._queue[0] is event:
                self._queue.popleft()
            if result is None:
                log.warning("SecurityEventNotification %s not accepted by the CSMS: dropped", event.kind)
