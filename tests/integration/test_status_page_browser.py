"""The status page in a real browser: Debian's headless Chromium, driven by Selenium through
Debian's chromedriver (both installed by .ci/run), reading what a person would see.

Selenium's calls block, so they run in a thread while the gateway serves from the event loop.
``OCPP_GATEWAY_SCREENSHOT=docs/status-page.png`` also saves the phone-sized screenshot there.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from adapters.demo_csms.csms import DemoCsms
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


def _phone(driver: webdriver.Chrome, height: int) -> None:
    """Show pages as a phone of PHONE's width would (Chrome DevTools Protocol)."""
    metrics = {"width": PHONE[0], "height": height, "deviceScaleFactor": 1, "mobile": True}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)


def _full_page_png(driver: webdriver.Chrome) -> bytes:
    """The whole page as PNG at phone width: a screen as tall as the page, then one screenshot."""
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    _phone(driver, height)
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
    if target := os.environ.get("OCPP_GATEWAY_SCREENSHOT"):  # the whole page, at phone width
        png = await asyncio.to_thread(_full_page_png, browser)
        await asyncio.to_thread(Path(target).write_bytes, png)


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
