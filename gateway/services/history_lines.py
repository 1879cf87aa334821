"""Event-log lines the history writes only now and then: a command repeated within a minute, a
load-management limit that binds and frees as the building's load moves.

Two things bound them:

* ``Throttle``: at most ``burst`` lines per key (a connector's command from one source; the
  site's limit) per ``interval_s``. Those go at once; later ones within the interval wait, the
  newest replacing the older, and go when there is room again, saying how many they stand for
  (``folded``). The log stays short whatever a HEMS or a flapping limit does, and it always ends
  on what happened last.
* ``LimitWatch``: the sharing decides every few seconds; only a change between "the site's limit
  holds someone back" and "it holds nobody back" (or of what the limit comes from) is a line.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from gateway.domain.history import EventKind, HistoryEvent
from gateway.domain.phase_limits import Reason, SiteLoad

LINE_INTERVAL_S = 60.0  # the window of a throttle's budget
COMMAND_BURST = 5  # a connector's command from one source: 5 lines a minute (an operator's clicks all show)

#: Reasons of a share that say the site's limit holds the connector below what it would take: the
#: limit itself (fuse, fallback, the CSMS's, the site limit), or others taking it before this one
#: (priority, taking turns). Not the car's own bound or appetite, a silent charger, nor the
#: sharing's own damping (a raise held, a minimum off-time), which follow a change but are no limit.
BINDING_REASONS = frozenset(
    {Reason.FUSE, Reason.FALLBACK, Reason.CSMS, Reason.SITE_LIMIT, Reason.PRIORITY, Reason.ROTATION}
)


@dataclass(slots=True)
class _Held:
    line: HistoryEvent
    folded: int  # lines this one stands for besides itself


class Throttle:
    """At most ``burst`` lines per key per ``interval_s`` (see the module docstring)."""

    def __init__(self, interval_s: float = LINE_INTERVAL_S, burst: int = 1) -> None:
        self._interval = timedelta(seconds=interval_s)
        self._burst = burst
        self._sent: dict[Hashable, deque[datetime]] = {}  # key -> when its recent lines were let through
        self._held: dict[Hashable, _Held] = {}

    def _room(self, key: Hashable, now: datetime) -> bool:
        """Whether ``key`` may have a line at ``now`` (forgetting what is older than the interval)."""
        sent = self._sent.get(key)
        while sent and now - sent[0] >= self._interval:
            sent.popleft()
        return not sent or len(sent) < self._burst

    def offer(self, key: Hashable, line: HistoryEvent, now: datetime) -> HistoryEvent | None:
        """``line`` if it may be written now; None if it waits (it replaces one waiting before)."""
        if key not in self._held and self._room(key, now):
            self._sent.setdefault(key, deque()).append(now)
            return line
        held = self._held.get(key)
        self._held[key] = _Held(line, 0 if held is None else held.folded + 1)
        return None

    def drop(self, key: Hashable) -> None:
        """Forget the line waiting under ``key`` (what it said is no longer news)."""
        self._held.pop(key, None)

    def due(self, now: datetime) -> list[HistoryEvent]:
        """The waiting lines that may go now, in the order they happened."""
        lines = []
        for key in [k for k in self._held if self._room(k, now)]:
            held = self._held.pop(key)
            self._sent.setdefault(key, deque()).append(now)
            folded = {"folded": held.folded} if held.folded else {}
            lines.append(replace(held.line, detail={**held.line.detail, **folded}))
        # keys quiet for an interval are forgotten: made-up connector numbers cannot grow memory
        for key in [k for k in self._sent if k not in self._held]:
            if self._room(key, now) and not self._sent[key]:
                del self._sent[key]
        return sorted(lines, key=lambda line: line.at)


LimitState = tuple[bool, str | None]  # (someone is held, what the site's limit comes from)


class LimitWatch:
    """Turns sharing decisions into ``limit_binds`` / ``limit_frees`` lines, at most one per
    ``interval_s``: a line that must wait goes out with ``due``, unless the limit went back to
    what the log says before then."""

    KEY = "limit"

    def __init__(self, interval_s: float = LINE_INTERVAL_S) -> None:
        self._throttle = Throttle(interval_s)
        self._state: LimitState = (False, None)  # what the last decision says
        self._out: LimitState = (False, None)  # what the last line written says
        self._waiting: LimitState | None = None  # what the line held back says

    def decided(self, load: SiteLoad, now: datetime) -> list[HistoryEvent]:
        """A new decision: the line to write now, if it changes what the log says and may go now."""
        held = [(cid, share) for cid, share in sorted(load.shares.items()) if share.reason in BINDING_REASONS]
        reason = load.reason.value if held and load.reason is not None else None
        state: LimitState = (bool(held), reason)
        if state == self._state:
            return []
        self._state = state
        if state == self._out:  # back to what the log says before the waiting line went: no news
            self._throttle.drop(self.KEY)
            self._waiting = None
            return []
        if held:
            detail: dict[str, object] = {
                "limit_a": _amps(load.limit_a),
                "reason": reason,
                "held": [
                    {"connector_id": cid, "current_a": share.current_a, "reason": share.reason.value}
                    for cid, share in held
                ],
            }
            line = HistoryEvent(load.decided_at, EventKind.LIMIT_BINDS, detail=detail)
        else:
            line = HistoryEvent(load.decided_at, EventKind.LIMIT_FREES, detail={"limit_a": _amps(load.limit_a)})
        if self._throttle.offer(self.KEY, line, now) is None:
            self._waiting = state
            return []
        self._out, self._waiting = state, None
        return [line]

    def due(self, now: datetime) -> list[HistoryEvent]:
        """The line held back, once its interval has passed."""
        lines = self._throttle.due(now)
        if lines and self._waiting is not None:
            self._out, self._waiting = self._waiting, None
        return lines


def _amps(current_a: float | None) -> float | None:
    """A limit as the log shows it: to the 0.1 A (a phase limit is a difference of readings)."""
    return None if current_a is None else round(current_a, 1)
