"""The HTTP server under the status page: aiohttp's low-level server, so that every answer,
the server's own errors included, leaves through one place.

With ``web.Application`` an answer aiohttp makes itself (a request whose headers are too large
or malformed never reaches the application) skips the application's hooks: it had none of the
security headers, a ``Server`` header naming the Python and aiohttp versions, and a traceback in
the log. Here the status page's handler answers every request it is given and adds the headers
itself (``secured``), and each connection's own error answers get them too (``_Connection``),
with one log line instead of a traceback.

The low-level server (``web.Server``, ``web.RequestHandler``, ``web.ServerRunner``) is public
aiohttp API; ``handle_error`` and ``log_exception`` are the methods aiohttp's connections call
for their own errors.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

log = logging.getLogger("adapters.web.server")

#: Sent with every answer: no caching of live state, no framing (the page has buttons), no sniffing.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "connect-src 'self'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}
#: In place of aiohttp's ``Python/3.x aiohttp/3.x``: versions help only whoever looks for a known hole.
SERVER = "ocpp-gateway"

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def secured(response: web.StreamResponse) -> web.StreamResponse:
    """``response`` with the security headers and our ``Server`` header (aiohttp only sets its
    own when none is there)."""
    response.headers.update(SECURITY_HEADERS)
    response.headers["Server"] = SERVER
    return response


class HardenedServer(web.Server):
    """``web.Server`` whose connections answer their own errors with the security headers."""

    def __init__(self, handler: Handler, **handler_args: Any) -> None:
        """``handler_args``: for each connection (``web.RequestHandler``), e.g. ``access_log``."""
        super().__init__(handler, **handler_args)
        self._handler_args = handler_args

    def __call__(self) -> web.RequestHandler:
        return _Connection(self, loop=asyncio.get_running_loop(), **self._handler_args)


class _Connection(web.RequestHandler):
    """One client connection. aiohttp calls ``handle_error`` for a request it could not read (too
    large, malformed) or a handler that failed, and ``log_exception`` to log it."""

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if 400 <= status < 500:  # aiohttp's text would echo the client's bytes
            message = f"{status}: this request could not be read (malformed, or its headers are too large)\n"
        elif status != HTTPStatus.INTERNAL_SERVER_ERROR:  # 504: a handler timed out
            message = f"{status}: {HTTPStatus(status).phrase}\n"
        return secured(super().handle_error(request, status, exc, message))

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        """One line, never a traceback: a client that sends garbage is no error of the gateway's."""
        exc = kwargs.get("exc_info")
        what = str(args[0]) % args[1:] if args else "error"
        detail = f": {one_line(exc)}" if isinstance(exc, BaseException) else ""
        level = logging.INFO if isinstance(exc, HttpProcessingError | RequestPayloadError) else logging.ERROR
        log.log(level, "status page: %s%s", what, detail)


def one_line(value: object) -> str:
    """An exception or a request's path as one short printable line (either may quote a client)."""
    text = " ".join(str(value).split()) or type(value).__name__
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= 160 else text[:157] + "..."
