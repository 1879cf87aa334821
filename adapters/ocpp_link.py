"""The upstream websocket both OCPP versions keep to the CSMS: connect, retry, say why it is down.

Shared by the 1.6 charge point (``adapters.ocpp_upstream``) and the 2.0.1 charging station
(``adapters.ocpp201_upstream``), which may not import each other: what differs between them is
the subprotocol and what is said on the link, not how the link is kept. Like
``adapters.ocpp_callerrors``, a module of the adapters' own, outside either package.

* One connection at a time, retried with exponential backoff and jitter (``Backoff``) up to
  ``[upstream] reconnect_max_s``; a link that was up resets the backoff.
* HTTP Basic auth (security profile 1) with the identity as the user, when there is a password.
* TLS (``wss://``): the CSMS's certificate checked against ``[upstream.tls] ca_file`` or the
  system's CAs (security profile 2); with ``cert_file`` the gateway shows its own certificate
  (profile 3). A failed handshake is named as such in the outage's reason.
* The first failure of an outage is one WARNING naming why (HTTP 401/403 hints at the
  password); while it lasts, DEBUG. The Site hears every change (``set_upstream``), with the
  reason, for the status page and MQTT.
* A CALL whose failure is the CSMS's problem (a CALLERROR, no answer) is logged and returns
  None: it must end neither the link nor the process (the outbox retries what must not be lost).
* Security events (``Site.security.report``, sent by a 2.0.1 station): the CSMS refusing the
  credentials (HTTP 401) and its certificate failing the check, once per outage each; frames
  that cannot be read (the Site's rate limit makes them one event a minute).
* ``CsmsPeer``: the ``ocpp`` library's side of one connection, as both versions want it: every
  CALL counted for ``/metrics``, and a frame that cannot be read one WARNING line, never the end
  of the link. Each version adds its handlers.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ocpp.charge_point import ChargePoint
from ocpp.exceptions import OCPPError
from ocpp.messages import unpack
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.typing import Subprotocol

from gateway.config import UpstreamConfig
from gateway.domain.ports import SettingsStore
from gateway.domain.security import SecurityEventKind
from gateway.services.backoff import Backoff
from gateway.services.site import Site
from gateway.services.tasks import cancel_and_wait
from gateway.services.telemetry import Telemetry

log = logging.getLogger(__name__)

#: Settings section both versions keep: did the last process end on purpose (False while running)?
#: It decides how a session the last process left open is ended: Reboot after a clean stop, else
#: PowerLoss (and 2.0.1's boot reason).
CLEAN_SHUTDOWN = "clean_shutdown"
MAX_FRAME_BYTES = 2**20  # a CSMS's largest frames (a local list) are far smaller
MAX_NAME = 60  # characters of a foreign text (an action name, an error) quoted in a CALLERROR or the log
#: The library logs every frame at INFO, id tokens included: the gateway keeps this logger at WARNING.
frame_log = logging.getLogger("ocpp")


class PeerOwner(Protocol):
    """What a ``CsmsPeer`` needs of the adapter it speaks for."""

    site: Site
    settings: UpstreamConfig
    telemetry: Telemetry


class CsmsPeer(ChargePoint):
    """The ``ocpp`` library's side of one connection to the CSMS (see the module docstring). A
    version's peer derives from this and from that version's ``ChargePoint`` (``ocpp.v16``,
    ``ocpp.v201``), which brings the version's messages and schemas."""

    def __init__(self, owner: PeerOwner, connection: ClientConnection, timeout_s: float) -> None:
        super().__init__(owner.settings.charge_point_id, connection, response_timeout=timeout_s, logger=frame_log)
        self.owner = owner

    async def close(self) -> None:
        """End the connection (a reset); the owner reconnects."""
        await self._connection.close()

    async def call(
        self, payload: Any, suppress: bool = True, unique_id: str | None = None, skip_schema_validation: bool = False
    ) -> Any:
        """The library's CALL, counted: answered, or failed with a CALLERROR, a timeout or a lost link."""
        action = type(payload).__name__
        telemetry = self.owner.telemetry
        try:
            result = await super().call(payload, suppress, unique_id, skip_schema_validation)
        except OCPPError:
            telemetry.message_failed(action, "callerror")
            raise
        except TimeoutError:
            telemetry.message_failed(action, "timeout")
            raise
        except ConnectionClosed:
            telemetry.message_failed(action, "connection")
            raise
        if result is None and suppress:  # a CALLERROR the library swallowed
            telemetry.message_failed(action, "callerror")
        else:
            telemetry.message_sent(action)
        return result

    async def route_message(self, raw_msg: str | bytes) -> None:
        """The library's, but a frame from the CSMS that cannot be read (not JSON, 5000 digits, 50,000
        nested brackets, an action that is not a string) is one WARNING line and the link goes on:
        nothing a CSMS sends may end the gateway. It is unpacked here first: the library would log
        one it cannot unpack with a traceback and the whole frame."""
        try:
            unpack(raw_msg)
        except OCPPError as exc:
            cause = exc.details.get("cause") if isinstance(exc.details, dict) else None
            self._unreadable(f"{type(exc).__name__}: {cause or exc.description}")
            return
        except (ValueError, TypeError, RecursionError, KeyError, AttributeError) as exc:
            self._unreadable(f"{type(exc).__name__}: {exc}")
            return
        try:
            await super().route_message(raw_msg)
        except ConnectionClosed:
            raise
        except (ValueError, TypeError, RecursionError, KeyError, AttributeError) as exc:
            self._unreadable(f"{type(exc).__name__}: {exc}")

    def _unreadable(self, why: str) -> None:
        """One WARNING line, and a security event (the Site's rate limit: one a minute, with a count)."""
        log.warning("CSMS sent a frame that cannot be handled (%s): ignored", short(why))
        self.owner.site.security.report(
            SecurityEventKind.INVALID_MESSAGES, f"a frame from the CSMS: {short(why)}", "csms"
        )


def short(text: object, limit: int = MAX_NAME) -> str:
    """A foreign text cut to ``limit`` characters for a log line or a CALLERROR."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class UpstreamLink:
    """Keeps the websocket to ``settings.endpoint`` speaking ``subprotocol`` (see the module)."""

    def __init__(self, site: Site, settings: UpstreamConfig, subprotocol: str) -> None:
        self.site = site
        self.settings = settings
        self.subprotocol = subprotocol
        self._outage_reported = False
        self._told: set[SecurityEventKind] = set()  # security events of this outage (each once)

    async def stay_connected(
        self,
        session: Callable[[ClientConnection], Awaitable[None]],
        registration: Callable[[], str | None],
        closed: Callable[[], None],
    ) -> None:
        """Run ``session`` on each connection until it ends, then ``closed()`` and connect again;
        ``registration()`` is what the Site is told of the boot (its last answer). Never returns."""
        backoff = Backoff(1.0, self.settings.reconnect_max_s)
        while True:
            reason = "connection closed"  # why the link is down, for the status page (logged once)
            try:
                async with connect(
                    self.settings.endpoint,
                    subprotocols=[Subprotocol(self.subprotocol)],
                    additional_headers=basic_auth_headers(self.settings),
                    ssl=tls_context(self.settings),
                    open_timeout=10,
                    ping_interval=20,
                    ping_timeout=20,
                    max_size=MAX_FRAME_BYTES,
                ) as connection:
                    backoff.reset()
                    self._outage_reported = False
                    self._told.clear()
                    log.info("connected to CSMS %s (%s)", self.settings.endpoint, self.subprotocol)
                    self.site.set_upstream(True, registration())
                    if connection.subprotocol != self.subprotocol:
                        log.warning(
                            "CSMS did not confirm subprotocol %s (got %r); continuing",
                            self.subprotocol,
                            connection.subprotocol,
                        )
                    await session(connection)
            except InvalidStatus as exc:
                code = exc.response.status_code
                hint = " (check upstream.password)" if code in (401, 403) else ""
                reason = f"refused the connection: HTTP {code}{hint}"
                self._report_outage(f"CSMS {reason}")
                if code == 401:
                    self._security_event(SecurityEventKind.CSMS_REFUSED_CREDENTIALS, f"the CSMS answered HTTP {code}")
            except ssl.SSLError as exc:  # (before OSError, which it is)
                reason = f"TLS handshake failed: {getattr(exc, 'verify_message', None) or exc} (check upstream.tls)"
                self._report_outage(f"CSMS {reason}")
                if isinstance(exc, ssl.SSLCertVerificationError):
                    why = getattr(exc, "verify_message", None) or "not verified"
                    self._security_event(SecurityEventKind.CSMS_CERTIFICATE_INVALID, f"the CSMS's certificate: {why}")
            except (OSError, WebSocketException, TimeoutError) as exc:
                reason = f"connection lost or unreachable: {exc or type(exc).__name__}"
                self._report_outage(f"CSMS {reason}")
            finally:
                closed()
                self.site.set_upstream(False, registration(), reason)
            delay = backoff.next_delay()
            log.debug("reconnecting to CSMS in %.1f s", delay)
            await asyncio.sleep(delay)

    def _security_event(self, kind: SecurityEventKind, detail: str) -> None:
        """Tell the Site once per outage (a CSMS that keeps refusing is one event, not one per retry)."""
        if kind not in self._told:
            self._told.add(kind)
            self.site.security.report(kind, detail, "csms")

    def _report_outage(self, message: str) -> None:
        """One WARNING when the CSMS goes away, DEBUG while it stays away (INFO when back)."""
        log.log(logging.DEBUG if self._outage_reported else logging.WARNING, message)
        self._outage_reported = True


def tls_context(settings: UpstreamConfig) -> ssl.SSLContext | None:
    """The client's TLS context for a ``wss://`` CSMS (None for ``ws://``): the system's CAs, or
    ``ca_file``'s; the gateway's certificate with ``cert_file``. Hostnames are always checked."""
    if not settings.url.startswith("wss://"):
        return None
    tls = settings.tls
    context = ssl.create_default_context(cafile=tls.ca_file if tls is not None else None)
    if tls is not None and tls.cert_file is not None:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


def basic_auth_headers(settings: UpstreamConfig) -> dict[str, str]:
    """HTTP Basic auth (security profile 1), user = the site's identity; none without a password."""
    if settings.password is None:
        return {}
    secret = f"{settings.charge_point_id}:{settings.password.get_secret_value()}"
    return {"Authorization": "Basic " + base64.b64encode(secret.encode()).decode()}


async def send_call(peer: ChargePoint, payload: Any) -> Any | None:
    """One CALL whose failure is the CSMS's problem, not ours: log it and carry on.

    A CALLERROR or a missing answer must not end the connection or the process; the outbox
    retries what must not be lost. Returns the result, or None on failure.
    """
    action = type(payload).__name__
    try:
        return await peer.call(payload, suppress=False)
    except OCPPError as exc:
        log.warning("CSMS answered %s with CALLERROR %s: %s", action, exc.code, exc.description)
    except TimeoutError:
        log.warning("CSMS did not answer %s in time", action)
    return None


async def run_marked(store: SettingsStore, *loops: Awaitable[Any]) -> None:
    """Run an upstream adapter's ``loops`` until one ends (or all are cancelled), with
    ``CLEAN_SHUTDOWN`` false while they run and true once they have ended on purpose: a kill -9
    leaves it false, which the next start reads."""
    store.save(CLEAN_SHUTDOWN, False)
    try:
        await first_to_finish(*loops)
    finally:
        store.save(CLEAN_SHUTDOWN, True)


async def first_to_finish(*coroutines: Awaitable[Any]) -> None:
    """Run coroutines together; when one ends (or fails) cancel the rest and re-raise its error."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait(*tasks)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
