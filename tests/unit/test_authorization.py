"""The local authorisation list and the authorisation cache: updates, versions, limits, eviction, expiry, storage."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta, timezone

import pytest

from gateway.domain.authorization import (
    AuthorizationCache,
    IdTagInfo,
    ListUpdateStatus,
    ListUpdateType,
    LocalAuthList,
    UnreadableState,
    mask_id_tag,
)
from gateway.domain.transactions import AuthStatus

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
ACCEPTED = IdTagInfo(AuthStatus.ACCEPTED)
BLOCKED = IdTagInfo(AuthStatus.BLOCKED)
FULL, DIFF = ListUpdateType.FULL, ListUpdateType.DIFFERENTIAL


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def tags(local_list: LocalAuthList) -> dict[str, AuthStatus]:
    return {tag: info.status for tag, info in local_list.entries.items()}


# -- masking ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("tag", "masked"),
    [("04A2B3C4D5E6F7", "****E6F7"), ("12345678", "****5678"), ("1234567", "****"), ("AB", "****"), ("", "****")],
)
def test_mask_keeps_the_last_four_of_long_tags_only(tag: str, masked: str) -> None:
    assert mask_id_tag(tag) == masked


def test_reprs_never_show_a_whole_tag() -> None:
    info = IdTagInfo(AuthStatus.ACCEPTED, at(60), parent_id_tag="FLEET-PARENT-0042")
    assert "FLEET-PARENT" not in repr(info) and "****0042" in repr(info)
    local_list = LocalAuthList()
    local_list.send_local_list(1, FULL, [("CARD-SECRET-1234", info)])
    cache = AuthorizationCache()
    cache.remember("CARD-SECRET-1234", info, T0)
    for text in (repr(local_list), repr(cache), repr(cache._entries["card-secret-1234"])):
        assert "SECRET" not in text


def test_no_log_line_carries_a_whole_tag(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    local_list = LocalAuthList(max_length=1, send_max_length=2)
    local_list.send_local_list(1, FULL, [("CARD-SECRET-1111", ACCEPTED)])
    local_list.send_local_list(1, DIFF, [("CARD-SECRET-2222", ACCEPTED)])
    local_list.send_local_list(2, DIFF, [("CARD-SECRET-2222", ACCEPTED)])
    cache = AuthorizationCache(max_entries=1)
    cache.remember("CARD-SECRET-3333", ACCEPTED, T0)
    cache.remember("CARD-SECRET-4444", ACCEPTED, T0)
    cache.clear()
    assert caplog.records and "SECRET" not in caplog.text


# -- IdTagInfo -------------------------------------------------------------------------------------------
def test_a_valid_tag_expires_when_its_date_comes() -> None:
    info = IdTagInfo(AuthStatus.ACCEPTED, expiry_date=at(10))
    assert info.as_of(at(9)).status is AuthStatus.ACCEPTED
    assert info.as_of(at(10)).status is AuthStatus.EXPIRED
    assert IdTagInfo(AuthStatus.CONCURRENT_TX, at(10)).as_of(at(11)).status is AuthStatus.EXPIRED
    assert IdTagInfo(AuthStatus.BLOCKED, at(10)).as_of(at(11)).status is AuthStatus.BLOCKED  # stays as bad as it was
    assert IdTagInfo(AuthStatus.ACCEPTED).as_of(at(10**6)).status is AuthStatus.ACCEPTED


def test_expiry_dates_need_a_zone() -> None:
    with pytest.raises(ValueError):
        IdTagInfo(AuthStatus.ACCEPTED, expiry_date=datetime(2026, 1, 1))


def test_id_tag_info_round_trips_through_json() -> None:
    info = IdTagInfo(
        AuthStatus.BLOCKED, datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2))), "P1"
    )
    assert IdTagInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info
    assert IdTagInfo.from_dict({"status": "accepted"}) == ACCEPTED


# -- the local list: updates and versions --------------------------------------------------------------
def test_an_empty_list_is_version_zero_and_an_unsupported_one_minus_one() -> None:
    assert LocalAuthList().version == 0
    unsupported = LocalAuthList(supported=False)
    assert unsupported.version == -1
    assert unsupported.send_local_list(1, FULL, [("A", ACCEPTED)]) is ListUpdateStatus.NOT_SUPPORTED
    assert len(unsupported) == 0


def test_full_update_replaces_everything() -> None:
    local_list = LocalAuthList()
    assert local_list.send_local_list(3, FULL, [("A", ACCEPTED), ("B", BLOCKED)]) is ListUpdateStatus.ACCEPTED
    assert local_list.send_local_list(4, FULL, [("C", ACCEPTED)]) is ListUpdateStatus.ACCEPTED
    assert (local_list.version, tags(local_list)) == (4, {"C": AuthStatus.ACCEPTED})


def test_full_update_may_go_back_in_version() -> None:
    local_list = LocalAuthList()
    local_list.send_local_list(9, FULL, [("A", ACCEPTED)])
    assert local_list.send_local_list(2, FULL, [("B", ACCEPTED)]) is ListUpdateStatus.ACCEPTED
    assert (local_list.version, tags(local_list)) == (2, {"B": AuthStatus.ACCEPTED})


def test_differential_update_adds_updates_and_removes() -> None:
    local_list = LocalAuthList()
    local_list.send_local_list(1, FULL, [("A", ACCEPTED), ("B", ACCEPTED), ("C", ACCEPTED)])
    status = local_list.send_local_list(2, DIFF, [("A", BLOCKED), ("B", None), ("D", ACCEPTED), ("NOPE", None)])
    assert status is ListUpdateStatus.ACCEPTED
    assert local_list.version == 2
    assert tags(local_list) == {"A": AuthStatus.BLOCKED, "C": AuthStatus.ACCEPTED, "D": AuthStatus.ACCEPTED}


@pytest.mark.parametrize("version", [1, 4])
def test_differential_update_not_newer_is_a_version_mismatch(version: int) -> None:
    local_list = LocalAuthList()
    local_list.send_local_list(4, FULL, [("A", ACCEPTED)])
    assert local_list.send_local_list(version, DIFF, [("A", None)]) is ListUpdateStatus.VERSION_MISMATCH
    assert (local_list.version, tags(local_list)) == (4, {"A": AuthStatus.ACCEPTED})


def test_differential_update_may_skip_versions() -> None:
    local_list = LocalAuthList()
    local_list.send_local_list(1, FULL, [("A", ACCEPTED)])
    assert local_list.send_local_list(7, DIFF, [("B", ACCEPTED)]) is ListUpdateStatus.ACCEPTED
    assert local_list.version == 7


@pytest.mark.parametrize(("version", "update_type"), [(0, FULL), (-1, FULL), (0, DIFF), (-5, DIFF)])
def test_versions_below_one_fail(version: int, update_type: ListUpdateType) -> None:
    local_list = LocalAuthList()
    local_list.send_local_list(1, FULL, [("A", ACCEPTED)])
    assert local_list.send_local_list(version, update_type, []) is ListUpdateStatus.FAILED
    assert (local_list.version, len(local_list)) == (1, 1)


def test_an_emptied_list_reports_version_zero() -> None:
    local_list = LocalAuthList()
    local_list.send_local_list(5, FULL, [("A", ACCEPTED)])
    assert local_list.send_local_list(6, DIFF, [("A", None)]) is ListUpdateStatus.ACCEPTED
    assert local_list.version == 0
    assert local_list.send_local_list(8, FULL, []) is ListUpdateStatus.ACCEPTED
    assert local_list.version == 0
    assert local_list.send_local_list(1, DIFF, [("B", ACCEPTED)]) is ListUpdateStatus.ACCEPTED  # 1 > 0


def test_entries_apply_in_order_and_a_full_entry_without_info_adds_nothing() -> None:
    local_list = LocalAuthList()
    local_list.send_local_list(1, FULL, [("A", ACCEPTED), ("A", BLOCKED), ("B", None), ("C", ACCEPTED), ("C", None)])
    assert tags(local_list) == {"A": AuthStatus.BLOCKED}


def test_update_type_may_be_given_as_text() -> None:
    local_list = LocalAuthList()
    assert local_list.send_local_list(1, "full", [("A", ACCEPTED)]) is ListUpdateStatus.ACCEPTED
    assert local_list.send_local_list(2, "differential", [("A", None)]) is ListUpdateStatus.ACCEPTED


def test_tags_compare_case_insensitively_and_keep_their_spelling() -> None:
    local_list = LocalAuthList()
    local_list.send_local_list(1, FULL, [("04a2b3c4", ACCEPTED)])
    assert "04A2B3C4" in local_list and local_list.get("04A2B3C4") == ACCEPTED
    local_list.send_local_list(2, DIFF, [("04A2B3C4", BLOCKED)])
    assert tags(local_list) == {"04A2B3C4": AuthStatus.BLOCKED}
    local_list.send_local_list(3, DIFF, [("04a2B3c4", None)])
    assert len(local_list) == 0


# -- the local list: limits ------------------------------------------------------------------------------
def test_an_update_longer_than_send_local_list_max_length_fails() -> None:
    local_list = LocalAuthList(max_length=10, send_max_length=2)
    assert local_list.send_local_list(1, FULL, [("A", ACCEPTED), ("B", ACCEPTED)]) is ListUpdateStatus.ACCEPTED
    assert local_list.send_local_list(2, DIFF, [("C", ACCEPTED), ("D", None), ("E", None)]) is ListUpdateStatus.FAILED
    assert (local_list.version, sorted(local_list.entries)) == (1, ["A", "B"])


def test_a_list_longer_than_local_auth_list_max_length_fails_and_changes_nothing() -> None:
    local_list = LocalAuthList(max_length=2, send_max_length=5)
    assert local_list.send_local_list(1, FULL, [("A", ACCEPTED), ("B", ACCEPTED), ("C", ACCEPTED)]) == "failed"
    assert local_list.send_local_list(1, FULL, [("A", ACCEPTED), ("B", ACCEPTED)]) is ListUpdateStatus.ACCEPTED
    assert local_list.send_local_list(2, DIFF, [("C", ACCEPTED)]) is ListUpdateStatus.FAILED
    assert (local_list.version, sorted(local_list.entries)) == (1, ["A", "B"])
    # removing and adding in one update stays within the limit
    assert local_list.send_local_list(2, DIFF, [("A", None), ("C", ACCEPTED)]) is ListUpdateStatus.ACCEPTED
    assert sorted(local_list.entries) == ["B", "C"]


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LocalAuthList(max_length=0)
    with pytest.raises(ValueError):
        AuthorizationCache(max_entries=0)


# -- the local list: storage -----------------------------------------------------------------------------
def test_local_list_round_trips_through_json() -> None:
    local_list = LocalAuthList()
    local_list.send_local_list(
        12, FULL, [("CardOne-0001", IdTagInfo(AuthStatus.ACCEPTED, at(600), "PARENT-01")), ("B", BLOCKED)]
    )
    restored = LocalAuthList.from_dict(json.loads(json.dumps(local_list.to_dict())))
    assert restored.version == 12
    assert restored.entries == local_list.entries
    assert restored.get("cardone-0001") == IdTagInfo(AuthStatus.ACCEPTED, at(600), "PARENT-01")


def test_stored_lists_take_their_limits_from_configuration() -> None:
    local_list = LocalAuthList()
    local_list.send_local_list(3, FULL, [("A", ACCEPTED), ("B", ACCEPTED)])
    restored = LocalAuthList.from_dict(local_list.to_dict(), max_length=1)
    assert len(restored) == 2  # kept whole: which tags to drop is the back office's call
    assert restored.send_local_list(4, DIFF, [("C", ACCEPTED)]) is ListUpdateStatus.FAILED
    assert LocalAuthList.from_dict(local_list.to_dict(), supported=False).version == -1
    assert LocalAuthList.from_dict({"version": 7, "entries": []}).version == 0


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"version": "3", "entries": []},
        {"version": -2, "entries": []},
        {"version": 1, "entries": [{"id_tag": "A"}]},
        {"version": 1, "entries": [{"id_tag": 5, "info": {"status": "accepted"}}]},
        {"version": 1, "entries": [{"id_tag": "A", "info": {"status": "Accepted"}}]},
        {"version": 1, "entries": [{"id_tag": "A", "info": {"status": "accepted", "expiry_date": "2026-01-01"}}]},
        {"version": 1, "entries": [{"id_tag": "A", "info": {"status": "accepted", "parent_id_tag": 3}}]},
        {"version": 1, "entries": [{"id_tag": "A", "info": ["accepted"]}]},
        {"version": 1, "entries": ["A"]},
        {"version": 1, "entries": 3},
    ],
)
def test_unreadable_stored_lists_raise_one_error(data: dict[str, object]) -> None:
    with pytest.raises(UnreadableState):
        LocalAuthList.from_dict(data)


# -- the cache -------------------------------------------------------------------------------------------
def test_cache_keeps_the_latest_answer_valid_or_not() -> None:
    cache = AuthorizationCache()
    cache.remember("A", ACCEPTED, at(0))
    cache.remember("a", BLOCKED, at(1))
    assert len(cache) == 1 and cache.lookup("A", at(2)) == BLOCKED
    assert cache.lookup("unknown", at(2)) is None


def test_cache_evicts_the_least_recently_used() -> None:
    cache = AuthorizationCache(max_entries=2)
    cache.remember("A", ACCEPTED, at(0))
    cache.remember("B", ACCEPTED, at(1))
    assert cache.lookup("A", at(2)) is not None  # A is now more recent than B
    cache.remember("C", ACCEPTED, at(3))
    assert ("A" in cache, "B" in cache, "C" in cache) == (True, False, True)
    cache.remember("A", BLOCKED, at(4))  # an update is a use too
    cache.remember("D", ACCEPTED, at(5))
    assert ("A" in cache, "C" in cache, "D" in cache) == (True, False, True)


def test_cache_entries_past_their_expiry_are_expired() -> None:
    cache = AuthorizationCache()
    cache.remember("A", IdTagInfo(AuthStatus.ACCEPTED, expiry_date=at(30)), at(0))
    assert cache.lookup("A", at(29)) == IdTagInfo(AuthStatus.ACCEPTED, at(30))
    assert cache.lookup("A", at(30)) == IdTagInfo(AuthStatus.EXPIRED, at(30))
    # changed in the cache itself, as OCPP 1.6 asks: it stays Expired when stored and restored
    assert cache.to_dict()["entries"][0]["info"]["status"] == "expired"


def test_cache_lifetime_forgets_old_answers() -> None:
    cache = AuthorizationCache(lifetime=timedelta(hours=1))
    cache.remember("A", ACCEPTED, at(0))
    assert cache.lookup("A", at(59)) == ACCEPTED
    assert cache.lookup("A", at(60)) is None
    assert "A" not in cache


def test_clear_cache() -> None:
    cache = AuthorizationCache()
    cache.remember("A", ACCEPTED, at(0))
    cache.remember("B", ACCEPTED, at(0))
    cache.clear()
    assert len(cache) == 0 and cache.lookup("B", at(1)) is None


def test_cache_round_trips_through_json_with_its_eviction_order() -> None:
    cache = AuthorizationCache(max_entries=3)
    cache.remember("A", IdTagInfo(AuthStatus.ACCEPTED, at(100), "P"), at(0))
    cache.remember("B", BLOCKED, at(1))
    cache.lookup("A", at(2))  # order is now B, A
    restored = AuthorizationCache.from_dict(json.loads(json.dumps(cache.to_dict())), max_entries=3)
    assert restored.to_dict() == cache.to_dict()
    restored.remember("C", ACCEPTED, at(3))
    restored.remember("D", ACCEPTED, at(4))
    assert "B" not in restored and "A" in restored  # B was the least recently used before the restart
    shrunk = AuthorizationCache.from_dict(cache.to_dict(), max_entries=1)
    assert ("A" in shrunk, "B" in shrunk) == (True, False)  # a smaller cache keeps the most recently used


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"entries": [{"id_tag": "A", "info": {"status": "accepted"}}]},
        {"entries": [{"id_tag": "A", "info": {"status": "accepted"}, "received_at": None}]},
        {"entries": [{"id_tag": "A", "info": {"status": "accepted"}, "received_at": "2026-03-01T08:00:00"}]},
        {"entries": [{"id_tag": "A", "info": {"status": "maybe"}, "received_at": "2026-03-01T08:00:00Z"}]},
    ],
)
def test_unreadable_stored_caches_raise_one_error(data: dict[str, object]) -> None:
    with pytest.raises(UnreadableState):
        AuthorizationCache.from_dict(data)
