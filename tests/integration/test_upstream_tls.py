"""OCPP security profiles 2 and 3 upstream, for both versions: the CSMS serves ``wss://`` with a
certificate from a CA made in the test; the gateway checks it against ``[upstream.tls] ca_file``
(profile 2) and, where the CSMS asks for one, shows its own client certificate (profile 3). A
CSMS whose certificate another CA signed is refused, and the outage says why."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from adapters.demo_csms.csms import DemoCsms
from adapters.demo_csms.csms201 import DemoCsms201
from adapters.ocpp201_upstream.station import ChargingStation201
from adapters.ocpp_upstream.charge_point import VirtualChargePoint
from gateway.config import UpstreamConfig
from gateway.domain.model import Connector
from gateway.services.site import Site
from tests.fixtures.memory_outbox import memory_outbox
from tests.fixtures.pki import Pki, make_pki
from tests.fixtures.status_site import until

VERSIONS = {"1.6": (DemoCsms, VirtualChargePoint), "2.0.1": (DemoCsms201, ChargingStation201)}


def server_context(pki: Pki, *, client_certificates: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    if client_certificates:  # profile 3: the CSMS wants to know the gateway by its certificate
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(pki.ca_file)
    return context


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture(params=sorted(VERSIONS))
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def linked(version: str, csms_tls: ssl.SSLContext, tls: dict[str, Any]) -> AsyncIterator[tuple[DemoCsms, Site]]:
    csms_class, upstream_class = VERSIONS[version]
    csms = csms_class("127.0.0.1", 0, tls=csms_tls)
    await csms.start()
    site = Site([Connector(1, "left")], [])
    settings = UpstreamConfig.model_validate(
        {
            "url": f"wss://127.0.0.1:{csms.port}/ocpp",
            "charge_point_id": "GW-TLS",
            "ocpp_version": version,
            "reconnect_max_s": 0.2,
            "tls": tls,
        }
    )
    task = asyncio.create_task(upstream_class(site, settings, memory_outbox()).run())
    try:
        yield csms, site
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await csms.stop()


async def test_profile_2_the_csms_certificate_is_checked_against_the_ca(version: str, pki: Pki) -> None:
    profile_2 = server_context(pki, client_certificates=False)
    async with linked(version, profile_2, {"ca_file": str(pki.ca_file)}) as (csms, site):
        assert csms.url.startswith("wss://")
        await csms.wait_for("BootNotification", timeout=10)
        await until(site, lambda site=site: site.upstream.connected)


async def test_a_csms_certificate_from_another_ca_is_refused_and_said(version: str, pki: Pki, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other")
    elsewhere = server_context(other, client_certificates=False)
    async with linked(version, elsewhere, {"ca_file": str(pki.ca_file)}) as (csms, site):
        await until(site, lambda site=site: "TLS handshake failed" in (site.upstream.reason or ""), timeout_s=10)
        # (OpenSSL's own words: both CAs are called test-ca, the signature is what differs)
        assert "TLS handshake failed: certificate signature failure" in (site.upstream.reason or "")
        assert "(check upstream.tls)" in (site.upstream.reason or "")
        assert csms.connections == 0 and not site.upstream.connected


async def test_profile_3_the_gateway_shows_its_client_certificate(version: str, pki: Pki) -> None:
    tls = {"ca_file": str(pki.ca_file), "cert_file": str(pki.client_cert), "key_file": str(pki.client_key)}
    async with linked(version, server_context(pki, client_certificates=True), tls) as (csms, site):
        await csms.wait_for("BootNotification", timeout=10)
        await until(site, lambda site=site: site.upstream.connected)


async def test_profile_3_without_a_client_certificate_gets_no_link(version: str, pki: Pki) -> None:
    profile_3 = server_context(pki, client_certificates=True)
    async with linked(version, profile_3, {"ca_file": str(pki.ca_file)}) as (csms, site):
        await until(
            site, lambda site=site: site.upstream.reason is not None and not site.upstream.connected, timeout_s=10
        )
        await asyncio.sleep(0.5)  # (a few attempts: none may get through)
        assert csms.messages("BootNotification") == []


@pytest.mark.parametrize(
    ("tls", "url", "expected"),
    [
        ({"ca_file": "missing-ca.pem"}, "wss://csms.example/ocpp", "no such file: 'missing-ca.pem'"),
        ({}, "ws://csms.example/ocpp", "[upstream.tls] needs a wss:// url"),
        ({"key_file": "PKI/client.key"}, "wss://csms.example/ocpp", "a client key needs its certificate"),
        ({"cert_file": "PKI/client.crt", "key_file": "PKI/server.key"}, "wss://csms.example/ocpp", "cannot load"),
    ],
)
def test_bad_tls_settings_are_named(pki: Pki, tls: dict[str, str], url: str, expected: str) -> None:
    """check-config names the key: a missing file, TLS on ws://, a key without its certificate,
    a certificate with someone else's key."""
    folder = str(pki.ca_file.parent)
    tls = {key: value.replace("PKI", folder) for key, value in tls.items()}
    with pytest.raises(ValueError, match=r"upstream|tls|file|certificate|load") as caught:
        UpstreamConfig.model_validate({"url": url, "charge_point_id": "GW", "tls": tls})
    assert expected in str(caught.value)
