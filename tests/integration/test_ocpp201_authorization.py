"""Cards at the 2.0.1 station: Authorize, the local list, the cache, the offline rules, across a restart.

Against the real 2.0.1 CSMS (schemas validated both ways) where the CSMS takes part."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ocpp.v201 import call

from adapters.demo_csms.csms201 import DemoCsms201
from adapters.ocpp201_upstream.authorization import (
    AUTH_STATUS,
    AUTH_VARIABLES,
    CACHE,
    LOCAL_LIST,
    Authorization201,
    auth_status,
    id_token_info,
    list_entries,
)
from adapters.storage.settings import JsonSettingsStore
from gateway.domain.authorizer import AuthSettings
from gateway.domain.model import ChargerSnapshot, Reading, VehicleState
from gateway.domain.transactions import AuthPolicy, AuthStatus
from gateway.services.sessions import ConnectorPolicy
from gateway.services.site import Site
from tests.fixtures.net import free_port
from tests.fixtures.status_site import until
from tests.integration.test_ocpp201_events import linked
from tests.integration.test_ocpp201_upstream import (
    STATION,
    at_minute,
    make_site,
    short_status_grace,  # noqa: F401 (autouse fixture)
    start_station,
)

CARDS = {1: ConnectorPolicy(AuthPolicy.LOCAL_LIST), 2: ConnectorPolicy(AuthPolicy.LOCAL_LIST)}
LISTED, BLOCKED, OTHER = "CARD-LISTED-0001", "CARD-BLOCKED-002", "CARD-UNKNOWN-003"


def token(tag: str) -> dict[str, str]:
    return {"id_token": tag, "type": "ISO14443"}


def entry(tag: str, status: str | None = "Accepted", **info: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"id_token": token(tag)}
    if status is not None:
        item["id_token_info"] = {"status": status, **info}
    return item


def card_site(path: Path | None = None) -> Site:
    site = make_site(CARDS)
    if path is not None:
        site.settings = JsonSettingsStore(path)
    site.apply(ChargerSnapshot("left", 1, Reading(at_minute(0), energy_wh=100), VehicleState.B))
    return site


def show(site: Site, tag: str, minute: int = 1) -> None:
    """A car plugged in at EVSE 1 and ``tag`` read by the charger."""
    reading = Reading(at_minute(minute), energy_wh=100)
    site.apply(ChargerSnapshot("left", 1, reading, VehicleState.B, id_tag=tag))


def charging(site: Site) -> bool:
    return site.connectors[1].session_active


async def test_a_full_list_a_differential_update_and_the_version() -> None:
    site = card_site()
    async with linked(site) as (csms, station):
        await csms.wait_for("StatusNotification")
        full = call.SendLocalList(version_number=3, update_type="Full", local_authorization_list=[
            entry(LISTED), entry(BLOCKED, "Blocked"),
        ])  # fmt: skip
        assert (await csms.call(STATION, full)).status == "Accepted"
        assert (await csms.call(STATION, call.GetLocalListVersion())).version_number == 3
        stale = call.SendLocalList(
            version_number=3, update_type="Differential", local_authorization_list=[entry(OTHER)]
        )
        assert (await csms.call(STATION, stale)).status == "VersionMismatch"
        update = call.SendLocalList(
            version_number=4, update_type="Differential", local_authorization_list=[entry(BLOCKED, None), entry(OTHER)]
        )
        assert (await csms.call(STATION, update)).status == "Accepted"
        assert (await csms.call(STATION, call.GetLocalListVersion())).version_number == 4
        entries = station.authorization.authorizer.local_list.entries
        assert sorted(entries) == [LISTED, OTHER]
        damaged = call.SendLocalList(
            version_number=5,
            update_type="Differential",
            local_authorization_list=[entry(BLOCKED, "Accepted", cache_expiry_date_time="not a date")],
        )
        assert (await csms.call(STATION, damaged)).status == "Failed"  # all or nothing
        assert (await csms.call(STATION, call.GetLocalListVersion())).version_number == 4
        emptied = call.SendLocalList(version_number=6, update_type="Full")
        assert (await csms.call(STATION, emptied)).status == "Accepted"
        assert (await csms.call(STATION, call.GetLocalListVersion())).version_number == 0


async def test_offline_the_list_then_the_cache_then_unknown_refused(tmp_path: Path) -> None:
    site = card_site(tmp_path / "settings.json")
    tasks: list[asyncio.Task[None]] = []
    station = start_station(site, free_port(), tasks)  # no CSMS: offline from the start
    try:
        auth = station.authorization
        assert auth.send_local_list(1, "Full", [entry(LISTED), entry(BLOCKED, "Blocked")]) == "Accepted"
        show(site, OTHER, 1)
        station._take_pending()
        assert not charging(site)  # unknown: OfflineTxForUnknownIdEnabled is false
        show(site, BLOCKED, 2)
        station._take_pending()
        assert not charging(site)  # the list refuses
        auth.remember(OTHER, {"status": "Accepted"}, site.clock.now())  # as an earlier answer left it
        show(site, OTHER, 3)
        station._take_pending()
        assert charging(site)  # the cache vouches
    finally:
        tasks[0].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_the_csms_sets_the_offline_rules_through_the_device_model() -> None:
    """SetVariables AuthCtrlr.OfflineTxForUnknownIdEnabled = true: an unknown card starts offline."""
    site = card_site()
    async with linked(site) as (csms, station):
        await csms.wait_for("StatusNotification")
        allow = {
            "attribute_value": "true",
            "component": {"name": "AuthCtrlr"},
            "variable": {"name": "OfflineTxForUnknownIdEnabled"},
        }
        answer = await csms.call(STATION, call.SetVariables(set_variable_data=[allow]))
        assert answer.set_variable_result[0]["attribute_status"] == "Accepted"
        assert station.authorization.authorizer.settings.allow_offline_tx_for_unknown_id
        listed = call.SendLocalList(version_number=1, update_type="Full", local_authorization_list=[entry(LISTED)])
        assert (await csms.call(STATION, listed)).status == "Accepted"
        entries = {"component": {"name": "LocalAuthListCtrlr"}, "variable": {"name": "Entries"}}
        got = await csms.call(STATION, call.GetVariables(get_variable_data=[entries]))
        assert got.get_variable_result[0]["attribute_value"] == "1"  # the list's live size
    station.accepted.clear()  # the link is gone with the CSMS: what is shown now is decided offline
    show(site, OTHER)
    station._take_pending()
    assert charging(site)


async def test_a_listed_card_starts_offline() -> None:
    site = card_site()
    tasks: list[asyncio.Task[None]] = []
    station = start_station(site, free_port(), tasks)
    try:
        station.authorization.send_local_list(1, "Full", [entry(LISTED)])
        show(site, LISTED)
        station._take_pending()
        assert charging(site)
    finally:
        tasks[0].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_authorize_answers_are_cached_and_kept_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    site = card_site(path)
    async with linked(site) as (csms, station):
        csms.blocked_id_tags.add(BLOCKED)
        await csms.wait_for("StatusNotification")
        show(site, BLOCKED, 1)
        await csms.wait_for("Authorize", lambda p: p["idToken"]["idToken"] == BLOCKED)
        await until(site, lambda: BLOCKED in station.authorization.authorizer.cache)
        assert not charging(site)  # Blocked refuses
        show(site, LISTED, 2)
        started = await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Started")
        assert started["idToken"] == {"idToken": LISTED, "type": "ISO14443"}
        assert charging(site)
        await until(site, lambda: LISTED in station.authorization.authorizer.cache)
    stored = JsonSettingsStore(path)
    assert stored.load(CACHE) is not None
    again = Authorization201(stored)  # a restart
    now = datetime.now(UTC)
    assert again.decide(LISTED, 1, online=False, at=now) is AuthStatus.ACCEPTED
    assert again.decide(BLOCKED, 1, online=False, at=now) is AuthStatus.BLOCKED
    assert again.decide(OTHER, 1, online=False, at=now) is AuthStatus.INVALID
    assert again.decide(LISTED, 1, online=True, at=now) is None  # online: the CSMS is asked


async def test_clear_cache_and_the_list_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    site = card_site(path)
    async with linked(site) as (csms, station):
        await csms.wait_for("StatusNotification")
        station.authorization.remember(OTHER, {"status": "Accepted"}, site.clock.now())
        full = call.SendLocalList(version_number=7, update_type="Full", local_authorization_list=[entry(LISTED)])
        assert (await csms.call(STATION, full)).status == "Accepted"
        assert (await csms.call(STATION, call.ClearCache())).status == "Accepted"
        assert len(station.authorization.authorizer.cache) == 0
    again = Authorization201(JsonSettingsStore(path))
    assert again.list_version == 7 and LISTED in again.authorizer.local_list
    assert len(again.authorizer.cache) == 0
    off = Authorization201(JsonSettingsStore(path), AuthSettings(authorization_cache_enabled=False))
    assert off.clear_cache() == "Rejected"


async def test_a_started_answered_blocked_ends_the_session() -> None:
    site = card_site()
    async with linked(site) as (server, station):
        server.blocked_id_tags.add(LISTED)
        await server.wait_for("StatusNotification")
        station.authorization.authorizer.settings = AuthSettings(local_pre_authorize=True)
        station.authorization.send_local_list(1, "Full", [entry(LISTED)])  # the list says yes, at once
        show(site, LISTED)
        ended = await server.wait_for("TransactionEvent", lambda p: p["eventType"] == "Ended")
        assert ended["transactionInfo"]["stoppedReason"] == "DeAuthorized"
        assert not server.messages("Authorize")  # LocalPreAuthorize: not asked first


async def test_damaged_stored_records_start_empty(tmp_path: Path) -> None:
    store = JsonSettingsStore(tmp_path / "settings.json")
    store.save(LOCAL_LIST, {"version": "x", "entries": [{"id_tag": 5}]})
    store.save(CACHE, {"entries": "nonsense"})
    auth = Authorization201(store)
    assert auth.list_version == 0 and len(auth.authorizer.cache) == 0


def test_status_mapping_and_payloads() -> None:
    assert set(AUTH_STATUS) == {
        "Accepted", "Blocked", "ConcurrentTx", "Expired", "Invalid", "NoCredit",
        "NotAllowedTypeOfEVSE", "NotAtThisLocation", "NotAtThisTime", "Unknown",
    }  # fmt: skip
    assert auth_status("NoCredit") is AuthStatus.INVALID and auth_status("Blocked") is AuthStatus.BLOCKED
    assert auth_status(None) is AuthStatus.INVALID
    info = id_token_info(
        {"status": "Accepted", "cache_expiry_date_time": "2026-12-01T00:00:00Z", "group_id_token": token("GROUP-0001")}
    )
    assert info.expiry_date == datetime(2026, 12, 1, tzinfo=UTC) and info.parent_id_tag == "GROUP-0001"
    assert info.as_of(datetime(2026, 12, 1, tzinfo=UTC) + timedelta(seconds=1)).status is AuthStatus.EXPIRED
    with pytest.raises(ValueError, match=r"localAuthorizationList\[1\]"):
        list_entries([entry(LISTED), {"id_token_info": {"status": "Accepted"}}])
    assert all(hasattr(AuthSettings(), field) for field in AUTH_VARIABLES.values())


async def test_a_cached_card_started_offline_is_ended_and_cached_blocked_when_the_csms_says_so() -> None:
    port = free_port()
    site = card_site()
    tasks: list[asyncio.Task[None]] = []
    station = start_station(site, port, tasks)  # the CSMS is away
    server = DemoCsms201("127.0.0.1", port)
    server.blocked_id_tags.add(OTHER)
    try:
        station.authorization.remember(OTHER, {"status": "Accepted"}, site.clock.now())
        show(site, OTHER)
        station._take_pending()
        assert charging(site)
        await server.start()
        started = await server.wait_for("TransactionEvent", lambda p: p["eventType"] == "Started")
        assert started["offline"] is True
        ended = await server.wait_for("TransactionEvent", lambda p: p["eventType"] == "Ended")
        assert ended["transactionInfo"]["stoppedReason"] == "DeAuthorized"
        cached = station.authorization.authorizer.cache.lookup(OTHER, site.clock.now())
        assert cached is not None and cached.status is AuthStatus.BLOCKED  # the Started answer was kept
    finally:
        tasks[0].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.stop()
