"""Who may open a websocket: the identity in the URL, its Basic auth password and the OCPP subprotocol.

Decided on the HTTP request, before the upgrade, so a refused charger gets a plain HTTP status
(404 unknown identity, 401 with ``WWW-Authenticate: Basic`` for missing or wrong credentials,
400 without the ``ocpp1.6`` subprotocol) and never an open socket.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import unquote, urlsplit

from websockets.http11 import Request

from gateway.basic_auth import basic_credentials, same_secret
from gateway.config import OcppChargerConfig

SUBPROTOCOL = "ocpp1.6"
REALM = "ocpp-gateway"


@dataclass(frozen=True)
class Refusal:
    """An HTTP answer instead of the upgrade; ``reason`` is for the log (never holds a password)."""

    status: HTTPStatus
    body: str
    reason: str
    challenge: bool = False  # add WWW-Authenticate: Basic
    login_failed: bool = False  # credentials were given, and they are wrong (a security event)


def identity_in(path: str) -> str:
    """The charger identity: the last segment of the URL path (``/ocpp/CP-1`` and ``/CP-1`` alike)."""
    return unquote(urlsplit(path).path.rstrip("/").rsplit("/", 1)[-1])


def offered_subprotocols(request: Request) -> list[str]:
    return [p.strip() for header in request.headers.get_all("Sec-WebSocket-Protocol") for p in header.split(",")]


class Chargers:
    """The configured chargers by identity; OCPP identities are CiStrings, so case does not count."""

    def __init__(self, chargers: Iterable[OcppChargerConfig]) -> None:
        self._by_key = {charger.identity.casefold(): charger for charger in chargers}

    def find(self, identity: str) -> OcppChargerConfig | None:
        return self._by_key.get(identity.casefold())

    def __iter__(self) -> Iterator[OcppChargerConfig]:
        return iter(self._by_key.values())

    def __len__(self) -> int:
        return len(self._by_key)


def admit(request: Request, chargers: Chargers) -> OcppChargerConfig | Refusal:
    """The charger this request may connect as, or why not (checked in that order: who, password, protocol)."""
    identity = identity_in(request.path)
    charger = chargers.find(identity)
    if charger is None:
        return Refusal(HTTPStatus.NOT_FOUND, "unknown charger identity\n", "no charger has this identity")
    if charger.password is not None:
        given = basic_credentials(request.headers.get_all("Authorization"))
        if given is None:
            return Refusal(HTTPStatus.UNAUTHORIZED, "credentials required\n", "no Basic auth credentials", True)
        user, password = given
        expected = charger.password.get_secret_value().encode()
        password_ok = same_secret(password, expected)
        if not password_ok or user.decode("utf-8", "replace").casefold() != charger.identity.casefold():
            what = "a wrong password" if not password_ok else "a user name that is not the identity"
            return Refusal(HTTPStatus.UNAUTHORIZED, "wrong credentials\n", f"Basic auth with {what}", True, True)
    offered = [p for p in offered_subprotocols(request) if p]
    if SUBPROTOCOL not in offered:
        # OCPP-J requires the charger to name the protocol; without it we cannot know it speaks 1.6
        # (a charger set to 2.0.1 sends other messages), so refuse rather than guess.
        said = f"offered {', '.join(offered)}" if offered else "offered no subprotocol"
        reason = f"{said}, not {SUBPROTOCOL}: set the charger to OCPP 1.6J (JSON over websocket)"
        return Refusal(HTTPStatus.BAD_REQUEST, f"this server speaks {SUBPROTOCOL} only\n", reason)
    return charger
