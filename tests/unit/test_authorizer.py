"""The authorisation decision (OCPP 1.6 §3.5): the full table online/offline x settings x record x status."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from gateway.domain.authorization import AuthorizationCache, IdTagInfo, ListUpdateType, LocalAuthList
from gateway.domain.authorizer import (
    AskBackOffice,
    AuthDecision,
    Authorizer,
    AuthSettings,
    AuthSource,
    DecidedLocally,
    RecordOutcome,
)
from gateway.domain.transactions import AuthStatus

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
TAG = "04A2B3C4D5E6F7"
ALL_ON = AuthSettings(True, True, True, True, True)
ALL_OFF = AuthSettings(False, False, False, False, False)

# what the record says of TAG, and whether that makes it valid at T0
STATUSES = {
    "accepted": (IdTagInfo(AuthStatus.ACCEPTED, T0 + timedelta(days=1)), True),
    "concurrent_tx": (IdTagInfo(AuthStatus.CONCURRENT_TX), True),
    "blocked": (IdTagInfo(AuthStatus.BLOCKED), False),
    "expired": (IdTagInfo(AuthStatus.EXPIRED), False),
    "expired_by_date": (IdTagInfo(AuthStatus.ACCEPTED, T0 - timedelta(seconds=1)), False),
    "invalid": (IdTagInfo(AuthStatus.INVALID), False),
}


def build(settings: AuthSettings, *, listed: IdTagInfo | None = None, cached: IdTagInfo | None = None) -> Authorizer:
    local_list, cache = LocalAuthList(), AuthorizationCache()
    if listed is not None:
        local_list.send_local_list(1, ListUpdateType.FULL, [(TAG, listed)])
    if cached is not None:
        cache.remember(TAG, cached, T0 - timedelta(hours=1))
    return Authorizer(settings, local_list, cache)


def summary(decision: AuthDecision) -> tuple[str, ...]:
    if isinstance(decision, AskBackOffice):
        return ("ask",)
    return ("accept" if decision.accepted else "reject", decision.source.value)


def spec_table(online: bool, settings: AuthSettings, where: str, valid: bool) -> tuple[str, ...]:
    """The rules of OCPP 1.6 §3.5 in plain terms, independent of the implementation's structure."""
    usable = (where == "list" and settings.local_auth_list_enabled) or (
        where == "cache" and settings.authorization_cache_enabled
    )
    source = where.replace("list", "local_list")
    if online:
        return ("accept", source) if usable and valid and settings.local_pre_authorize else ("ask",)
    if usable and not valid:
        return (
            "reject",
            source,
        )  # "Unknown Offline Authorization": known blocked / expired / invalid tags MUST be refused
    if usable and settings.local_authorize_offline:
        return ("accept", source)
    if settings.allow_offline_tx_for_unknown_id:
        return ("accept", "offline_policy")
    return ("reject", "offline_policy")


def test_the_full_decision_table() -> None:
    mismatches = []
    cases = 0
    for online, flags, where, status in itertools.product(
        (True, False), itertools.product((True, False), repeat=5), ("list", "cache", "unknown"), STATUSES
    ):
        settings = AuthSettings(*flags)
        info, valid = STATUSES[status]
        authorizer = build(
            settings, listed=info if where == "list" else None, cached=info if where == "cache" else None
        )
        got = summary(authorizer.decide(TAG, online=online, at=T0))
        want = spec_table(online, settings, where, valid)
        cases += 1
        if got != want:
            mismatches.append((online, settings, where, status, got, want))
    assert cases == 2 * 32 * 3 * 6
    assert not mismatches, mismatches[:5]


# -- the rows that matter most, spelled out -----------------------------------------------------------
def test_online_without_local_pre_authorize_always_asks() -> None:
    settings = replace(ALL_ON, local_pre_authorize=False)
    assert build(settings, listed=IdTagInfo(AuthStatus.ACCEPTED)).decide(TAG, online=True, at=T0) == AskBackOffice(TAG)


def test_online_with_local_pre_authorize_starts_a_listed_tag_at_once() -> None:
    decision = build(ALL_ON, listed=IdTagInfo(AuthStatus.ACCEPTED, parent_id_tag="P")).decide(TAG, online=True, at=T0)
    assert decision == DecidedLocally(
        TAG, True, IdTagInfo(AuthStatus.ACCEPTED, parent_id_tag="P"), AuthSource.LOCAL_LIST
    )
    assert decision.status is AuthStatus.ACCEPTED


def test_online_a_locally_refused_tag_is_still_asked() -> None:
    """The back office may know better than a stale record; only a locally *authorised* tag skips it."""
    for record in ("listed", "cached"):
        authorizer = build(ALL_ON, **{record: IdTagInfo(AuthStatus.BLOCKED)})
        assert isinstance(authorizer.decide(TAG, online=True, at=T0), AskBackOffice)


def test_the_list_outranks_the_cache() -> None:
    blocked_on_list = build(ALL_ON, listed=IdTagInfo(AuthStatus.BLOCKED), cached=IdTagInfo(AuthStatus.ACCEPTED))
    decision = blocked_on_list.decide(TAG, online=False, at=T0)
    assert isinstance(decision, DecidedLocally)
    assert (decision.accepted, decision.source, decision.status) == (False, AuthSource.LOCAL_LIST, AuthStatus.BLOCKED)
    accepted_on_list = build(ALL_ON, listed=IdTagInfo(AuthStatus.ACCEPTED), cached=IdTagInfo(AuthStatus.BLOCKED))
    assert summary(accepted_on_list.decide(TAG, online=False, at=T0)) == ("accept", "local_list")


def test_a_disabled_list_leaves_the_cache_to_decide() -> None:
    settings = replace(ALL_ON, local_auth_list_enabled=False, allow_offline_tx_for_unknown_id=False)
    authorizer = build(settings, listed=IdTagInfo(AuthStatus.ACCEPTED), cached=IdTagInfo(AuthStatus.INVALID))
    assert summary(authorizer.decide(TAG, online=False, at=T0)) == ("reject", "cache")


def test_an_unsupported_list_is_never_consulted() -> None:
    authorizer = Authorizer(ALL_ON, LocalAuthList(supported=False), AuthorizationCache())
    assert summary(authorizer.decide(TAG, online=True, at=T0)) == ("ask",)


def test_offline_an_expired_record_is_refused_even_for_unknown_friendly_sites() -> None:
    authorizer = build(ALL_ON, cached=IdTagInfo(AuthStatus.ACCEPTED, expiry_date=T0))
    decision = authorizer.decide(TAG, online=False, at=T0)
    assert isinstance(decision, DecidedLocally)
    assert (decision.accepted, decision.status, decision.source) == (False, AuthStatus.EXPIRED, AuthSource.CACHE)


def test_offline_unknown_tags_need_allow_offline_tx_for_unknown_id() -> None:
    allowed = build(replace(ALL_OFF, allow_offline_tx_for_unknown_id=True)).decide(TAG, online=False, at=T0)
    assert allowed == DecidedLocally(TAG, True, IdTagInfo(AuthStatus.ACCEPTED), AuthSource.OFFLINE_POLICY)
    refused = build(ALL_OFF).decide(TAG, online=False, at=T0)
    assert refused == DecidedLocally(TAG, False, IdTagInfo(AuthStatus.INVALID), AuthSource.OFFLINE_POLICY)
    assert refused.status is AuthStatus.INVALID


def test_offline_without_local_authorize_offline_a_known_good_tag_counts_as_unknown() -> None:
    """No record may vouch for it, so it is no better and no worse off than a tag never seen."""
    settings = replace(ALL_ON, local_authorize_offline=False, allow_offline_tx_for_unknown_id=False)
    assert summary(build(settings, listed=IdTagInfo(AuthStatus.ACCEPTED)).decide(TAG, online=False, at=T0)) == (
        "reject",
        "offline_policy",
    )
    settings = replace(settings, allow_offline_tx_for_unknown_id=True)
    assert summary(build(settings, listed=IdTagInfo(AuthStatus.ACCEPTED)).decide(TAG, online=False, at=T0)) == (
        "accept",
        "offline_policy",
    )


def test_settings_can_change_at_run_time() -> None:
    authorizer = build(ALL_OFF)
    authorizer.settings = replace(ALL_OFF, allow_offline_tx_for_unknown_id=True)
    assert summary(authorizer.decide(TAG, online=False, at=T0)) == ("accept", "offline_policy")


def test_decisions_hide_the_tag() -> None:
    for decision in (build(ALL_OFF).decide(TAG, online=False, at=T0), build(ALL_OFF).decide(TAG, online=True, at=T0)):
        assert TAG not in repr(decision) and "****E6F7" in repr(decision)


# -- learning from the back office's answers ----------------------------------------------------------
def test_answers_feed_the_cache_which_then_decides_offline() -> None:
    authorizer = build(replace(ALL_ON, local_pre_authorize=False))
    assert authorizer.record(TAG, IdTagInfo(AuthStatus.ACCEPTED), T0) is RecordOutcome.CACHED
    assert summary(authorizer.decide(TAG, online=False, at=T0 + timedelta(hours=1))) == ("accept", "cache")
    authorizer.cache.clear()
    assert summary(authorizer.decide(TAG, online=False, at=T0 + timedelta(hours=1))) == ("accept", "offline_policy")


def test_nothing_is_cached_while_the_cache_is_off() -> None:
    authorizer = build(replace(ALL_ON, authorization_cache_enabled=False))
    assert authorizer.record(TAG, IdTagInfo(AuthStatus.ACCEPTED), T0) is RecordOutcome.NOT_CACHED
    assert len(authorizer.cache) == 0


def test_a_listed_tag_is_never_cached_and_a_contradiction_is_reported() -> None:
    authorizer = build(ALL_ON, listed=IdTagInfo(AuthStatus.ACCEPTED))
    assert authorizer.record(TAG, IdTagInfo(AuthStatus.ACCEPTED), T0) is RecordOutcome.NOT_CACHED
    assert authorizer.record(TAG, IdTagInfo(AuthStatus.CONCURRENT_TX), T0) is RecordOutcome.NOT_CACHED  # both good
    assert authorizer.record(TAG, IdTagInfo(AuthStatus.BLOCKED), T0) is RecordOutcome.LOCAL_LIST_CONFLICT
    assert len(authorizer.cache) == 0


def test_an_expired_list_entry_agrees_with_an_expired_answer() -> None:
    authorizer = build(ALL_ON, listed=IdTagInfo(AuthStatus.ACCEPTED, expiry_date=T0))
    assert authorizer.record(TAG, IdTagInfo(AuthStatus.EXPIRED), T0) is RecordOutcome.NOT_CACHED
    assert authorizer.record(TAG, IdTagInfo(AuthStatus.ACCEPTED), T0) is RecordOutcome.LOCAL_LIST_CONFLICT


def test_a_disabled_list_does_not_stop_caching() -> None:
    authorizer = build(replace(ALL_ON, local_auth_list_enabled=False), listed=IdTagInfo(AuthStatus.ACCEPTED))
    assert authorizer.record(TAG, IdTagInfo(AuthStatus.BLOCKED), T0) is RecordOutcome.CACHED


@pytest.mark.parametrize("status", list(AuthStatus))
def test_every_status_is_cached_as_answered(status: AuthStatus) -> None:
    authorizer = build(ALL_ON)
    authorizer.record(TAG, IdTagInfo(status), T0)
    assert authorizer.cache.lookup(TAG, T0) == IdTagInfo(status)
