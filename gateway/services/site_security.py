"""The Site's door for security events (a part of ``Site``, a mixin).

Whoever sees one (the upstream link, the status page, the local OCPP server, an upstream
adapter) tells the Site with ``security_event``; the Site stamps it, passes it through the rate
limit (``SecurityEventLimit``: a password-guessing client or a CSMS that sends garbage makes one
event a minute, with a count) and emits a ``SecurityEventSeen``. Adapters that speak a protocol
with security events (OCPP 2.0.1) send them; the history keeps them.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.domain.events import Event, SecurityEventSeen
from gateway.domain.ports import Clock
from gateway.domain.security import SecurityEventKind, SecurityEventLimit


class SiteSecurity:
    """``security_event``: the one way security events reach the subscribers."""

    clock: Clock
    security_limit: SecurityEventLimit
    _emit: Callable[[Event], None]

    def security_event(self, kind: SecurityEventKind, detail: str = "", source: str = "") -> None:
        """``kind`` happened now, seen by ``source`` (an address, "csms"...: what the rate limit
        tells apart). ``detail``: what an operator needs to know, never a secret or a full id tag."""
        at = self.clock.now()
        count = self.security_limit.admit(kind, source, at)
        if count is not None:
            self._emit(SecurityEventSeen(kind, at, detail, count))
