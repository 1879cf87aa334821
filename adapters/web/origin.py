"""Same-origin checks for requests that change something (the status page's commands).

A browser attaches the page's Basic credentials to any request for that origin, whichever site
made it, so a command must come from the status page itself:

* ``Host`` must be a name this gateway answers to: an IP address (a browser that went to an IP
  address is on that address's origin), ``localhost``, this machine's host name (and its
  ``.local`` mDNS name), the address it listens on, or a name the caller allows. A web site whose
  DNS name was pointed at the gateway (DNS rebinding) sends its own name and is refused.
* ``Origin``, when sent, must be that same host and port (any scheme: a TLS proxy in front makes
  it https). ``null`` (a sandboxed frame, a file) is refused.
* ``Sec-Fetch-Site``, when sent, must be ``same-origin`` or ``none`` (typed by the user).

A request with no ``Origin`` is let through: browsers send ``Origin`` with every POST, so such a
request does not come from a web page but from a script or ``curl`` holding the password. The
commands also take only ``application/json``, which another site cannot send without a CORS
preflight that the gateway never grants.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_")


class SameOrigin:
    """Decides whether a state-changing request comes from the status page's own origin."""

    def __init__(self, listen_host: str, allowed_hosts: Iterable[str] = ()) -> None:
        """``listen_host``: where the page listens (``0.0.0.0`` adds nothing: any IP is allowed);
        ``allowed_hosts``: further DNS names it is reached by (a reverse proxy's)."""
        machine = socket.gethostname().lower()
        names = {"localhost", machine, f"{machine}.local", listen_host, *allowed_hosts}
        self.names = frozenset(name.lower().rstrip(".") for name in names if name)

    def refusal(self, headers: Mapping[str, str]) -> str | None:
        """Why the request must be refused (one line for the answer and the log), or None."""
        host = headers.get("Host", "")
        parsed = host_and_port(host)
        if parsed is None:
            return f"the Host header {_shown(host)} is not an address"
        name, port = parsed
        if not (_is_ip(name) or name in self.names):
            return f"Host {_shown(host)} is not a name of this gateway"
        fetch_site = headers.get("Sec-Fetch-Site")
        if fetch_site is not None and fetch_site not in ("same-origin", "none"):
            return f"the browser says the request comes from another site (Sec-Fetch-Site: {_shown(fetch_site)})"
        origin = headers.get("Origin")
        if origin is None:
            return None
        try:
            parts = urlsplit(origin)
            origin_port = parts.port
        except ValueError:
            return f"Origin {_shown(origin)} is not an origin"
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            return f"Origin {_shown(origin)} is not this status page"
        expected_port = port if port is not None else _DEFAULT_PORTS[scheme]
        if (parts.hostname.rstrip("."), origin_port or _DEFAULT_PORTS[scheme]) != (name, expected_port):
            return f"Origin {_shown(origin)} is another site"
        return None


def host_and_port(value: str) -> tuple[str, int | None] | None:
    """``Host`` split into a lower-case name (IPv6 without brackets) and its port, or None if it
    is no host name at all."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        name, rest = value[1:end], value[end + 1 :]
        if end < 0 or not _is_ip(name):
            return None
    else:
        name, colon, port_text = value.partition(":")
        rest = colon + port_text
        if not name or not set(name) <= _NAME_CHARS:
            return None
    if not rest:
        return name.rstrip("."), None
    port_text = rest[1:]
    if not rest.startswith(":") or not (port_text.isascii() and port_text.isdigit()) or len(port_text) > 5:
        return None
    port = int(port_text)
    return (name.rstrip("."), port) if 0 < port < 65536 else None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _shown(value: str) -> str:
    """A header value as it may go into an answer and a log line: printable, short, quoted."""
    text = "".join(c if c.isprintable() else "?" for c in value[:80])
    return repr(text + ("..." if len(value) > 80 else ""))
