"""Security events: what the gateway sees that an operator's security log wants, in its own words.

The kinds are the gateway's (no protocol's): an upstream adapter maps them to its protocol's
names (OCPP 2.0.1's security events, Part 2 Appendix 1) or ignores them (1.6 has no such
message). They come from every part of the gateway (the upstream link, the status page, the
local OCPP server), which may not import each other, so they travel through the Site.

``SecurityEventLimit`` keeps a flood out: a password-guessing client, or a CSMS that sends
garbage, must neither flood the back office nor grow a queue. At most one event per kind and
source per interval goes through; the ones held back are counted, and the next one let through
says how many it stands for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

LIMIT_INTERVAL_S = 60.0  # one event per kind and source per minute
MAX_SOURCES = 50  # sources told apart per kind; beyond, they share one key (a scan from many addresses)
HELD_KEPT_INTERVALS = 10  # a source's held-back count is kept this many intervals for its next event, then dropped
OTHER_SOURCES = "*"


class SecurityEventKind(StrEnum):
    """What happened (``detail`` of the event says more, never a secret nor a full id tag)."""

    STARTUP = "startup"  # the gateway started
    RESET = "reset"  # a reset was asked, or the gateway restarted after it ended unexpectedly
    CSMS_REFUSED_CREDENTIALS = "csms_refused_credentials"  # the back office answered 401 to the handshake
    CSMS_CERTIFICATE_INVALID = "csms_certificate_invalid"  # the back office's TLS certificate failed the check
    SECURITY_SETTINGS_CHANGED = "security_settings_changed"  # an authorisation or security setting changed
    LOGIN_FAILED = "login_failed"  # wrong credentials at a local interface (the status page, the local server)
    STORAGE_FULL = "storage_full"  # the disk refused to keep what must be kept
    INVALID_MESSAGES = "invalid_messages"  # frames that cannot be read


@dataclass(slots=True)
class _Window:
    opened_at: datetime
    held: int = 0


class SecurityEventLimit:
    """At most one event per (kind, source) per ``interval_s`` (see the module docstring)."""

    def __init__(self, interval_s: float = LIMIT_INTERVAL_S, max_sources: int = MAX_SOURCES) -> None:
        self.interval_s = interval_s
        self.max_sources = max_sources
        self._windows: dict[tuple[SecurityEventKind, str], _Window] = {}

    def admit(self, kind: SecurityEventKind, source: str, at: datetime) -> int | None:
        """How many events the one at ``at`` stands for (itself and those held back since the
        last one of its key), or None when it is held back."""
        self._forget_quiet(at)
        key = (kind, source)
        if key not in self._windows and sum(1 for k, _ in self._windows if k is kind) >= self.max_sources:
            key = (kind, OTHER_SOURCES)
        window = self._windows.get(key)
        if window is not None and at - window.opened_at < timedelta(seconds=self.interval_s):
            window.held += 1
            return None
        self._windows[key] = _Window(at)
        return 1 + (window.held if window is not None else 0)

    def _forget_quiet(self, at: datetime) -> None:
        """Keys whose window has passed with nothing held back are forgotten, and those with a
        held-back count once ``HELD_KEPT_INTERVALS`` have passed without another event to carry
        it: made-up sources cannot grow memory, and sources that tried a few times and went
        away cannot keep the slots of the new ones taken for good."""
        interval = timedelta(seconds=self.interval_s)
        for key in [k for k, w in self._windows.items() if at - w.opened_at >= interval * _kept(w)]:
            del self._windows[key]


def _kept(window: _Window) -> int:
    return HELD_KEPT_INTERVALS if window.held else 1
