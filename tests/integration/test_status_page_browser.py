"""The status page in a real browser: Debian's headless Chromium, driven by Selenium through
Debian's chromedriver (both installed by .ci/run), reading what a person would see.

Selenium's calls block, so they run in a thread while the gateway serves from the event loop.
``OCPP_GATEWAY_SCREENSHOT=docs/status-page.png`` also saves screenshots of the page with a day of
history: the whole page at phone width there, and at a desktop's width as ``status-page-history.png``
in the same folder.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from adapters.demo_csms.csms import DemoCsms
from gateway.domain.history import (
    DeliveryState,
    EventKind,
    HistoryEvent,
    HistoryWrite,
    SeriesSample,
    SessionDelivery,
    SessionStarted,
    SessionStopped,
)
from gateway.services.site_picture import REASON_LABELS
from tests.fixtures.mosquitto import MosquittoBroker
from tests.fixtures.status_site import PASSWORD, USER, Running, authorization, running_gateway, until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
PHONE = (412, 915)  # CSS pixels of a common Android phone

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them)",
)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Headless as root in a container, and quiet: this machine has no network beyond loopback.
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    _phone(driver, PHONE[1])  # a window cannot be narrower than 500 px: emulate the phone's screen
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
async def site(tmp_path: Path, csms: DemoCsms, mosquitto: MosquittoBroker) -> AsyncIterator[Running]:
    settings = {"username": USER, "password": PASSWORD, "commands": True}
    async with running_gateway(tmp_path, csms.url, mosquitto, settings) as running:
        gateway, site = running.gateway, running.site
        await until(site, lambda: gateway.telemetry.ready and site.upstream.connected)
        running.right.set("energy_wh", 2_000_000)
        running.right.plug_in()
        await until(site, lambda: site.connectors[2].session_active)
        running.right.start_charging(7_400)
        site.report_battery(2, 64.0, None, None)  # the car's SoC, as a car integration reports it
        running.left.stall()  # the left charger stops answering
        await until(site, lambda: site.device_online("left") is False)
        right = site.connectors[2]
        await until(site, lambda: right.reading is not None and right.reading.power_w == 7_400)
        yield running


def _phone(driver: webdriver.Chrome, height: int, width: int = PHONE[0]) -> None:
    """Show pages as a phone of PHONE's width would (Chrome DevTools Protocol); wider: a desktop."""
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width == PHONE[0]}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)


def _full_page_png(driver: webdriver.Chrome, width: int = PHONE[0]) -> bytes:
    """The whole page as PNG at ``width``: a screen as tall as the page, then one screenshot."""
    _phone(driver, PHONE[1], width)
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    _phone(driver, height, width)
    return base64.b64decode(driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})["data"])


def _authorize(driver: webdriver.Chrome) -> None:
    """Send Basic auth with every request of the page (its fetch() calls too), as a browser that
    was given the password would."""
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": authorization((USER, PASSWORD))})


async def test_the_page_shows_every_connector_and_its_status_as_rendered_text(
    site: Running, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    await asyncio.to_thread(_authorize, browser)
    await asyncio.to_thread(browser.get, site.url + "/")
    text = await asyncio.to_thread(lambda: browser.find_element(By.TAG_NAME, "body").text)

    assert "Garage <Nord>" in text  # the site's name, escaped in HTML, shown as written
    one = await asyncio.to_thread(lambda: browser.find_element(By.ID, "connector-1").text)
    two = await asyncio.to_thread(lambda: browser.find_element(By.ID, "connector-2").text)
    assert one.startswith("1 · left") and "Faulted" in one and "Fault: No communication" in one
    assert two.startswith("2 · right") and "Charging" in two
    assert "7,400 W" in two and "2,000,000 Wh" in two and "64 %" in two
    assert "Stop session" in two  # commands are on, behind the password
    overview = await asyncio.to_thread(lambda: browser.find_element(By.ID, "overview").text)
    assert "CSMS\nconnected · Accepted" in overview and "MQTT\nconnected" in overview
    devices = await asyncio.to_thread(lambda: browser.find_element(By.ID, "devices").text)
    assert "right answering" in devices and "grid answering" in devices and "left not answering" in devices

    # readable on a phone: nothing wider than the screen, no sideways scrolling
    widths = await asyncio.to_thread(
        browser.execute_script, "return [document.documentElement.scrollWidth, window.innerWidth]"
    )
    assert widths[0] <= widths[1], widths
    shot = tmp_path / "status-page.png"
    assert await asyncio.to_thread(browser.save_screenshot, str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_the_stop_button_stops_the_session(site: Running, browser: webdriver.Chrome, csms: DemoCsms) -> None:
    await asyncio.to_thread(_authorize, browser)
    await asyncio.to_thread(browser.get, site.url + "/")

    def click_stop() -> None:
        card = browser.find_element(By.ID, "connector-2")
        next(b for b in card.find_elements(By.TAG_NAME, "button") if b.text == "Stop session").click()

    await asyncio.to_thread(click_stop)
    stopped = await csms.wait_for("StopTransaction", timeout=10)
    assert stopped["reason"] == "Local"
    await until(site.site, lambda: not site.site.connectors[2].session_active)


async def test_without_the_password_the_page_shows_nothing_of_the_site(
    site: Running, browser: webdriver.Chrome
) -> None:
    await asyncio.to_thread(browser.get, site.url + "/")
    source = await asyncio.to_thread(lambda: browser.page_source)
    # Chromium asks for the password (a dialog headless cannot show): the page itself stays empty
    assert "Garage" not in source and "right" not in source and "Charging" not in source
    assert await asyncio.to_thread(lambda: browser.find_elements(By.TAG_NAME, "section")) == []


async def test_the_page_shows_the_site_limit_and_each_connectors_share(
    site: Running, browser: webdriver.Chrome
) -> None:
    gateway_site = site.site
    gateway_site.load.set_site_limit(10.0)  # as <prefix>/site/set/limit would: the keeper shares 10 A
    await until(gateway_site, lambda: gateway_site.load.state is not None and gateway_site.load.state.limit_a == 10.0)
    share = gateway_site.load.share_of(2)
    assert share is not None
    await asyncio.to_thread(_authorize, browser)
    await asyncio.to_thread(browser.get, site.url + "/")
    sharing = await asyncio.to_thread(lambda: browser.find_element(By.ID, "load").text)
    assert "Power sharing" in sharing
    assert "10.0 A per phase · the site limit set over MQTT" in sharing
    assert "Site limit (MQTT)\n10.0 A" in sharing
    assert "L1" in sharing and "L3" in sharing  # the phases, grid against limit
    two = await asyncio.to_thread(lambda: browser.find_element(By.ID, "connector-2").text)
    shown = f"{share.current_a:,.1f} A" if share.current_a else "paused (0 A)"
    assert f"Share\n{shown} · {REASON_LABELS[share.reason]}" in two, two


LOCAL_CARD, KOLKATA = "CARD-0000-4711", "Asia/Kolkata"  # +05:30 all year: a start at :17 UTC shows :47


def _a_day_of_history(now: datetime) -> list[HistoryWrite]:
    """What a day on the page's site might have left: two sessions, a fault, and 24 hours of series
    with the gateway stopped for half an hour."""
    day = now.replace(second=0, microsecond=0) - timedelta(hours=24)
    morning = day.replace(minute=17) + timedelta(hours=2)  # at :17 UTC, :47 in Kolkata
    writes: list[HistoryWrite] = [
        SessionStarted("day-1", 1, "left", LOCAL_CARD, morning, 100_000),
        SessionStopped("day-1", 1, "left", LOCAL_CARD, morning + timedelta(hours=3), 118_500, "ev_disconnected", 11e3),
        SessionDelivery("day-1", DeliveryState.DELIVERED),
        SessionStarted("day-2", 2, "right", "04A1B2C3D4E5F6", day + timedelta(hours=9), 1_990_000),
        SessionStopped("day-2", 2, "right", "04A1B2C3D4E5F6", day + timedelta(hours=11), 2_000_000, "local", 7_400.0),
        HistoryEvent(day + timedelta(hours=6), EventKind.FAULT_RAISED, 1, "left", {"kind": "over_temperature"}),
        HistoryEvent(
            day + timedelta(hours=6, minutes=4),
            EventKind.FAULT_CLEARED,
            1,
            "left",
            {"kind": "over_temperature", "duration_s": 240.0},
        ),
    ]
    for minute in range(24 * 60):
        if 600 <= minute < 630:
            continue  # the gateway was stopped for an update
        at = day + timedelta(minutes=minute)
        one = 11_000.0 if 137 <= minute < 317 else 0.0
        two = 7_400.0 if 540 <= minute < 660 else 0.0
        house = 1_500.0 + 800.0 * ((minute // 45) % 3)
        writes += [
            SeriesSample(at, 0, one + two + house, None, None, 32.0),
            SeriesSample(at, 1, one, None, "charging" if one else "available", 16.0 if one else None),
            SeriesSample(at, 2, two, None, "charging" if two else "available", None),
        ]
    return writes


def _shown(driver: webdriver.Chrome, section: str) -> str:
    return str(driver.find_element(By.ID, section).text)


async def test_the_page_shows_a_day_of_history_in_the_browsers_time_zone_at_phone_width(
    site: Running, browser: webdriver.Chrome
) -> None:
    history = site.gateway.history
    assert history is not None
    await asyncio.to_thread(history.store.write, _a_day_of_history(datetime.now(UTC)))
    await asyncio.to_thread(_authorize, browser)
    await asyncio.to_thread(browser.execute_cdp_cmd, "Emulation.setTimezoneOverride", {"timezoneId": KOLKATA})
    await asyncio.to_thread(browser.get, site.url + "/")

    lines = await asyncio.to_thread(
        lambda: [p.get_attribute("data-line") for p in browser.find_elements(By.CSS_SELECTOR, "#plot svg polyline")]
    )
    # the half hour without samples breaks the chargers' sum, the grid and the limit in two
    assert (lines.count("site"), lines.count("grid"), lines.count("limit")) == (2, 2, 2), lines
    plot = await asyncio.to_thread(_shown, browser, "plot")
    assert "Last 24 hours" in plot and "Grid meter" in plot and "Chargers may draw (A \u00d7 230 V \u00d7 3)" in plot
    size = await asyncio.to_thread(lambda: browser.find_element(By.CSS_SELECTOR, "#plot svg").size)
    assert 300 <= size["width"] <= PHONE[0] and size["height"] > 100  # scaled to the phone, readable
    one = await asyncio.to_thread(_shown, browser, "connector-1")
    assert "peak 11.0 kW" in one
    sparks = await asyncio.to_thread(lambda: browser.find_elements(By.CSS_SELECTOR, "#connector-1 svg polyline"))
    assert len(sparks) >= 2  # its power (broken by the gap) and its share

    sessions = await asyncio.to_thread(_shown, browser, "sessions")
    assert "Recent sessions" in sessions and "****4711" in sessions and "18.50 kWh" in sessions
    assert "3 h 00 min" in sessions and "delivered" in sessions and LOCAL_CARD not in sessions
    row = await asyncio.to_thread(
        lambda: next(r for r in browser.find_elements(By.CSS_SELECTOR, "#sessions-table tr") if "4711" in r.text)
    )
    started = await asyncio.to_thread(lambda: row.find_element(By.TAG_NAME, "time"))
    local = await asyncio.to_thread(lambda: started.text)
    utc = await asyncio.to_thread(started.get_attribute, "title")
    assert ":47" in local and "UTC" not in local, local  # 02:17 UTC in Kolkata
    assert utc.endswith(":17 UTC"), utc  # the UTC time stays at hand
    events = await asyncio.to_thread(_shown, browser, "events")
    assert "Fault on connector 1 (left): Overheating" in events and "lasted: 4 min" in events
    header = await asyncio.to_thread(lambda: browser.find_element(By.TAG_NAME, "header").text)
    assert "ocpp-gateway 0.1.0, up " in header

    widths = await asyncio.to_thread(
        browser.execute_script, "return [document.scrollingElement.scrollWidth, window.innerWidth]"
    )
    assert widths[0] <= widths[1], widths  # no sideways scrolling on the phone
    if target := os.environ.get("OCPP_GATEWAY_SCREENSHOT"):
        phone = await asyncio.to_thread(_full_page_png, browser)
        await asyncio.to_thread(Path(target).write_bytes, phone)
        desktop = await asyncio.to_thread(_full_page_png, browser, 1100)
        await asyncio.to_thread(Path(target).with_name("status-page-history.png").write_bytes, desktop)


async def test_without_script_the_page_shows_the_history_with_utc_times(
    site: Running, browser: webdriver.Chrome
) -> None:
    history = site.gateway.history
    assert history is not None
    await asyncio.to_thread(history.store.write, _a_day_of_history(datetime.now(UTC)))
    await asyncio.to_thread(_authorize, browser)
    await asyncio.to_thread(browser.execute_cdp_cmd, "Emulation.setScriptExecutionDisabled", {"value": True})
    await asyncio.to_thread(browser.get, site.url + "/")
    sessions = await asyncio.to_thread(_shown, browser, "sessions")
    assert ":17 UTC" in sessions and "****4711" in sessions
    polylines = await asyncio.to_thread(lambda: browser.find_elements(By.CSS_SELECTOR, "#plot svg polyline"))
    assert len(polylines) == 6
