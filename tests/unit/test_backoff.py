"""Shared reconnect delays."""

from __future__ import annotations

import pytest

from gateway.services.backoff import Backoff


def test_backoff_doubles_with_jitter_up_to_max() -> None:
    backoff = Backoff(0.5, 4.0, rng=lambda: 1.0)
    assert [backoff.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5
    low = Backoff(0.5, 4.0, rng=lambda: 0.0)
    assert [low.next_delay() for _ in range(4)] == [0.25, 0.5, 1.0, 2.0]
    with pytest.raises(ValueError):
        Backoff(0.5, 0)
