"""What the gateway knows about id tags: the local authorisation list and the authorisation cache.

Pure and protocol-free. A Modbus charger with an RFID reader only hands the gateway a tag; the
gateway, being the charge point, must then do what a good OCPP 1.6 charger does: answer at once
from its own records when the rules allow it (``gateway.domain.authorizer`` holds those rules),
and otherwise ask the back office. It keeps two records, which differ in who owns them:

- the **local authorisation list** belongs to the back office: only its list updates (full or
  differential, versioned) change it, and it outranks everything else the gateway knows;
- the **authorisation cache** is the gateway's own memory of the back office's answers, bounded
  (least recently used goes first) and emptied on request.

Both survive a restart through ``to_dict`` / ``from_dict`` (plain JSON-able dicts) that a storage
adapter persists. Times are timezone-aware and injected: nothing here reads the clock.

Id tags are personal data (card numbers): only ``mask_id_tag`` forms reach logs and reprs. They
compare case-insensitively (OCPP's idToken is a CiString20); the spelling received is kept.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from gateway.domain.transactions import AuthStatus

log = logging.getLogger(__name__)

# OCPP 1.6 §3.5 ("Local Authorization List") counts Accepted and ConcurrentTx as "valid": the tag is
# good. Whether it is already charging elsewhere is for whoever runs the sessions to check.
VALID_STATUSES = frozenset({AuthStatus.ACCEPTED, AuthStatus.CONCURRENT_TX})

_MASK = "****"
_SHOWN_CHARACTERS = 4
_MIN_LENGTH_TO_SHOW = 8  # below this, four characters would give away half the tag or more


def mask_id_tag(id_tag: str) -> str:
    """``****1234``: enough to tell cards apart in a log, not enough to clone one.

    Tags shorter than 8 characters are masked entirely, and the mask never reveals the length.
    """
    if len(id_tag) < _MIN_LENGTH_TO_SHOW:
        return _MASK
    return _MASK + id_tag[-_SHOWN_CHARACTERS:]


def _key(id_tag: str) -> str:
    return id_tag.casefold()


def _time_to_json(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()  # full precision, so a round trip is exact


def _time_from_json(text: object) -> datetime | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise TypeError(f"a time must be an ISO 8601 string, not {type(text).__name__}")
    moment = datetime.fromisoformat(text)
    if moment.utcoffset() is None:
        raise ValueError(f"time without a time zone: {text!r}")
    return moment


@dataclass(frozen=True, slots=True, repr=False)
class IdTagInfo:
    """What the back office says of a tag: its status, until when, and the group (parent) tag it belongs to.

    ``expiry_date`` must be timezone-aware, so comparisons with injected UTC times cannot go wrong.
    """

    status: AuthStatus
    expiry_date: datetime | None = None
    parent_id_tag: str | None = None

    def __post_init__(self) -> None:
        if self.expiry_date is not None and self.expiry_date.utcoffset() is None:
            raise ValueError("expiry_date needs a time zone")

    @property
    def is_valid(self) -> bool:
        return self.status in VALID_STATUSES

    def as_of(self, at: datetime) -> IdTagInfo:
        """This info at ``at``: a valid tag whose expiry date has come is Expired (OCPP 1.6 §3.5)."""
        if self.is_valid and self.expiry_date is not None and at >= self.expiry_date:
            return replace(self, status=AuthStatus.EXPIRED)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "expiry_date": _time_to_json(self.expiry_date),
            "parent_id_tag": self.parent_id_tag,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IdTagInfo:
        parent = data.get("parent_id_tag")
        if parent is not None and not isinstance(parent, str):
            raise TypeError("parent_id_tag must be a string")
        return cls(AuthStatus(data["status"]), _time_from_json(data.get("expiry_date")), parent)

    def __repr__(self) -> str:
        parent = None if self.parent_id_tag is None else mask_id_tag(self.parent_id_tag)
        expiry = _time_to_json(self.expiry_date)
        return f"IdTagInfo(status={self.status.value}, expiry_date={expiry}, parent_id_tag={parent})"


class UnreadableState(ValueError):
    """Persisted authorisation data that cannot be read back; the caller starts empty and says so."""


def _unreadable(what: str, exc: Exception) -> UnreadableState:
    # exc's message names the key or value type that is wrong, never an id tag: the data may be personal.
    return UnreadableState(f"stored {what} is unreadable ({type(exc).__name__}: {exc})")


# -- the local authorisation list --------------------------------------------------------------------
class ListUpdateType(StrEnum):
    FULL = "full"  # the entries are the whole new list
    DIFFERENTIAL = "differential"  # the entries change the list: add / update, or remove (no info)


class ListUpdateStatus(StrEnum):
    ACCEPTED = "accepted"
    FAILED = "failed"  # nothing was changed
    NOT_SUPPORTED = "not_supported"
    VERSION_MISMATCH = "version_mismatch"  # differential update not newer than the list: send a full one


class LocalAuthList:
    """The back office's list of tags, versioned; only ``send_local_list`` changes it (OCPP 1.6 §3.5, §5.15).

    ``max_length`` is LocalAuthListMaxLength (entries the list may hold), ``send_max_length`` is
    SendLocalListMaxLength (entries one update may carry). ``supported=False`` models a charge point
    without the LocalAuthListManagement profile: version -1, every update NotSupported.
    """

    def __init__(self, *, supported: bool = True, max_length: int = 1000, send_max_length: int = 100) -> None:
        if max_length < 1 or send_max_length < 1:
            raise ValueError("list lengths must be at least 1")
        self.supported = supported
        self.max_length = max_length
        self.send_max_length = send_max_length
        self._version = 0
        self._entries: dict[str, tuple[str, IdTagInfo]] = {}  # key -> (tag as received, info)

    @property
    def version(self) -> int:
        """As GetLocalListVersion reports it: -1 when unsupported, 0 when the list is empty.

        The version of an empty list is 0 whatever the update that emptied it said, so the number
        the back office reads is the number a differential update is compared with.
        """
        return self._version if self.supported else -1

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, id_tag: object) -> bool:
        return isinstance(id_tag, str) and _key(id_tag) in self._entries

    def get(self, id_tag: str) -> IdTagInfo | None:
        """The entry as the back office sent it (see ``IdTagInfo.as_of`` for expiry)."""
        entry = self._entries.get(_key(id_tag))
        return None if entry is None else entry[1]

    @property
    def entries(self) -> dict[str, IdTagInfo]:
        """A copy, keyed by the tags as received."""
        return dict(self._entries.values())

    def send_local_list(
        self, version: int, update_type: ListUpdateType | str, entries: Iterable[tuple[str, IdTagInfo | None]]
    ) -> ListUpdateStatus:
        """Apply a list update, all or nothing; ``entries`` pairs a tag with its info, or None to remove it.

        Rules (OCPP 1.6 §3.5, §5.15 Send Local List and the UpdateStatus type):
        - a full update replaces the list, whatever its version compared with ours: the back office
          sends one precisely when the versions have drifted;
        - a differential update whose version is less than or equal to ours is a VersionMismatch;
        - versions start at 1 (0 means "empty", -1 "unsupported"), so a lower one is Failed;
        - more entries than SendLocalListMaxLength, or a result longer than LocalAuthListMaxLength: Failed;
        - entries apply in order, so a tag named twice ends as its last entry says; removing a tag
          the list does not hold changes nothing (a repeated differential update stays harmless);
        - in a full update an entry without info adds nothing.
        """
        if not self.supported:
            return ListUpdateStatus.NOT_SUPPORTED
        update_type = ListUpdateType(update_type)
        changes = list(entries)
        if version < 1:
            return self._failed(version, update_type, "versions start at 1")
        if len(changes) > self.send_max_length:
            return self._failed(version, update_type, f"{len(changes)} entries, at most {self.send_max_length}")
        if update_type is ListUpdateType.DIFFERENTIAL and version <= self._version:
            log.warning(
                "local list: differential update to version %d refused, the list is at %d", version, self._version
            )
            return ListUpdateStatus.VERSION_MISMATCH
        updated = dict(self._entries) if update_type is ListUpdateType.DIFFERENTIAL else {}
        for id_tag, info in changes:
            if info is None:
                updated.pop(_key(id_tag), None)
            else:
                updated[_key(id_tag)] = (id_tag, info)
        if len(updated) > self.max_length:
            return self._failed(version, update_type, f"{len(updated)} tags would exceed {self.max_length}")
        self._entries = updated
        self._version = version if updated else 0
        log.info("local list: %s update accepted, version %d, %d tags", update_type.value, self.version, len(self))
        return ListUpdateStatus.ACCEPTED

    def _failed(self, version: int, update_type: ListUpdateType, reason: str) -> ListUpdateStatus:
        log.warning("local list: %s update to version %d failed: %s", update_type.value, version, reason)
        return ListUpdateStatus.FAILED

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self._version,
            "entries": [{"id_tag": id_tag, "info": info.to_dict()} for id_tag, info in self._entries.values()],
        }

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, supported: bool = True, max_length: int = 1000, send_max_length: int = 100
    ) -> LocalAuthList:
        """The stored list; the lengths are configuration, not state. Raises ``UnreadableState``.

        A stored list longer than ``max_length`` (the limit was lowered) is kept whole: which tags
        to drop is the back office's call, and its next update that leaves the list too long fails.
        """
        local_list = cls(supported=supported, max_length=max_length, send_max_length=send_max_length)
        try:
            version = data["version"]
            if not isinstance(version, int) or version < 0:
                raise ValueError(f"version must be an integer >= 0, not {version!r}")
            for item in data["entries"]:
                id_tag = item["id_tag"]
                if not isinstance(id_tag, str):
                    raise TypeError("id_tag must be a string")
                local_list._entries[_key(id_tag)] = (id_tag, IdTagInfo.from_dict(item["info"]))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise _unreadable("local authorisation list", exc) from exc
        local_list._version = version if local_list._entries else 0
        if len(local_list) > max_length:
            log.warning("local list: %d stored tags exceed the maximum of %d", len(local_list), max_length)
        return local_list

    def __repr__(self) -> str:
        return f"LocalAuthList(version={self.version}, tags={len(self)})"


# -- the authorisation cache -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, repr=False)
class CacheEntry:
    """One remembered answer, with the time it arrived (for ``lifetime``)."""

    id_tag: str  # as received
    info: IdTagInfo
    received_at: datetime

    def __repr__(self) -> str:
        return f"CacheEntry({mask_id_tag(self.id_tag)}, {self.info!r}, received_at={self.received_at.isoformat()})"


class AuthorizationCache:
    """The back office's latest answer for each tag seen, valid or not ("Authorization Cache", OCPP 1.6 §3.5).

    Bounded to ``max_entries``: when full, the least recently used entry (looked up or answered)
    goes. ``lifetime`` (optional; OCPP 1.6 has none) forgets an answer older than that, so an
    old "Accepted" is asked again rather than trusted forever.
    """

    def __init__(self, *, max_entries: int = 1000, lifetime: timedelta | None = None) -> None:
        if max_entries < 1:
            raise ValueError("the cache must hold at least one entry")
        self.max_entries = max_entries
        self.lifetime = lifetime
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()  # least recently used first

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, id_tag: object) -> bool:
        return isinstance(id_tag, str) and _key(id_tag) in self._entries

    def remember(self, id_tag: str, info: IdTagInfo, at: datetime) -> None:
        """Store the back office's answer received at ``at``, replacing any older one for the tag."""
        key = _key(id_tag)
        self._entries[key] = CacheEntry(id_tag, info, at)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            _, evicted = self._entries.popitem(last=False)
            log.debug("authorisation cache full: forgot %s", mask_id_tag(evicted.id_tag))

    def lookup(self, id_tag: str, at: datetime) -> IdTagInfo | None:
        """The cached info as of ``at``, or None; a lookup counts as a use for eviction.

        An entry whose expiry date has come is changed to Expired in the cache, as OCPP 1.6 asks;
        one older than ``lifetime`` is dropped, so the tag counts as unknown.
        """
        key = _key(id_tag)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self.lifetime is not None and at - entry.received_at >= self.lifetime:
            del self._entries[key]
            return None
        current = entry.info.as_of(at)
        if current is not entry.info:
            self._entries[key] = replace(entry, info=current)
        self._entries.move_to_end(key)
        return current

    def clear(self) -> None:
        """ClearCache: forget every answer."""
        self._entries.clear()
        log.info("authorisation cache cleared")

    def to_dict(self) -> dict[str, Any]:
        """Entries least recently used first, so restoring keeps the eviction order."""
        return {
            "entries": [
                {"id_tag": entry.id_tag, "info": entry.info.to_dict(), "received_at": entry.received_at.isoformat()}
                for entry in self._entries.values()
            ]
        }

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, max_entries: int = 1000, lifetime: timedelta | None = None
    ) -> AuthorizationCache:
        """The stored cache; if ``max_entries`` shrank, the least recently used go. Raises ``UnreadableState``."""
        cache = cls(max_entries=max_entries, lifetime=lifetime)
        try:
            for item in data["entries"]:
                id_tag, received_at = item["id_tag"], _time_from_json(item["received_at"])
                if not isinstance(id_tag, str) or received_at is None:
                    raise TypeError("id_tag and received_at are required strings")
                cache.remember(id_tag, IdTagInfo.from_dict(item["info"]), received_at)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise _unreadable("authorisation cache", exc) from exc
        return cache

    def __repr__(self) -> str:
        return f"AuthorizationCache(entries={len(self)}, max_entries={self.max_entries})"
