"""The query parameters of the history's HTTP API, checked: each bad one is a 400 whose one line
names the parameter and what is wrong with it, never a traceback nor a silent default.

Times are ISO 8601: a date alone is that day's 00:00 UTC, a time without an offset is UTC, one
with an offset is converted to UTC. Numbers are plain decimal digits and short (``int()`` of
thousands of digits is slow, and Python refuses past 4300).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from multidict import MultiMapping

from adapters.web.hardened import one_line
from adapters.web.refused import Refused
from gateway.domain.history import MAX_ROWS, EventKind, HistoryQuery

MAX_NUMBER_DIGITS = 6  # connector numbers and limits: 999999 is beyond any of them
MAX_TIME_CHARS = 40  # "2026-03-01T08:00:00.000000+01:00" is 32
MAX_TAG_CHARS = 64  # OCPP 1.6's idTag is at most 20; room for other sources, no room for abuse
KINDS = tuple(kind.value for kind in EventKind)


@dataclass(frozen=True, slots=True)
class Accepted:
    """What one path of the API takes."""

    names: tuple[str, ...]
    default_limit: int = 1000
    #: when set, ``since`` defaults to this long before ``until`` (or now): the series of a week
    #: of a large site are more rows than one answer should carry
    default_window: timedelta | None = None


SESSIONS = Accepted(("since", "until", "connector", "id_tag", "limit"))
EVENTS = Accepted(("since", "until", "connector", "kind", "limit"))
SERIES = Accepted(("since", "until", "connector", "limit"), default_limit=MAX_ROWS, default_window=timedelta(hours=24))


def history_query(
    parameters: MultiMapping[str], accepted: Accepted, now: datetime, *, tags_allowed: bool
) -> HistoryQuery:
    """The ``HistoryQuery`` the parameters ask for; ``Refused`` (400, or 403 for an id tag when
    ``tags_allowed`` is false) naming the first bad one."""
    for name in parameters:
        if name not in accepted.names:
            raise _bad(_shown(name), f"no such parameter here (known: {', '.join(accepted.names)})")
    since = _time("since", _single(parameters, "since"))
    until = _time("until", _single(parameters, "until"))
    if since is None and accepted.default_window is not None:
        try:
            since = (until or now) - accepted.default_window
        except OverflowError:
            raise _bad("until", "too early") from None
    if since is not None and until is not None and until <= since:
        raise _bad("until", f"must be later than since ({_iso(since)})")
    connector = _number("connector", _single(parameters, "connector"), 0, 10**MAX_NUMBER_DIGITS - 1)
    limit = _number("limit", _single(parameters, "limit"), 1, MAX_ROWS)
    id_tag = _single(parameters, "id_tag")
    if id_tag is not None:
        if not tags_allowed:
            raise Refused(
                403,
                "id_tag: filtering by id tag needs the status page's password ([status_page] username and "
                "password): without one, anyone on the network could find out which cards are known",
            )
        if not 0 < len(id_tag) <= MAX_TAG_CHARS:
            raise _bad("id_tag", f"must be 1 to {MAX_TAG_CHARS} characters")
    return HistoryQuery(
        since=since,
        until=until,
        connector_id=connector,
        id_tag=id_tag,
        kinds=_kinds(parameters.getall("kind", [])) if "kind" in accepted.names else (),
        limit=limit if limit is not None else accepted.default_limit,
    )


def _single(parameters: MultiMapping[str], name: str) -> str | None:
    values = parameters.getall(name, [])
    if len(values) > 1:
        raise _bad(name, "given more than once")
    return values[0] if values else None


def _time(name: str, raw: str | None) -> datetime | None:
    if raw is None:
        return None
    example = "e.g. 2026-03-01 or 2026-03-01T08:00:00Z"
    if len(raw) > MAX_TIME_CHARS:
        raise _bad(name, f"is not an ISO 8601 date or time (too long); {example}")
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise _bad(name, f"is not an ISO 8601 date or time ({_shown(raw)}); {example}") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before the year 1 in UTC
        raise _bad(name, f"is out of range ({_shown(raw)})") from None


def _number(name: str, raw: str | None, low: int, high: int) -> int | None:
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= MAX_NUMBER_DIGITS and low <= int(raw) <= high):
        raise _bad(name, f"must be a whole number from {low} to {high}, not {_shown(raw)}")
    return int(raw)


def _kinds(raw: list[str]) -> tuple[str, ...]:
    """``kind=a&kind=b`` or ``kind=a,b``: each one a known kind, each kept once, in order."""
    kinds: list[str] = []
    for value in raw:
        for kind in value.split(","):
            kind = kind.strip()
            if kind not in KINDS:
                raise _bad("kind", f"{_shown(kind)} is no event kind (known: {', '.join(KINDS)})")
            if kind not in kinds:
                kinds.append(kind)
    return tuple(kinds)


def _bad(name: str, reason: str) -> Refused:
    return Refused(400, f"{name}: {reason}")


def _shown(raw: str) -> str:
    """A client's value, quoted, printable and short (it is echoed back)."""
    text = one_line(raw) if raw.strip() else raw
    return repr(text if len(text) <= 24 else text[:24] + "...")


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
