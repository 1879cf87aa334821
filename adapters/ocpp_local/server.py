"""LocalOcppServer: the websocket server native OCPP 1.6J chargers connect to (``ws(s)://host:port/<identity>``).

The transport only: who may connect (``handshake.admit``, before the upgrade), TLS (security
profile 2), the largest frame, keepalive pings, and one live connection per charger: a charger
that connects again replaces its old connection, which is closed with 1000 "replaced" (a charger
that lost its network often reconnects before the old TCP connection has timed out). What is
said on a connection is the business of the session the charger's mode's factory makes for it:
``handler_factory`` for merged chargers, ``passthrough`` for passthrough ones. A mode without a
factory is refused with 503 before the upgrade (logged once per charger).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from types import MappingProxyType
from typing import Protocol

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from adapters.ocpp_local.frames import short
from adapters.ocpp_local.handshake import REALM, SUBPROTOCOL, Chargers, Refusal, admit, identity_in
from adapters.ocpp_local.server_log import server_logger
from adapters.ocpp_local.throttle import LogThrottle
from gateway.config import OcppChargerConfig, OcppServerConfig
from gateway.config_ocpp_server import OcppServerTlsConfig
from gateway.domain.errors import ConfigError
from gateway.domain.security import SecurityEventKind
from gateway.services.site import Site
from gateway.services.tasks import serve_until_cancelled

log = logging.getLogger(__name__)

REPLACED = "replaced"  # the close reason of a connection a newer one of the same charger replaced


class Session(Protocol):
    """What ``handler_factory`` returns: ``start()`` serves the connection until it closes."""

    async def start(self) -> None: ...


HandlerFactory = Callable[[str, ServerConnection], Session]


def server_ssl_context(tls: OcppServerTlsConfig) -> ssl.SSLContext:
    """TLS 1.2 or newer (OCPP security profile 2) with the configured certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError([("ocpp_server.tls", f"cannot load the certificate and key: {exc}")]) from exc
    return context


def _peer(connection: ServerConnection) -> str:
    address = connection.remote_address
    return str(address[0]) if isinstance(address, tuple) and address else str(address)


class LocalOcppServer:
    """Serves the configured chargers; ``run()`` until cancelled, or ``start()`` / ``stop()``."""

    def __init__(
        self,
        settings: OcppServerConfig,
        chargers: Iterable[OcppChargerConfig],
        handler_factory: HandlerFactory | None,
        passthrough: HandlerFactory | None = None,
        site: Site | None = None,
    ) -> None:
        """``site`` hears of wrong credentials (a security event; None: nobody does)."""
        self.settings = settings
        self.site = site
        self.chargers = Chargers(chargers)
        self.port = settings.port  # the bound port once started
        self._factories = {"merged": handler_factory, "passthrough": passthrough}
        self._server: Server | None = None
        self._live: dict[str, ServerConnection] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._refusals = LogThrottle()

    @property
    def url(self) -> str:
        """Where chargers connect, without the identity."""
        return f"{'wss' if self.settings.tls else 'ws'}://{self.settings.host}:{self.port}"

    @property
    def connections(self) -> Mapping[str, ServerConnection]:
        """The live connection of each connected charger, by its configured identity."""
        return MappingProxyType(self._live)

    async def run(self) -> None:
        await serve_until_cancelled(self.start, self.stop)

    async def start(self) -> None:
        """Listen (once; the gateway starts listening before its tasks, to report a busy port as ConfigError)."""
        if self._server is not None:
            return
        for charger in self.chargers:
            if charger.password is None:
                log.warning(
                    "OCPP charger %s has no password: anyone who can reach %s and knows the identity can connect as it",
                    charger.identity,
                    self.url,
                )
            if self._factories[charger.mode] is None:
                log.warning(
                    "OCPP charger %s: %s mode is not available yet: its connections are refused with HTTP 503",
                    charger.identity,
                    charger.mode,
                )
        settings = self.settings
        try:
            self._server = await serve(
                self._serve,
                settings.host,
                settings.port,
                process_request=self._admit,
                subprotocols=[Subprotocol(SUBPROTOCOL)],
                max_size=settings.max_frame_bytes,
                ping_interval=settings.ping_interval_s,
                ping_timeout=settings.ping_timeout_s,
                # A peer that has not answered a close by then will not: the same patience as for a pong.
                close_timeout=settings.ping_timeout_s,
                ssl=server_ssl_context(settings.tls) if settings.tls else None,
                logger=server_logger(),  # an unreadable request is one WARNING, not a traceback
            )
        except OSError as exc:
            where = f"{settings.host}:{settings.port}"
            raise ConfigError([("ocpp_server.port", f"cannot listen on {where}: {exc.strerror or exc}")]) from exc
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("local OCPP server on %s/<identity> for %d charger(s)", self.url, len(self.chargers))

    async def stop(self) -> None:
        """Close every connection (1001 going away) and stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    # -- before the upgrade ------------------------------------------------------------------------
    def _admit(self, connection: ServerConnection, request: Request) -> Response | None:
        verdict = admit(request, self.chargers)
        if not isinstance(verdict, Refusal):
            if self._factories[verdict.mode] is None:  # said once at start()
                log.debug("refused OCPP charger %s: %s mode is not available yet", verdict.identity, verdict.mode)
                return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, f"{verdict.mode} mode is not available\n")
            connection.username = verdict.identity  # websockets' slot for who authenticated
            return None
        charger = self.chargers.find(identity_in(request.path))
        held = self._refusals.allow((verdict.status, charger.identity if charger else None))
        if held is not None:  # a charger retrying with a wrong password logs once a minute, not each time
            more = f" ({held} more since the last line)" if held else ""
            identity = short(repr(identity_in(request.path)), 60)
            status = f"{verdict.status.value} {verdict.status.phrase}"
            log.warning("refused %s from %s: %s (HTTP %s)%s", identity, _peer(connection), verdict.reason, status, more)
        if verdict.login_failed and self.site is not None:  # the Site's rate limit: one a minute per address
            who = short(repr(identity_in(request.path)), 60)
            detail = f"local OCPP server: {verdict.reason} for {who} from {_peer(connection)}"
            self.site.security.report(SecurityEventKind.LOGIN_FAILED, detail, source=f"ocpp {_peer(connection)}")
        response = connection.respond(verdict.status, verdict.body)
        if verdict.challenge:
            response.headers["WWW-Authenticate"] = f'Basic realm="{REALM}", charset="UTF-8"'
        return response

    # -- one connection ----------------------------------------------------------------------------
    async def _serve(self, connection: ServerConnection) -> None:
        identity = connection.username
        previous = self._live.get(identity)
        self._live[identity] = connection
        if previous is not None:
            log.warning(
                "OCPP charger %s connected again from %s: its previous connection is closed (%s)",
                identity,
                _peer(connection),
                REPLACED,
            )
            self._close_later(previous)
        else:
            log.info("OCPP charger %s connected from %s", identity, _peer(connection))
        charger = self.chargers.find(identity)
        factory = self._factories[charger.mode] if charger is not None else None
        assert factory is not None  # _admit let only chargers with a factory in
        try:
            await factory(identity, connection).start()
        except ConnectionClosed as exc:
            self._log_closed(identity, exc)
        finally:
            if self._live.get(identity) is connection:
                del self._live[identity]

    def _close_later(self, connection: ServerConnection) -> None:
        """Close a replaced connection without making the new one wait (a dead peer takes close_timeout)."""
        task = asyncio.create_task(connection.close(CloseCode.NORMAL_CLOSURE, REPLACED))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _log_closed(self, identity: str, exc: ConnectionClosed) -> None:
        sent, received = exc.sent, exc.rcvd
        if sent is not None and sent.code == CloseCode.MESSAGE_TOO_BIG:
            # The frame was never read, so there is no message id to answer: close (1009) and log.
            log.warning(
                "OCPP charger %s sent a frame over max_frame_bytes (%d): connection closed with 1009; it may reconnect",
                identity,
                self.settings.max_frame_bytes,
            )
        elif sent is not None and sent.code == CloseCode.INTERNAL_ERROR and "keepalive" in sent.reason:
            log.warning(
                "OCPP charger %s did not answer a ping within %g s: connection closed",
                identity,
                self.settings.ping_timeout_s,
            )
        elif sent is not None and sent.reason == REPLACED:
            log.info("OCPP charger %s: previous connection closed (%s)", identity, REPLACED)
        else:
            close = received or sent
            how = f"{close.code} {close.reason}".strip() if close else "no close frame"
            log.info("OCPP charger %s disconnected (%s)", identity, how)
