"""The gateway's own web server: the status page, ``/api/status``, ``/healthz`` and ``/metrics``.

aiohttp serves it: asyncio-native (it shares the gateway's event loop, no thread, no second
server process), mature and small enough for a Pi, with a test client and a clean middleware
hook for Basic auth. Reads the Site and the telemetry at request time; changes nothing unless
``[status_page] commands`` is on, which the config allows only with a password.

Paths: ``/`` (HTML), ``/api/status`` (JSON), ``/healthz`` (200 ready / 503 starting; never
behind auth, for health checks of systemd, Docker and load balancers), ``/metrics``
(Prometheus). Anything else is 404, whatever the credentials.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from adapters.web.metrics import CONTENT_TYPE as METRICS_TYPE
from adapters.web.metrics import render_metrics
from adapters.web.page import render_page
from gateway.basic_auth import basic_credentials, same_secret
from gateway.config import StatusPageConfig
from gateway.domain.errors import ConfigError
from gateway.services.site import Site
from gateway.services.site_picture import SiteLabels, site_picture
from gateway.services.tasks import serve_until_cancelled
from gateway.services.telemetry import Telemetry

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Sent with every answer: no caching of live state, no framing (the page has buttons), no sniffing.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "connect-src 'self'; frame-ancestors 'none'",
}
OPEN_PATHS = frozenset({"/healthz"})


class StatusServer:
    """Serves the site's status over HTTP on ``settings.host:settings.port`` (port 0: any free one)."""

    def __init__(self, site: Site, telemetry: Telemetry, settings: StatusPageConfig, labels: SiteLabels) -> None:
        self.site = site
        self.telemetry = telemetry
        self.settings = settings
        self.labels = labels
        self.port: int | None = None
        self.retry_s = 30.0  # between attempts to listen while the port is taken
        self._runner: web.AppRunner | None = None
        self._credentials: tuple[bytes, bytes] | None = None
        if settings.password is not None:
            user = (settings.username or "").encode()
            self._credentials = (user, settings.password.get_secret_value().encode())

    @property
    def url(self) -> str:
        host = self.settings.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.on_response_prepare.append(_secure_headers)  # on every answer, errors raised as exceptions too
        app.router.add_get("/", self._page)
        app.router.add_get("/api/status", self._status)
        app.router.add_get("/healthz", self._health)
        app.router.add_get("/metrics", self._metrics)
        if self.settings.commands:
            app.router.add_post("/api/connectors/{connector_id}/stop", self._stop)
            app.router.add_post("/api/connectors/{connector_id}/availability", self._availability)
        return app

    async def start(self) -> None:
        """Listen (once); a port in use or a bad address is the installer's to fix: ConfigError naming the key."""
        if self._runner is not None:
            return
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            # requests still open at shutdown get 5 s, well inside systemd's and Docker's stop timeouts
            site = web.TCPSite(runner, self.settings.host, self.settings.port, reuse_address=True, shutdown_timeout=5)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            where = f"{self.settings.host}:{self.settings.port}"
            raise ConfigError([("status_page.port", f"cannot listen on {where}: {exc.strerror or exc}")]) from exc
        self._runner = runner
        server = site._server  # aiohttp keeps the bound sockets there; port 0 needs the real port
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.settings.port
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
    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Unknown paths 404 before anything else; then Basic auth (but for /healthz)."""
        not_found = request.match_info.http_exception
        if not_found is not None:
            raise not_found
        if request.path not in OPEN_PATHS and not self._authenticated(request):
            return web.Response(
                status=401,
                text="401: this status page needs a user name and password\n",
                headers={"WWW-Authenticate": 'Basic realm="ocpp-gateway", charset="UTF-8"'},
            )
        return await handler(request)

    def _authenticated(self, request: web.Request) -> bool:
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

    def picture(self) -> dict[str, Any]:
        return site_picture(self.site, self.telemetry, self.labels)

    # -- reading -----------------------------------------------------------------------------------
    async def _page(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text=render_page(self.picture()), content_type="text/html", charset="utf-8")

    async def _status(self, request: web.Request) -> web.StreamResponse:
        return _json(self.picture())

    async def _health(self, request: web.Request) -> web.StreamResponse:
        ready = self.telemetry.ready
        body = {"ready": ready, "waiting_for": self.telemetry.waiting_for()}
        return _json(body, status=200 if ready else 503)

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        text = render_metrics(self.telemetry, self.picture())
        return web.Response(body=text.encode(), headers={"Content-Type": METRICS_TYPE})

    # -- commands (only with [status_page] commands = true, which needs a password) ------------------
    async def _stop(self, request: web.Request) -> web.StreamResponse:
        connector_id = await self._command_target(request)
        if not self.site.stop_session(connector_id):
            return _refused(409, f"no session runs on connector {connector_id}")
        log.info("status page: session on connector %s stopped by the operator", connector_id)
        return _json({"connector_id": connector_id, "result": "stopping"})

    async def _availability(self, request: web.Request) -> web.StreamResponse:
        connector_id = await self._command_target(request)
        body = await _json_body(request)
        available = body.get("available")
        if not isinstance(available, bool):
            return _refused(400, "available must be true or false")
        result = self.site.change_availability(connector_id, available)
        log.info(
            "status page: connector %s %s: %s", connector_id, "in service" if available else "out of service", result
        )
        return _json({"connector_id": connector_id, "result": result})

    async def _command_target(self, request: web.Request) -> int:
        """The connector a command names; only JSON bodies are taken (a cross-site form cannot send one)."""
        if request.content_type != "application/json":
            raise web.HTTPUnsupportedMediaType(text="commands take a JSON body (Content-Type: application/json)\n")
        raw = request.match_info["connector_id"]
        connectors = self.site.upstream_connectors
        if not raw.isdecimal() or int(raw) not in connectors:
            raise web.HTTPNotFound(text=f"no connector {raw} on this site's charge point\n")
        return int(raw)


async def _secure_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text="the body is not JSON\n") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the body must be a JSON object\n")
    return body


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body, ensure_ascii=False), status=status, content_type="application/json")


def _refused(status: int, reason: str) -> web.Response:
    return _json({"error": reason}, status=status)
