"""The gateway's own web server: the status page, ``/api/status``, ``/healthz``, ``/readyz`` and ``/metrics``.

aiohttp serves it: asyncio-native (it shares the gateway's event loop, no thread, no second
server process), mature and small enough for a Pi. Its low-level server is used (see
``adapters.web.hardened``), so every answer, aiohttp's own errors included, carries the security
headers. Reads the Site and the telemetry at request time; changes nothing unless
``[status_page] commands`` is on, which the config allows only with a password.

Paths: ``/`` (HTML), ``/api/status`` (JSON), the history's ``/api/sessions``, ``/api/sessions.csv``,
``/api/events`` and ``/api/series`` (``adapters.web.history_api``), ``/healthz`` (liveness: 200
whenever the process and its event loop answer), ``/readyz`` (readiness: 200 only while every part works, else 503 with
the reasons), ``/metrics`` (Prometheus). ``/healthz`` and ``/readyz`` are never behind auth (health
checks of systemd, Docker and load balancers); ``/readyz`` gives its reasons in words only to a
caller with the password. Anything else is 404, whatever the credentials; a wrong method 405.

No answer to anything a client sends is a traceback: a bad connector number is 404, a body that
is not a small JSON object 400 or 413, a command from another site 403; a failure of the gateway's
own is 500 with one ERROR line in the log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from adapters.web.hardened import HardenedServer, one_line, secured
from adapters.web.history_api import HistoryApi
from adapters.web.metrics import CONTENT_TYPE as METRICS_TYPE
from adapters.web.metrics import render_metrics
from adapters.web.origin import SameOrigin
from adapters.web.page import render_page
from adapters.web.refused import Refused
from gateway.basic_auth import basic_credentials, same_secret
from gateway.config import StatusPageConfig
from gateway.domain.commands import CommandSource
from gateway.domain.errors import ConfigError
from gateway.domain.security import SecurityEventKind
from gateway.services.history import History
from gateway.services.readiness import readiness
from gateway.services.site import Site
from gateway.services.site_picture import SiteLabels, site_picture
from gateway.services.tasks import serve_until_cancelled
from gateway.services.telemetry import Telemetry

log = logging.getLogger(__name__)

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
CommandHandler = Callable[[web.BaseRequest, int], Awaitable[web.StreamResponse]]

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
READ_METHODS = frozenset({"GET", "HEAD"})
#: ``/api/connectors/<n>/<command>``; the number is checked apart, so a wrong one is a 404 that says so.
COMMAND_PATH = re.compile(r"/api/connectors/([^/]+)/([a-z]+)")
MAX_COMMAND_BODY = 4096  # bytes: a command is ``{"available": false}``
MAX_CONNECTOR_DIGITS = 6  # int() of thousands of digits is slow, and Python refuses past 4300


class StatusServer:
    """Serves the site's status over HTTP on ``settings.host:settings.port`` (port 0: any free one)."""

    def __init__(
        self,
        site: Site,
        telemetry: Telemetry,
        settings: StatusPageConfig,
        labels: SiteLabels,
        allowed_hosts: Iterable[str] = (),
        history: History | None = None,
        started_at: datetime | None = None,
    ) -> None:
        """``allowed_hosts``: DNS names besides this machine's that commands may be sent to (a
        reverse proxy's; see ``adapters.web.origin``). ``history``: the operator's history (None:
        ``[history] enabled = false``, its paths answer 404). ``started_at``: when the gateway
        started, for its uptime (default: now, by the Site's clock)."""
        self.site = site
        self.started_at = started_at or site.clock.now()
        self.telemetry = telemetry
        self.settings = settings
        self.labels = labels
        self.port: int | None = None
        self.retry_s = 30.0  # between attempts to listen while the port is taken
        self._runner: web.ServerRunner | None = None
        self._credentials: tuple[bytes, bytes] | None = None
        if settings.password is not None:
            user = (settings.username or "").encode()
            self._credentials = (user, settings.password.get_secret_value().encode())
        self._reads: dict[str, Handler] = {
            "/": self._page,
            "/api/status": self._status,
            "/healthz": self._health,
            "/readyz": self._ready,
            "/metrics": self._metrics,
        }
        full_tags = self._credentials is not None  # then every request here is authenticated
        self.history = HistoryApi(history, site.clock.now, full_tags=full_tags, connectors=len(site.connectors))
        self._reads.update(self.history.routes())
        self._commands: dict[str, CommandHandler] = (
            {"stop": self._stop, "availability": self._availability} if settings.commands else {}
        )
        self._same_origin = SameOrigin(settings.host, allowed_hosts)

    @property
    def url(self) -> str:
        host = self.settings.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    async def start(self) -> None:
        """Listen (once); a port in use or a bad address is the installer's to fix: ConfigError naming the key."""
        if self._runner is not None:
            return
        # requests still open at shutdown get 5 s, well inside systemd's and Docker's stop timeouts
        runner = web.ServerRunner(HardenedServer(self.answer, access_log=None), shutdown_timeout=5)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.settings.host, self.settings.port, reuse_address=True)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            where = f"{self.settings.host}:{self.settings.port}"
            raise ConfigError([("status_page.port", f"cannot listen on {where}: {exc.strerror or exc}")]) from exc
        self._runner = runner
        addresses = runner.addresses  # port 0 needs the real port
        self.port = addresses[0][1] if addresses else self.settings.port
        auth = "Basic auth" if self._credentials else "no password"
        log.info("status page on %s (%s)", self.url, auth)
        if self._credentials is None and self.settings.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning(
                "the status page on %s has no password: anyone on the network can read the site's state "
                "([status_page] username/password)",
                self.url,
            )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def run(self) -> None:
        await serve_until_cancelled(self._listen_when_free, self.stop)

    async def _listen_when_free(self) -> None:
        """Listen; while the port is taken, say so once (ERROR, naming the key) and try again every
        ``retry_s``: the page is for watching, so the gateway's real work goes on without it."""
        told = False
        while True:
            try:
                await self.start()
            except ConfigError as exc:
                if not told:
                    for key, reason in exc.problems:
                        log.error(
                            "%s: %s; running without the status page, trying again every %g s",
                            key,
                            reason,
                            self.retry_s,
                        )
                    told = True
                await asyncio.sleep(self.retry_s)
                continue
            return

    # -- every request -----------------------------------------------------------------------------
    async def answer(self, request: web.BaseRequest) -> web.StreamResponse:
        """Every request the server reads: routed, guarded, and answered with the security headers;
        whatever goes wrong is an answer with a short text, never a traceback."""
        try:
            response = await self._route(request)
        except Refused as refused:
            response = refused.response()
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception as exc:
            where = one_line(f"{request.method} {request.path}")
            log.error("status page: %s failed: %s: %s", where, type(exc).__name__, one_line(exc))
            log.debug("status page: the failure in full", exc_info=exc)
            response = web.Response(status=500, text="500: the gateway could not answer this; its log says why\n")
        return secured(response)

    async def _route(self, request: web.BaseRequest) -> web.StreamResponse:
        """Unknown paths 404 before anything else; then the method (405), Basic auth (but for the
        health checks), and for commands the origin (403)."""
        path, method = request.path, request.method
        read = self._reads.get(path)
        command = COMMAND_PATH.fullmatch(path)
        act = self._commands.get(command.group(2)) if command is not None else None
        if read is None and act is None:
            raise Refused(404, "no such page on this gateway")
        allowed = READ_METHODS if read is not None else frozenset({"POST"})
        if method not in allowed:
            raise Refused(405, f"{method} is not taken here", {"Allow": ", ".join(sorted(allowed))})
        if path not in OPEN_PATHS and not self._authenticated(request):
            self._login_failed(request)
            raise Refused(
                401,
                "this status page needs a user name and password",
                {"WWW-Authenticate": 'Basic realm="ocpp-gateway", charset="UTF-8"'},
            )
        if read is not None:
            return await read(request)
        assert act is not None and command is not None
        if (why := self._same_origin.refusal(request.headers)) is not None:
            log.warning("status page: command refused: %s", why)
            raise Refused(403, f"commands are taken only from this status page: {why}")
        return await act(request, self._connector(command.group(1), request))

    def _authenticated(self, request: web.BaseRequest) -> bool:
        if self._credentials is None:
            return True
        given = basic_credentials(request.headers.getall("Authorization", []))
        if given is None:
            return False
        (user, password), (expected_user, expected_password) = given, self._credentials
        # both compared, always: the time taken says nothing about which one was wrong
        user_ok = same_secret(user, expected_user)
        password_ok = same_secret(password, expected_password)
        return user_ok and password_ok

    def _login_failed(self, request: web.BaseRequest) -> None:
        """Credentials that were given and are wrong are a security event (the Site's rate limit
        makes a guessing client one a minute per address); a request without any is not (a
        browser asks without them first)."""
        if request.headers.getall("Authorization", []):
            origin = request.remote or "unknown"
            detail = f"status page: wrong user name or password from {origin}"
            self.site.security.report(SecurityEventKind.LOGIN_FAILED, detail, source=f"page {origin}")

    def picture(self) -> dict[str, Any]:
        picture = site_picture(self.site, self.telemetry, self.labels, started_at=self.started_at)
        picture["history"] = self.history.state()
        return picture

    # -- reading -----------------------------------------------------------------------------------
    async def _page(self, request: web.BaseRequest) -> web.StreamResponse:
        """The page: the picture taken on the event loop (the Site's state of now), the history read
        and the page rendered in worker threads (24 hours of series are thousands of rows)."""
        picture = self.picture()
        view = await self.history.page_view()
        text = await asyncio.to_thread(render_page, picture, view)
        return web.Response(text=text, content_type="text/html", charset="utf-8")

    async def _status(self, request: web.BaseRequest) -> web.StreamResponse:
        return _json(self.picture())

    async def _health(self, request: web.BaseRequest) -> web.StreamResponse:
        """Liveness: answered at all means the process and its event loop run. Nothing else is
        checked: a restart mends no CSMS, broker or charger (``/readyz`` says what is down)."""
        return _json({"alive": True})

    async def _ready(self, request: web.BaseRequest) -> web.StreamResponse:
        """Readiness: 200 while every part works, else 503 with what is wrong. The reasons in words
        (addresses, device names, errors) only with the password, when there is one."""
        health = readiness(self.site, self.telemetry, self.site.backlog, self.site.clock.now())
        detailed = self._credentials is None or self._authenticated(request)
        problems = [{"part": p.part, **({"message": p.message} if detailed else {})} for p in health.problems]
        body = {
            "ready": health.ready,
            "state": health.state,
            "problems": problems,
            "waiting_for": list(health.waiting_for) if detailed else len(health.waiting_for),
        }
        return _json(body, status=200 if health.ready else 503)

    async def _metrics(self, request: web.BaseRequest) -> web.StreamResponse:
        text = render_metrics(self.telemetry, self.picture())
        return web.Response(body=text.encode(), headers={"Content-Type": METRICS_TYPE})

    # -- commands (only with [status_page] commands = true, which needs a password) ------------------
    async def _stop(self, request: web.BaseRequest, connector_id: int) -> web.StreamResponse:
        if not self.site.commands.stop_session(connector_id, source=CommandSource.PAGE):
            return _refused(409, f"no session runs on connector {connector_id}")
        log.info("status page: session on connector %s stopped by the operator", connector_id)
        return _json({"connector_id": connector_id, "result": "stopping"})

    async def _availability(self, request: web.BaseRequest, connector_id: int) -> web.StreamResponse:
        body = await _json_body(request)
        available = body.get("available")
        if not isinstance(available, bool):
            return _refused(400, "available must be true or false")
        result = self.site.commands.change_availability(connector_id, available, source=CommandSource.PAGE)
        log.info(
            "status page: connector %s %s: %s", connector_id, "in service" if available else "out of service", result
        )
        return _json({"connector_id": connector_id, "result": result})

    def _connector(self, raw: str, request: web.BaseRequest) -> int:
        """The connector a command names; only JSON bodies are taken (a cross-site form cannot send one)."""
        if request.content_type != "application/json":
            raise Refused(415, "commands take a JSON body (Content-Type: application/json)")
        digits = raw.isascii() and raw.isdigit() and len(raw) <= MAX_CONNECTOR_DIGITS
        if not digits or int(raw) not in self.site.upstream_connectors:
            shown = raw if len(raw) <= 12 else raw[:12] + "..."
            raise Refused(404, f"no connector {shown} on this site's charge point")
        return int(raw)


async def _json_body(request: web.BaseRequest) -> dict[str, Any]:
    """The body as a JSON object: at most ``MAX_COMMAND_BODY`` bytes (413), valid UTF-8 JSON, not
    nested deeper than Python's parser goes (400)."""
    if request.content_length is not None and request.content_length > MAX_COMMAND_BODY:
        raise Refused(413, f"a command's body is at most {MAX_COMMAND_BODY} bytes")
    raw = bytearray()
    try:
        while chunk := await request.content.read(MAX_COMMAND_BODY + 1 - len(raw)):
            raw += chunk
            if len(raw) > MAX_COMMAND_BODY:
                raise Refused(413, f"a command's body is at most {MAX_COMMAND_BODY} bytes")
    except (RequestPayloadError, HttpProcessingError):  # e.g. Content-Encoding: gzip over bytes that are not
        raise Refused(400, "the body cannot be read (broken encoding or chunks)") from None
    try:
        body = json.loads(bytes(raw).decode("utf-8"))
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise Refused(400, "the body is not JSON (or nested too deeply)") from None
    if not isinstance(body, dict):
        raise Refused(400, "the body must be a JSON object")
    return body


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body, ensure_ascii=False), status=status, content_type="application/json")


def _refused(status: int, reason: str) -> web.Response:
    return _json({"error": reason}, status=status)
