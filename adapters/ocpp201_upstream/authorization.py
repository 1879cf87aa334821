"""Authorisation of the 2.0.1 station: Authorize answers, the local list, the cache and the offline rules.

The rules are the domain's (``gateway.domain.authorizer``: the list outranks the cache; offline, a
record that refuses refuses, a valid one accepts with LocalAuthorizeOffline, an unknown card is
accepted only with OfflineTxForUnknownIdEnabled); this module translates 2.0.1's payloads to and
from it and keeps the records on disk. The list and the cache have sections of their own
(``ocpp201_local_list``, ``ocpp201_authorization_cache``), apart from 1.6's: a list belongs to
the back office that sent it, with its version numbers, and a gateway moved to a 2.0.1 CSMS must
not trust cards that another back office once listed.

2.0.1 -> domain: idTokenInfo.status (Accepted, Blocked, Expired, Invalid, ConcurrentTx as
themselves; NoCredit, NotAllowedTypeOfEVSE, NotAtThisLocation, NotAtThisTime and Unknown refuse
as Invalid), ``cacheExpiryDateTime`` -> the entry's expiry (Expired from then on),
``groupIdToken.idToken`` -> the parent tag. Entries are keyed by ``idToken`` alone: the chargers
hand the gateway a card's number, not its type. Full id tokens never reach a log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from gateway.domain.authorization import (
    AuthorizationCache,
    IdTagInfo,
    ListUpdateStatus,
    ListUpdateType,
    LocalAuthList,
    UnreadableState,
    mask_id_tag,
)
from gateway.domain.authorizer import AskBackOffice, Authorizer, AuthSettings, RecordOutcome
from gateway.domain.ports import SettingsStore
from gateway.domain.transactions import AuthStatus

log = logging.getLogger(__name__)

LOCAL_LIST = "ocpp201_local_list"
CACHE = "ocpp201_authorization_cache"

AUTH_STATUS = {
    "Accepted": AuthStatus.ACCEPTED,
    "Blocked": AuthStatus.BLOCKED,
    "Expired": AuthStatus.EXPIRED,
    "Invalid": AuthStatus.INVALID,
    "ConcurrentTx": AuthStatus.CONCURRENT_TX,
    "NoCredit": AuthStatus.INVALID,
    "NotAllowedTypeOfEVSE": AuthStatus.INVALID,
    "NotAtThisLocation": AuthStatus.INVALID,
    "NotAtThisTime": AuthStatus.INVALID,
    "Unknown": AuthStatus.INVALID,
}
UPDATE_TYPE = {"Full": ListUpdateType.FULL, "Differential": ListUpdateType.DIFFERENTIAL}
UPDATE_STATUS = {
    ListUpdateStatus.ACCEPTED: "Accepted",
    ListUpdateStatus.FAILED: "Failed",
    ListUpdateStatus.NOT_SUPPORTED: "Failed",
    ListUpdateStatus.VERSION_MISMATCH: "VersionMismatch",
}
# The device model's names for the settings (2.0.1 defaults = AuthSettings' defaults), for SetVariables.
AUTH_VARIABLES = {
    ("LocalAuthListCtrlr", "Enabled"): "local_auth_list_enabled",
    ("AuthCacheCtrlr", "Enabled"): "authorization_cache_enabled",
    ("AuthCtrlr", "LocalAuthorizeOffline"): "local_authorize_offline",
    ("AuthCtrlr", "LocalPreAuthorize"): "local_pre_authorize",
    ("AuthCtrlr", "OfflineTxForUnknownIdEnabled"): "allow_offline_tx_for_unknown_id",
}


def auth_status(status: object) -> AuthStatus:
    """A 2.0.1 AuthorizationStatus in the domain's words; anything unknown refuses."""
    return AUTH_STATUS.get(str(status), AuthStatus.INVALID)


def _moment(text: object) -> datetime:
    if not isinstance(text, str):
        raise ValueError("a dateTime must be a string")
    moment = datetime.fromisoformat(text)
    return moment if moment.utcoffset() is not None else moment.replace(tzinfo=UTC)


def id_token_info(data: Mapping[str, Any]) -> IdTagInfo:
    """An idTokenInfo as the library hands it (snake_case keys). Raises ValueError."""
    if not isinstance(data, Mapping):
        raise ValueError("idTokenInfo must be an object")
    expiry = data.get("cache_expiry_date_time")
    group = data.get("group_id_token")
    parent = group.get("id_token") if isinstance(group, Mapping) else None
    return IdTagInfo(
        auth_status(data.get("status")),
        None if expiry is None else _moment(expiry),
        parent if isinstance(parent, str) else None,
    )


def list_entries(entries: Iterable[Mapping[str, Any]] | None) -> list[tuple[str, IdTagInfo | None]]:
    """SendLocalList's localAuthorizationList in the domain's terms (no idTokenInfo: remove the tag).

    Raises ValueError naming the entry's position, never its token."""
    parsed: list[tuple[str, IdTagInfo | None]] = []
    for position, item in enumerate(entries or ()):
        try:
            info = item.get("id_token_info")
            parsed.append((str(item["id_token"]["id_token"]), None if info is None else id_token_info(info)))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"localAuthorizationList[{position}]: {type(exc).__name__}") from exc
    return parsed


class Authorization201:
    """The station's records and rules; every change is saved at once."""

    def __init__(self, store: SettingsStore, settings: AuthSettings | None = None) -> None:
        self.store = store
        self.authorizer = Authorizer(settings or AuthSettings(), LocalAuthList(), AuthorizationCache())
        try:
            if (stored_list := store.load(LOCAL_LIST)) is not None:
                self.authorizer.local_list = LocalAuthList.from_dict(stored_list)
            if (stored_cache := store.load(CACHE)) is not None:
                self.authorizer.cache = AuthorizationCache.from_dict(stored_cache)
        except UnreadableState as exc:
            log.warning("stored 2.0.1 local authorisation list or cache ignored: %s", exc)

    def _save(self) -> None:
        self.store.save(LOCAL_LIST, self.authorizer.local_list.to_dict())
        self.store.save(CACHE, self.authorizer.cache.to_dict())

    def decide(self, id_tag: str, connector_id: int, *, online: bool, at: datetime) -> AuthStatus | None:
        """Accept or refuse now (the answer), or None: ask the CSMS (Authorize)."""
        decision = self.authorizer.decide(id_tag, online=online, at=at)
        if isinstance(decision, AskBackOffice):
            return None
        verdict = "accepted" if decision.accepted else "refused"
        log.info("id token %s on EVSE %s %s locally (%s)", mask_id_tag(id_tag), connector_id, verdict, decision.source)
        return decision.status

    def remember(self, id_tag: str, info: object, at: datetime) -> None:
        """Feed the cache from a CSMS answer's idTokenInfo (Authorize, TransactionEvent)."""
        try:
            parsed = id_token_info(info)  # type: ignore[arg-type]
        except ValueError as exc:
            log.warning("unreadable idTokenInfo from the CSMS: %s", exc)
            return
        outcome = self.authorizer.record(id_tag, parsed, at)
        if outcome is RecordOutcome.LOCAL_LIST_CONFLICT:
            log.warning("the CSMS and the local list disagree about id token %s", mask_id_tag(id_tag))
        elif outcome is RecordOutcome.CACHED:
            self.store.save(CACHE, self.authorizer.cache.to_dict())

    def send_local_list(
        self, version_number: int, update_type: str, entries: Iterable[Mapping[str, Any]] | None
    ) -> str:
        """Apply a SendLocalList, all or nothing; the 2.0.1 status."""
        try:
            parsed = list_entries(entries)
        except ValueError as exc:
            log.warning("SendLocalList version %s refused: %s", version_number, exc)
            return "Failed"
        kind = UPDATE_TYPE.get(update_type)
        if kind is None:
            return "Failed"
        status = self.authorizer.local_list.send_local_list(version_number, kind, parsed)
        if status is ListUpdateStatus.ACCEPTED:
            self._save()
        return UPDATE_STATUS[status]

    @property
    def list_version(self) -> int:
        """GetLocalListVersion: 0 for an empty list (or none)."""
        return max(self.authorizer.local_list.version, 0)

    def clear_cache(self) -> str:
        """ClearCache: Rejected when the cache is off (AuthCacheCtrlr.Enabled false), as 2.0.1 says."""
        if not self.authorizer.settings.authorization_cache_enabled:
            return "Rejected"
        self.authorizer.cache.clear()
        self.store.save(CACHE, self.authorizer.cache.to_dict())
        return "Accepted"
