"""SecurityEventNotification against the real 2.0.1 CSMS (schemas on both ways): the station's own
events, the link's (a CSMS that refuses the password, a certificate of another CA), failed logins
at the status page and the local OCPP server (rate-limited), and the queue of an outage."""

from __future__ import annotations

import asyncio
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from ocpp.v201 import call
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from adapters.demo_csms.csms201 import DemoCsms201
from adapters.ocpp201_upstream.station import CLEAN_SHUTDOWN
from adapters.ocpp_local.server import LocalOcppServer
from adapters.storage.settings import JsonSettingsStore
from adapters.web.server import StatusServer
from gateway.config import OcppChargerConfig, OcppServerConfig, StatusPageConfig
from gateway.domain.model import Connector
from gateway.domain.security import SecurityEventKind
from gateway.services.site import Site
from gateway.services.site_picture import SiteLabels
from gateway.services.telemetry import Telemetry
from tests.fixtures.net import free_port
from tests.fixtures.pki import make_pki
from tests.fixtures.status_site import authorization, until
from tests.integration import test_ocpp201_upstream as upstream_tests
from tests.integration.test_ocpp201_upstream import STATION, start_station

# the upstream tests' fixtures: a DemoCsms201 on loopback, the tasks started, the short first-status grace
csms, running, short_status_grace = upstream_tests.csms, upstream_tests.running, upstream_tests.short_status_grace

PASSWORD = "s3cret-pass-201-long"
NOTIFICATION = "SecurityEventNotification"


def make_site(settings_path: Path | None = None) -> Site:
    site = Site([Connector(1, "left"), Connector(2, "right")], [])
    if settings_path is not None:
        site.settings = JsonSettingsStore(settings_path)
    return site


def types(csms: DemoCsms201) -> list[str]:
    return [p["type"] for p in csms.messages(NOTIFICATION)]


def order(csms: DemoCsms201) -> list[str]:
    """What the CSMS received, BootNotifications and security events by their reason and type."""
    return [
        str(r.payload.get("reason") if r.action == "BootNotification" else r.payload["type"])
        for r in csms.received
        if r.action in ("BootNotification", NOTIFICATION)
    ]


def stamp(payload: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(payload["timestamp"].replace("Z", "+00:00"))


async def test_the_boot_sends_startup_and_a_reset_sends_reset_or_reboot_after_the_new_boot(
    csms: DemoCsms201, running: list
) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    station = start_station(make_site(), csms.port, running)
    startup = await csms.wait_for(NOTIFICATION, lambda p: p["type"] == "StartupOfTheDevice")
    assert before <= stamp(startup) <= datetime.now(UTC)
    assert startup["techInfo"] == "the gateway started"
    assert order(csms) == ["PowerUp", "StartupOfTheDevice"]  # after the boot, never before
    await station.accepted.wait()
    assert (await csms.call(STATION, call.Reset(type="Immediate"))).status == "Accepted"
    reset = await csms.wait_for(NOTIFICATION, lambda p: p["type"] == "ResetOrReboot")
    assert order(csms) == ["PowerUp", "StartupOfTheDevice", "RemoteReset", "ResetOrReboot"]
    assert "Immediate reset of the station asked by the CSMS" in reset["techInfo"]


async def test_a_restart_after_a_kill_sends_reset_or_reboot(tmp_path: Path, csms: DemoCsms201, running: list) -> None:
    JsonSettingsStore(tmp_path / "settings.json").save(CLEAN_SHUTDOWN, False)  # as a kill -9 leaves it
    start_station(make_site(tmp_path / "settings.json"), csms.port, running)
    await csms.wait_for(NOTIFICATION, lambda p: p["type"] == "StartupOfTheDevice")
    assert order(csms) == ["Unknown", "ResetOrReboot", "StartupOfTheDevice"]
    assert "ended unexpectedly" in csms.messages(NOTIFICATION)[0]["techInfo"]


async def test_a_csms_that_refuses_the_password_hears_of_it_once_the_link_is_up(running: list) -> None:
    csms = DemoCsms201("127.0.0.1", 0, password="not-what-the-gateway-has")
    await csms.start()
    try:
        site = make_site()
        start_station(site, csms.port, running, password=PASSWORD)
        await until(site, lambda: "HTTP 401" in (site.upstream.reason or ""))
        refused_at = datetime.now(UTC)
        await asyncio.sleep(0.5)  # several refused attempts: still one event
        csms.password = PASSWORD
        failed = await csms.wait_for(NOTIFICATION, lambda p: p["type"] == "FailedToAuthenticateAtCsms")
        assert stamp(failed) <= refused_at  # when it happened, not when it was sent
        assert failed["techInfo"] == "the CSMS answered HTTP 401"
        assert types(csms).count("FailedToAuthenticateAtCsms") == 1
        assert PASSWORD not in str(csms.messages(NOTIFICATION))
    finally:
        await csms.stop()


async def test_a_csms_certificate_of_another_ca_is_reported_once_trusted(tmp_path: Path, running: list) -> None:
    pki, other = make_pki(tmp_path / "pki"), make_pki(tmp_path / "other")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(other.server_cert, other.server_key)  # a CA the gateway does not trust
    csms = DemoCsms201("127.0.0.1", 0, tls=tls)
    await csms.start()
    try:
        site = make_site()
        url = f"wss://127.0.0.1:{csms.port}/ocpp"
        start_station(site, csms.port, running, url=url, tls={"ca_file": str(pki.ca_file)})
        await until(site, lambda: "TLS handshake failed" in (site.upstream.reason or ""))
        tls.load_cert_chain(pki.server_cert, pki.server_key)  # the CSMS gets a certificate of the right CA
        invalid = await csms.wait_for(NOTIFICATION, lambda p: p["type"] == "InvalidCsmsCertificate", timeout=10)
        assert invalid["techInfo"].startswith("the CSMS's certificate: certificate signature failure")
    finally:
        await csms.stop()


async def test_wrong_status_page_passwords_are_one_event_a_minute_with_a_count(
    csms: DemoCsms201, running: list
) -> None:
    site = make_site()
    start_station(site, csms.port, running)
    await csms.wait_for(NOTIFICATION, lambda p: p["type"] == "StartupOfTheDevice")
    settings = StatusPageConfig(port=free_port(), username="admin", password=PASSWORD)
    page = StatusServer(site, Telemetry(["left", "right"]), settings, SiteLabels("sec"))
    await page.start()
    try:
        async with aiohttp.ClientSession() as http:

            async def get(headers: dict[str, str]) -> int:
                async with http.get(page.url + "/api/status", headers=headers) as answer:
                    return answer.status

            assert await get({}) == 401  # no credentials (a browser's first request): no event
            wrong = authorization(("admin", "guess-1"))
            assert [await get(wrong) for _ in range(5)] == [401] * 5
            assert await get(authorization(("admin", PASSWORD))) == 200
            failed = await csms.wait_for(NOTIFICATION, lambda p: p["type"] == "MaintenanceLoginFailed")
            assert failed["techInfo"] == "status page: wrong user name or password from 127.0.0.1"
            site.security.limit.interval_s = 0.3  # (the minute, shortened)
            await asyncio.sleep(0.35)
            assert await get(wrong) == 401
            await csms.wait_for(NOTIFICATION, lambda _: types(csms).count("MaintenanceLoginFailed") == 2)
        second = [p for p in csms.messages(NOTIFICATION) if p["type"] == "MaintenanceLoginFailed"][1]
        assert second["techInfo"].endswith("(5 times since the last report)")  # itself and the 4 held back
        assert "guess-1" not in str(csms.messages(NOTIFICATION))
    finally:
        await page.stop()


async def test_wrong_passwords_at_the_local_ocpp_server_are_rate_limited(csms: DemoCsms201, running: list) -> None:
    site = make_site()
    start_station(site, csms.port, running)
    await csms.wait_for(NOTIFICATION, lambda p: p["type"] == "StartupOfTheDevice")
    chargers = [OcppChargerConfig(identity="CP-A", password=PASSWORD, connectors=[1])]
    server = LocalOcppServer(OcppServerConfig(port=free_port()), chargers, None, site=site)
    await server.start()
    try:
        wrong = authorization(("CP-A", "guess-2"))
        for _ in range(4):
            with pytest.raises(InvalidStatus):
                async with connect(
                    f"{server.url}/CP-A", subprotocols=[Subprotocol("ocpp1.6")], additional_headers=wrong
                ):
                    pass
        failed = await csms.wait_for(NOTIFICATION, lambda p: p["type"] == "MaintenanceLoginFailed")
        assert failed["techInfo"] == "local OCPP server: Basic auth with a wrong password for 'CP-A' from 127.0.0.1"
        await asyncio.sleep(0.3)
        assert types(csms).count("MaintenanceLoginFailed") == 1
        assert "guess-2" not in str(csms.messages(NOTIFICATION))
    finally:
        await server.stop()


async def test_events_of_an_outage_wait_and_go_in_order_with_their_times(running: list) -> None:
    port = free_port()
    site = make_site()
    station = start_station(site, port, running)
    await until(site, lambda: "unreachable" in (site.upstream.reason or ""))
    site.security.report(SecurityEventKind.STORAGE_FULL, "outbox: cannot write to disk", "outbox")
    site.security.report(SecurityEventKind.INVALID_MESSAGES, "a frame from the CSMS", "csms")
    site.security.report(SecurityEventKind.SECURITY_SETTINGS_CHANGED, "changed: AuthCtrlr.Enabled", "x")
    await until(site, lambda: len(station.security.queued()) == 4)  # (the Startup of the boot, and these)
    queued = [event.at for event in station.security.queued()]
    csms = DemoCsms201("127.0.0.1", port)
    await csms.start()
    try:
        await csms.wait_for(NOTIFICATION, lambda _: len(types(csms)) == 4, timeout=10)
        assert types(csms) == [
            "StartupOfTheDevice",
            "MemoryExhaustion",
            "InvalidMessages",
            "ReconfigurationOfSecurityParameters",
        ]
        millis = [at.replace(microsecond=at.microsecond // 1000 * 1000) for at in queued]
        assert [stamp(p) for p in csms.messages(NOTIFICATION)] == millis  # when they happened
        assert order(csms)[0] == "PowerUp"  # nothing before the boot
    finally:
        await csms.stop()


async def test_a_security_setting_changed_and_unreadable_frames_are_reported(csms: DemoCsms201, running: list) -> None:
    station = start_station(make_site(), csms.port, running)
    await station.accepted.wait()
    variable = {"component": {"name": "AuthCtrlr"}, "variable": {"name": "LocalAuthorizeOffline"}}
    answer = await csms.call(STATION, call.SetVariables(set_variable_data=[{**variable, "attribute_value": "false"}]))
    assert answer.set_variable_result[0]["attribute_status"] == "Accepted"
    changed = await csms.wait_for(NOTIFICATION, lambda p: p["type"] == "ReconfigurationOfSecurityParameters")
    assert changed["techInfo"] == "changed: AuthCtrlr.LocalAuthorizeOffline"  # the name, never the value
    interval = {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}
    await csms.call(STATION, call.SetVariables(set_variable_data=[{**interval, "attribute_value": "120"}]))
    session = csms.sessions[STATION]
    for _ in range(5):
        await session._connection.send("not json at all")
    invalid = await csms.wait_for(NOTIFICATION, lambda p: p["type"] == "InvalidMessages")
    assert invalid["techInfo"] == "a frame from the CSMS: FormatViolationError: Message is not valid JSON"
    answer = await csms.call(STATION, call.TriggerMessage(requested_message="Heartbeat"))
    assert answer.status == "Accepted"  # the link lives; and the flood made one event
    assert types(csms).count("InvalidMessages") == 1
    assert types(csms).count("ReconfigurationOfSecurityParameters") == 1  # not for the heartbeat interval
