"""The Site's door for security events (``site.security``).

Whoever sees one (the upstream link, the status page, the local OCPP server, an upstream
adapter) tells the Site with ``site.security.report``; it is stamped, passed through the rate
limit (``SecurityEventLimit``: a password-guessing client or a CSMS that sends garbage makes one
event a minute, with a count) and emitted as a ``SecurityEventSeen``. Adapters that speak a
protocol with security events (OCPP 2.0.1) send them; the history keeps them.
"""

from __future__ import annotations

from gateway.domain.events import SecurityEventSeen
from gateway.domain.security import SecurityEventKind, SecurityEventLimit
from gateway.services.site_core import SiteCore


class SecurityEvents:
    """The one way security events reach the subscribers; owns the rate limit."""

    def __init__(self, site: SiteCore) -> None:
        self._site = site
        self.limit = SecurityEventLimit()  # one per kind and source a minute

    def report(self, kind: SecurityEventKind, detail: str = "", source: str = "") -> None:
        """``kind`` happened now, seen by ``source`` (an address, "csms"...: what the rate limit
        tells apart). ``detail``: what an operator needs to know, never a secret or a full id tag."""
        at = self._site.clock.now()
        count = self.limit.admit(kind, source, at)
        if count is not None:
            self._site.emit(SecurityEventSeen(kind, at, detail, count))
