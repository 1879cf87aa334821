"""Which commands count as coming from the status page itself (Host, Origin, Sec-Fetch-Site)."""

from __future__ import annotations

import socket

import pytest

from adapters.web.origin import SameOrigin, host_and_port

CHECK = SameOrigin("0.0.0.0", allowed_hosts=["gw.example.net"])


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "127.0.0.1:8080"},  # curl or a script: no Origin (browsers send one with every POST)
        {"Host": "127.0.0.1:8080", "Origin": "http://127.0.0.1:8080", "Sec-Fetch-Site": "same-origin"},
        {"Host": "192.168.1.10:8080", "Origin": "http://192.168.1.10:8080"},
        {"Host": "[::1]:8080", "Origin": "http://[::1]:8080"},
        {"Host": "LOCALHOST:8080", "Origin": "http://localhost:8080"},
        {"Host": "gw.example.net", "Origin": "https://gw.example.net"},  # behind a TLS proxy that keeps Host
        {"Host": "gw.example.net:443", "Origin": "https://gw.example.net"},
        {"Host": f"{socket.gethostname()}.local:8080", "Origin": f"http://{socket.gethostname()}.local:8080"},
        {"Host": "127.0.0.1:8080", "Sec-Fetch-Site": "none"},  # typed into the address bar
    ],
)
def test_the_status_page_itself_may_send_commands(headers: dict[str, str]) -> None:
    assert CHECK.refusal(headers) is None


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({"Host": "127.0.0.1:8080", "Origin": "http://evil.example"}, "Origin 'http://evil.example' is another site"),
        ({"Host": "127.0.0.1:8080", "Origin": "http://127.0.0.1:9999"}, "is another site"),  # another port
        ({"Host": "127.0.0.1:8080", "Origin": "null"}, "Origin 'null' is not this status page"),
        ({"Host": "127.0.0.1:8080", "Origin": "http://127.0.0.1:99999"}, "is not an origin"),
        ({"Host": "127.0.0.1:8080", "Sec-Fetch-Site": "cross-site"}, "comes from another site"),
        ({"Host": "127.0.0.1:8080", "Sec-Fetch-Site": "same-site"}, "comes from another site"),
        # DNS rebinding: a site's name pointed at the gateway; Origin and Host agree, the name is foreign
        ({"Host": "evil.example:8080", "Origin": "http://evil.example:8080"}, "not a name of this gateway"),
        ({}, "the Host header '' is not an address"),
        ({"Host": "a b"}, "is not an address"),
        ({"Host": "127.0.0.1:80x"}, "is not an address"),
        ({"Host": "x\r\n" + "y" * 200}, "is not an address"),
    ],
)
def test_other_sites_and_foreign_hosts_are_refused_with_a_reason(headers: dict[str, str], why: str) -> None:
    refusal = CHECK.refusal(headers)
    assert refusal is not None and why in refusal
    assert "\n" not in refusal and "\r" not in refusal and len(refusal) < 200  # one short line for the log


def test_host_header_parsing() -> None:
    assert host_and_port("Example.COM.:8080") == ("example.com", 8080)
    assert host_and_port("[2001:db8::1]") == ("2001:db8::1", None)
    assert host_and_port("[2001:db8::1") is None
    assert host_and_port("[nope]:80") is None
    assert host_and_port("h:0") is None and host_and_port("h:123456") is None and host_and_port("h:١٢") is None
