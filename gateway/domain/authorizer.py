"""The authorisation decision for a tag shown at a charger: accept or refuse now, or ask the back office.

Pure: the rules of OCPP 1.6 §3.5 over the records of ``gateway.domain.authorization``
and the five configuration keys that steer them. The outside carries the decision out: it starts
the session, refuses the card, or sends Authorize and feeds the answer back through ``record``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from gateway.domain.authorization import AuthorizationCache, IdTagInfo, LocalAuthList, mask_id_tag
from gateway.domain.transactions import AuthStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """The configuration keys that steer authorisation, under their OCPP 1.6 names in snake case.

    The defaults are a cautious charge point's: use both records, trust them offline, but ask the
    back office whenever it is there, and refuse tags nobody knows.
    """

    local_auth_list_enabled: bool = True  # LocalAuthListEnabled
    authorization_cache_enabled: bool = True  # AuthorizationCacheEnabled
    local_authorize_offline: bool = True  # LocalAuthorizeOffline
    local_pre_authorize: bool = False  # LocalPreAuthorize
    allow_offline_tx_for_unknown_id: bool = False  # AllowOfflineTxForUnknownId


class AuthSource(StrEnum):
    LOCAL_LIST = "local_list"
    CACHE = "cache"
    OFFLINE_POLICY = "offline_policy"  # no record was used: the offline rules for unknown tags decided


@dataclass(frozen=True, slots=True, repr=False)
class DecidedLocally:
    """Start (or refuse) now, without the back office; ``info`` says why, ``source`` where from."""

    id_tag: str
    accepted: bool
    info: IdTagInfo
    source: AuthSource

    @property
    def status(self) -> AuthStatus:
        """What to hand to ``TransactionMachine.on_authorization``: Accepted, or the reason for refusing."""
        return AuthStatus.ACCEPTED if self.accepted else self.info.status

    def __repr__(self) -> str:
        verdict = "accepted" if self.accepted else "rejected"
        return f"DecidedLocally({mask_id_tag(self.id_tag)}, {verdict}, source={self.source.value}, info={self.info!r})"


@dataclass(frozen=True, slots=True, repr=False)
class AskBackOffice:
    """Send the tag to the back office (Authorize) and act on its answer."""

    id_tag: str

    def __repr__(self) -> str:
        return f"AskBackOffice({mask_id_tag(self.id_tag)})"


AuthDecision = DecidedLocally | AskBackOffice


class RecordOutcome(StrEnum):
    CACHED = "cached"
    NOT_CACHED = "not_cached"  # the cache is off, or the local list holds the tag and agrees
    LOCAL_LIST_CONFLICT = "local_list_conflict"  # the list holds the tag and the back office disagrees


_INVALID = IdTagInfo(AuthStatus.INVALID)  # "unknown tag": OCPP's Invalid means "not known, not allowed"
_ACCEPTED = IdTagInfo(AuthStatus.ACCEPTED)


class Authorizer:
    """Decides for a tag shown at a charger, from the records and the settings (OCPP 1.6 §3.5).

    ``settings`` may be replaced at any time (ChangeConfiguration); the records are shared with
    whoever persists them and handles list updates and ClearCache.
    """

    def __init__(self, settings: AuthSettings, local_list: LocalAuthList, cache: AuthorizationCache) -> None:
        self.settings = settings
        self.local_list = local_list
        self.cache = cache

    def lookup(self, id_tag: str, at: datetime) -> tuple[IdTagInfo, AuthSource] | None:
        """What the enabled records say of the tag at ``at``; the list outranks the cache."""
        if self.settings.local_auth_list_enabled and self.local_list.supported:
            listed = self.local_list.get(id_tag)
            if listed is not None:
                return listed.as_of(at), AuthSource.LOCAL_LIST
        if self.settings.authorization_cache_enabled:
            cached = self.cache.lookup(id_tag, at)
            if cached is not None:
                return cached, AuthSource.CACHE
        return None

    def decide(self, id_tag: str, *, online: bool, at: datetime) -> AuthDecision:
        """Accept or refuse now, or ask the back office.

        Online: a tag the records call valid starts at once with LocalPreAuthorize (and is not
        checked again); everything else, and everything without LocalPreAuthorize, is asked: a
        record that refuses may be stale, and the back office is there to say so.
        Offline: a tag the records call blocked, expired or invalid is refused (a MUST of "Unknown
        Offline Authorization"); a valid one is accepted with LocalAuthorizeOffline; a tag no usable
        record vouches for (unknown, or known but LocalAuthorizeOffline is off) is accepted only
        with AllowOfflineTxForUnknownId; all else is refused.
        A cache hit counts as a use of that entry (it moves away from eviction).
        """
        known = self.lookup(id_tag, at)
        settings = self.settings
        decision: AuthDecision
        if online:
            if settings.local_pre_authorize and known is not None and known[0].is_valid:
                decision = DecidedLocally(id_tag, True, *known)
            else:
                decision = AskBackOffice(id_tag)
        elif known is not None and not known[0].is_valid:
            decision = DecidedLocally(id_tag, False, *known)
        elif known is not None and settings.local_authorize_offline:
            decision = DecidedLocally(id_tag, True, *known)
        elif settings.allow_offline_tx_for_unknown_id:
            decision = DecidedLocally(id_tag, True, _ACCEPTED, AuthSource.OFFLINE_POLICY)
        else:
            decision = DecidedLocally(id_tag, False, _INVALID, AuthSource.OFFLINE_POLICY)
        log.debug("authorisation (%s): %r", "online" if online else "offline", decision)
        return decision

    def record(self, id_tag: str, info: IdTagInfo, at: datetime) -> RecordOutcome:
        """Learn from the back office's answer (Authorize, StartTransaction or StopTransaction) received at ``at``.

        A tag on the enabled local list is never cached: the list entry wins. If the answer's
        validity contradicts the entry, the outcome says so; OCPP 1.6 §3.5 wants the back office
        told (StatusNotification on connector 0 with LocalListConflict). ConcurrentTx and Accepted
        agree: both say the tag is good.
        """
        if self.settings.local_auth_list_enabled and self.local_list.supported:
            listed = self.local_list.get(id_tag)
            if listed is not None:
                if _validity(listed.as_of(at)) != _validity(info):
                    log.warning(
                        "local list conflict for %s: list says %s, back office says %s",
                        mask_id_tag(id_tag),
                        listed.as_of(at).status.value,
                        info.status.value,
                    )
                    return RecordOutcome.LOCAL_LIST_CONFLICT
                return RecordOutcome.NOT_CACHED
        if not self.settings.authorization_cache_enabled:
            return RecordOutcome.NOT_CACHED
        self.cache.remember(id_tag, info, at)
        return RecordOutcome.CACHED


def _validity(info: IdTagInfo) -> AuthStatus:
    return AuthStatus.ACCEPTED if info.is_valid else info.status
