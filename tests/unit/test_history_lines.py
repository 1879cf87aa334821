"""The throttle of the event log's frequent lines, and the words of a command's result."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.domain.commands import CommandResult, result_from_status
from gateway.domain.history import EventKind, HistoryEvent
from gateway.services.history_lines import Throttle

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def line(seconds: float) -> HistoryEvent:
    return HistoryEvent(T0 + timedelta(seconds=seconds), EventKind.COMMAND, detail={"n": seconds})


def test_a_burst_goes_at_once_the_rest_waits_for_room_and_keeps_the_newest() -> None:
    throttle = Throttle(60.0, burst=2)
    passed = [throttle.offer("k", line(s), T0 + timedelta(seconds=s)) for s in (0, 10, 20, 30)]
    assert [p is not None for p in passed] == [True, True, False, False]
    assert throttle.due(T0 + timedelta(seconds=59)) == []
    (late,) = throttle.due(T0 + timedelta(seconds=60))  # the first of the two has left the window
    assert late.detail == {"n": 30, "folded": 1}
    assert throttle.offer("k", line(61), T0 + timedelta(seconds=61)) is None  # 10 s and 60 s are in the window
    assert throttle.offer("other", line(61), T0 + timedelta(seconds=61)) is not None  # keys have budgets of their own


def test_a_line_offered_while_one_waits_never_overtakes_it() -> None:
    throttle = Throttle(60.0, burst=1)
    assert throttle.offer("k", line(0), T0) is not None
    assert throttle.offer("k", line(30), T0 + timedelta(seconds=30)) is None
    # room again, but one waits: the new one replaces it (and says so) rather than going before it
    assert throttle.offer("k", line(70), T0 + timedelta(seconds=70)) is None
    (late,) = throttle.due(T0 + timedelta(seconds=70))
    assert late.detail == {"n": 70, "folded": 1}


def test_many_keys_are_forgotten_once_quiet() -> None:
    """Made-up connector numbers from MQTT cannot grow memory without end."""
    throttle = Throttle(60.0, burst=1)
    for n in range(1000):
        throttle.offer(("availability", "mqtt", n), line(0), T0)
    throttle.due(T0 + timedelta(seconds=61))
    assert throttle._sent == {} and throttle._held == {}


def test_a_protocol_status_in_the_gateways_words() -> None:
    assert result_from_status("Accepted") is CommandResult.ACCEPTED
    assert result_from_status("UnlockFailed") is CommandResult.FAILED
    assert result_from_status("NotSupported") is CommandResult.NOT_SUPPORTED
    assert result_from_status("RebootRequired") is CommandResult.REBOOT_REQUIRED
    assert result_from_status("Unknown") is CommandResult.UNKNOWN
    assert result_from_status("anything else" * 100) is CommandResult.REJECTED
