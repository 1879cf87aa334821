"""LogThrottle: one log line per interval for events that can come in floods (bad frames, refused logins)."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

DEFAULT_INTERVAL_S = 60.0


class LogThrottle:
    """Says when an event may be logged: the first one of a key, then at most one per ``interval_s``.

    ``allow`` returns how many events of that key were held back since the last line (so the
    line can say "and N more"), or None when this one must stay quiet. A charger that sends a
    thousand bad frames a second writes one line a minute, not a thousand a second.
    """

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._last: dict[Hashable, float] = {}
        self._held: dict[Hashable, int] = {}

    def allow(self, key: Hashable = None) -> int | None:
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)

    def held_back(self, key: Hashable = None) -> int:
        """Events of ``key`` not logged since its last line (for a closing summary)."""
        return self._held.get(key, 0)
