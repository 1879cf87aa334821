"""The status page against hostile or broken input, on the real server over loopback: a short
answer with the right status and every security header, one log line, never a traceback.

A Site fed by hand is enough here (what the page shows is tested with a whole gateway in
test_status_page.py); the server, its sockets and aiohttp's parser are the real ones.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import pytest

from adapters.web.hardened import SECURITY_HEADERS
from adapters.web.server import StatusServer
from gateway.config import StatusPageConfig
from gateway.domain.model import ChargerSnapshot, Connector, Reading, VehicleState
from gateway.services.site import Site
from gateway.services.site_picture import SiteLabels
from gateway.services.telemetry import Telemetry
from tests.fixtures.net import free_port
from tests.fixtures.status_site import PASSWORD, USER, authorization

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
AUTH = authorization((USER, PASSWORD))
JSON = {**AUTH, "Content-Type": "application/json"}


@pytest.fixture
async def server(caplog: pytest.LogCaptureFixture) -> AsyncIterator[StatusServer]:
    caplog.set_level(logging.DEBUG)
    site = Site([Connector(1, "wb-1"), Connector(2, "wb-2")], [])
    telemetry = Telemetry(["wb-1", "wb-2"])
    for device in ("wb-1", "wb-2"):
        site.apply(ChargerSnapshot(device, 1, Reading(T0, energy_wh=1_000), VehicleState.A))
        telemetry.poll_finished(device, 0.01, ok=True)
    settings = StatusPageConfig(port=free_port(), username=USER, password=PASSWORD, commands=True)
    page = StatusServer(site, telemetry, settings, SiteLabels("hard"))
    await page.start()
    try:
        yield page
    finally:
        await page.stop()


async def post(page: StatusServer, path: str, body: str | bytes, **headers: str) -> tuple[int, dict[str, str], str]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(page.url + path, data=body, headers={**JSON, **headers}) as answer,
    ):
        return answer.status, dict(answer.headers), await answer.text()


def assert_secured(headers: dict[str, str]) -> None:
    """Every security header, and a Server header that names no Python or aiohttp version."""
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name) == value, (name, headers)
    assert headers["Server"] == "ocpp-gateway"


def no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info or r.exc_text or "Traceback" in r.getMessage()]


async def test_a_connector_number_of_5000_digits_is_404_not_500(
    server: StatusServer, caplog: pytest.LogCaptureFixture
) -> None:
    for raw in ("1" * 5000, "٣", "+1", "1.0", "0"):  # Python's int() takes the first three; none is a connector
        status, headers, text = await post(server, f"/api/connectors/{raw}/stop", "{}")
        assert status == 404, raw
        assert text.startswith("404: no connector ") and len(text) < 100
        assert_secured(headers)
    no_traceback(caplog)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_deeply_nested_or_oversized_body_is_400_or_413(
    server: StatusServer, caplog: pytest.LogCaptureFixture
) -> None:
    path = "/api/connectors/1/availability"
    status, headers, text = await post(server, path, "[" * 2000 + "]" * 2000)  # 4000 bytes: past Python's recursion
    assert (status, text) == (400, "400: the body is not JSON (or nested too deeply)\n")
    assert_secured(headers)
    status, _, text = await post(server, path, b'{"available": "\xff"}')
    assert (status, text) == (400, "400: the body is not JSON (or nested too deeply)\n")
    status, headers, text = await post(server, path, '{"available": false, "x": "' + "a" * 10_000 + '"}')
    assert (status, text) == (413, "413: a command's body is at most 4096 bytes\n")
    assert_secured(headers)

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while reading
        for _ in range(10):
            yield b" " * 1000

    async with aiohttp.ClientSession() as http, http.post(server.url + path, data=chunked(), headers=JSON) as answer:
        assert answer.status == 413
    assert server.site.connectors[1].available  # none of it changed anything
    no_traceback(caplog)


async def test_a_command_from_another_site_is_refused_and_one_from_the_page_is_taken(
    server: StatusServer, caplog: pytest.LogCaptureFixture
) -> None:
    path, body = "/api/connectors/1/availability", '{"available": false}'
    status, headers, text = await post(server, path, body, Origin="http://evil.example")
    assert status == 403 and "Origin 'http://evil.example' is another site" in text
    assert_secured(headers)
    # DNS rebinding: the attacker's name resolves to the gateway; Origin and Host agree
    host = f"evil.example:{server.port}"
    status, _, text = await post(server, path, body, Origin=f"http://{host}", Host=host)
    assert status == 403 and "is not a name of this gateway" in text
    status, _, _ = await post(server, path, body, **{"Sec-Fetch-Site": "cross-site"})
    assert status == 403
    assert server.site.connectors[1].available  # nothing changed
    refused = [r.getMessage() for r in caplog.records if "command refused" in r.getMessage()]
    assert len(refused) == 3 and all(r.levelno == logging.WARNING for r in caplog.records if "refused" in r.msg)

    status, _, _ = await post(server, path, body, Origin=server.url, **{"Sec-Fetch-Site": "same-origin"})
    assert status == 200 and not server.site.connectors[1].available
    status, _, _ = await post(server, path, '{"available": true}')  # curl: no Origin at all
    assert status == 200 and server.site.connectors[1].available


async def test_aiohttps_own_400_for_oversized_headers_carries_the_security_headers(
    server: StatusServer, caplog: pytest.LogCaptureFixture
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, body = raw.decode("latin-1").partition("\r\n\r\n")
    status_line, *lines = head.split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    assert status_line.endswith("400 Bad Request")
    assert_secured(headers)
    assert body == "400: this request could not be read (malformed, or its headers are too large)\n"
    no_traceback(caplog)
    logged = [r.getMessage() for r in caplog.records if "Error handling request" in r.getMessage()]
    assert len(logged) == 1 and "\n" not in logged[0] and len(logged[0]) < 250


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/", AUTH, 200),
        ("GET", "/api/status", {}, 401),
        ("GET", "/nope", AUTH, 404),
        ("DELETE", "/api/status", AUTH, 405),
        ("GET", "/api/connectors/1/stop", AUTH, 405),
        ("GET", "/healthz", {}, 200),
        ("GET", "/readyz", {}, 503),  # no CSMS, no broker here
        ("HEAD", "/metrics", AUTH, 200),
        ("POST", "/api/connectors/1/stop", {**AUTH, "Content-Type": "text/plain"}, 415),
    ],
)
async def test_every_answer_has_the_security_headers_and_no_version(
    server: StatusServer, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    async with aiohttp.ClientSession() as http, http.request(method, server.url + path, headers=headers) as answer:
        assert answer.status == status
        assert_secured(dict(answer.headers))
        if status == 405:
            assert answer.headers["Allow"] in ("GET, HEAD", "POST")


async def test_a_failure_of_the_gateways_own_is_500_with_one_log_line(
    server: StatusServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(connector_id: int, **_: object) -> bool:  # (source=...)
        raise RuntimeError(f"connector {connector_id}\nsecond line")

    monkeypatch.setattr(server.site.commands, "stop_session", broken)
    status, headers, text = await post(server, "/api/connectors/1/stop", "{}")
    assert (status, text) == (500, "500: the gateway could not answer this; its log says why\n")
    assert_secured(headers)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and not errors[0].exc_info  # the traceback only at DEBUG, for a developer
    assert (
        errors[0].getMessage()
        == "status page: POST /api/connectors/1/stop failed: RuntimeError: connector 1 second line"
    )


async def test_a_body_whose_encoding_is_broken_is_400_not_our_bug(
    server: StatusServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Found in review: Content-Encoding gzip over bytes that are not gzip gave 500 and two ERROR lines."""
    status, headers, text = await post(
        server, "/api/connectors/1/availability", b"abcde", **{"Content-Encoding": "gzip"}
    )
    assert (status, text) == (400, "400: the body cannot be read (broken encoding or chunks)\n")
    assert_secured(headers)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert server.site.connectors[1].available
