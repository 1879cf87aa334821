"""LogThrottle: a flood becomes one line per interval that says how many were held back."""

from __future__ import annotations

from adapters.ocpp_local.throttle import LogThrottle


def test_first_event_then_one_per_interval_with_the_count_held_back() -> None:
    now = [0.0]
    throttle = LogThrottle(interval_s=60, clock=lambda: now[0])
    assert throttle.allow("a") == 0
    assert [throttle.allow("a") for _ in range(999)] == [None] * 999
    assert throttle.allow("b") == 0  # keys are counted apart
    assert throttle.held_back("a") == 999
    now[0] = 60.0
    assert throttle.allow("a") == 999
    assert throttle.held_back("a") == 0
