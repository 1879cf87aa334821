"""Running figures of the gateway's own work: polls, messages to the CSMS, the MQTT link.

The Site keeps the state of the chargers; this keeps how well the gateway reaches them and its
peers, for the status page and ``/metrics``. Adapters report into it (one call per poll or per
message: a counter bump, no I/O), readers take copies. Times are UTC, durations in seconds.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from gateway.domain.model import utc_now
from gateway.domain.ports import Clock

#: Upper bounds (s) of the poll-duration histogram: a healthy Modbus TCP poll takes a few ms,
#: an RTU bus at 9600 baud tens to hundreds, a timeout the device's ``timeout_s``.
POLL_BUCKETS_S: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(slots=True)
class PollStats:
    """One device's polls since the gateway started: how many, how many failed, how long they took."""

    polls: int = 0
    errors: int = 0
    seconds_sum: float = 0.0
    last_s: float | None = None
    last_at: datetime | None = None
    # polls per histogram bucket (not cumulative); the last slot counts those above every bound
    bucket_counts: list[int] = field(default_factory=lambda: [0] * (len(POLL_BUCKETS_S) + 1))

    def add(self, seconds: float, ok: bool, at: datetime) -> None:
        self.polls += 1
        self.errors += 0 if ok else 1
        self.seconds_sum += seconds
        self.last_s, self.last_at = seconds, at
        self.bucket_counts[bisect.bisect_left(POLL_BUCKETS_S, seconds)] += 1

    def cumulative(self) -> list[int]:
        """Polls at or under each bound of ``POLL_BUCKETS_S``, then all of them (Prometheus' ``le``)."""
        total, result = 0, []
        for count in self.bucket_counts:
            total += count
            result.append(total)
        return result


@dataclass(frozen=True, slots=True)
class LinkState:
    """A connection the gateway keeps (the MQTT broker): up or not, since when, and why not."""

    connected: bool = False
    since: datetime | None = None
    reason: str = ""


class Telemetry:
    """Counters and link states, filled by the adapters, read by the status page and metrics."""

    def __init__(self, polled_devices: Iterable[str] = (), clock: Clock | None = None) -> None:
        """``polled_devices``: the devices the gateway polls (Modbus); the gateway is ready once
        each has been polled at least once, answered or not."""
        self._clock = clock
        self.polls: dict[str, PollStats] = {name: PollStats() for name in polled_devices}
        self.messages_sent: Counter[str] = Counter()  # CALLs the CSMS answered, by action
        self.messages_failed: Counter[tuple[str, str]] = Counter()  # by (action, why)
        self.mqtt = LinkState()
        self._mqtt_followers: list[Callable[[LinkState], None]] = []
        self.started_at = self._now()

    def follow_mqtt(self, follower: Callable[[LinkState], None]) -> None:
        """Call ``follower`` with the broker link's state each time it changes (the history logs
        its ups and downs): services follow it here, so the MQTT adapter only reports."""
        self._mqtt_followers.append(follower)

    def _now(self) -> datetime:
        return self._clock.now() if self._clock is not None else utc_now()

    # -- reported by the adapters -------------------------------------------------------------------
    def poll_finished(self, device: str, seconds: float, ok: bool) -> None:
        """One poll of ``device`` took ``seconds``; ``ok`` False if it failed (timeout, bad answer)."""
        self.polls.setdefault(device, PollStats()).add(seconds, ok, self._now())

    def message_sent(self, action: str) -> None:
        """The CSMS answered a CALL of ours (a CALLRESULT)."""
        self.messages_sent[action] += 1

    def message_failed(self, action: str, why: str) -> None:
        """A CALL of ours got no result: ``why`` is ``callerror``, ``timeout`` or ``connection``."""
        self.messages_failed[(action, why)] += 1

    def mqtt_changed(self, connected: bool, reason: str = "") -> None:
        """The broker connection came up or went down (``reason``: why, as the bridge logged it)."""
        if connected != self.mqtt.connected or reason != self.mqtt.reason:
            self.mqtt = LinkState(connected, self._now(), "" if connected else reason)
            for follower in self._mqtt_followers:
                follower(self.mqtt)

    # -- read by the status page --------------------------------------------------------------------
    def waiting_for(self) -> list[str]:
        """Polled devices that have not been polled even once yet (the gateway is not ready)."""
        return sorted(name for name, stats in self.polls.items() if stats.polls == 0)

    @property
    def ready(self) -> bool:
        return not self.waiting_for()
