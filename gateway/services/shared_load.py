"""The Site's part in power sharing: the MQTT site limit (a command) and the last decision (a view).

The sharing itself runs in ``gateway.services.charging_limits`` (it writes the chargers); what it
decided is kept here so that MQTT, the status page and /metrics read one place, and a site limit
set from MQTT reaches it as an event.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from gateway.domain.errors import CommandRejected
from gateway.domain.events import Event, SiteLimitChanged, SiteLoadChanged
from gateway.domain.phase_limits import ConnectorShare, SiteLoad

log = logging.getLogger(__name__)

MAX_SITE_LIMIT_A = 10_000.0  # the largest fuse the config takes


class SharedLoad:
    """The site limit and the last sharing decision; owned by the Site."""

    def __init__(self, emit: Callable[[Event], None]) -> None:
        self._emit = emit
        self.site_limit_a: float | None = None  # kept in memory: a HEMS that sets it sends it again
        self.state: SiteLoad | None = None

    def set_site_limit(self, current_a: float | None) -> None:
        """Limit all chargers together to ``current_a`` per phase (None: lift it). Raises
        ``CommandRejected`` for a value that is not a number from 0 to 10,000 A."""
        if current_a is not None and not (math.isfinite(current_a) and 0 <= current_a <= MAX_SITE_LIMIT_A):
            raise CommandRejected(f"a site limit is 0 to {MAX_SITE_LIMIT_A:g} A per phase, not {current_a!r}")
        if current_a == self.site_limit_a:
            return
        log.info("site limit %s", "lifted" if current_a is None else f"{current_a:g} A per phase")
        self.site_limit_a = current_a
        self._emit(SiteLimitChanged(current_a))

    def report(self, load: SiteLoad) -> None:
        """The sharing decided: keep it, and tell the readers when anything but its time changed."""
        changed = not load.same_as(self.state)
        self.state = load
        if changed:
            self._emit(SiteLoadChanged(load))

    def share_of(self, connector_id: int) -> ConnectorShare | None:
        """A connector's share at the last decision (None: none yet, or it is in no session)."""
        return self.state.shares.get(connector_id) if self.state is not None else None
