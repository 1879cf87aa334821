"""Reconnect and retry delays shared by every loop that talks to something outside.

Exponential with jitter, so the gateways of a site (or the loops of one gateway) do not hammer a
CSMS, broker or device in step after an outage.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays double from ``initial_s`` up to ``max_s``; each is drawn from [50 %, 100 %] of that."""

    def __init__(self, initial_s: float, max_s: float, rng: Callable[[], float] = random.random) -> None:
        if max_s <= 0 or initial_s <= 0:
            raise ValueError("backoff delays must be positive")
        self.initial_s = min(initial_s, max_s)
        self.max_s = max_s
        self._rng = rng
        self._attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.max_s, self.initial_s * 2 ** min(self._attempt, 32))
        self._attempt += 1
        return ceiling * (0.5 + 0.5 * self._rng())

    def reset(self) -> None:
        """Start from ``initial_s`` again (after a success)."""
        self._attempt = 0
