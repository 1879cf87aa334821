"""Passthrough: a charger's frames relayed both ways, unchanged, to the CSMS under its own identity.

As an OCPP 2.0.1 Local Controller does: for a charger with ``mode = "passthrough"`` the gateway
opens ``<[upstream] url>/<identity>`` (subprotocol ``ocpp1.6``, Basic auth with the charger's
``csms_password`` if set) once the local server has admitted the charger, and two pump tasks
copy every message as received (a text message stays the same text, so the same bytes; no
re-serialisation), each in its own direction.

The charger's socket lives only as long as the CSMS's: if the CSMS cannot be reached or drops,
the charger's connection is closed with **1013 Try Again Later** (RFC 6455's registry: 1012 is
"Service Restart", 1011 "Internal Error"; 1013 is the code that says "the server is fine, a peer
it needs is not, reconnect later"). The charger then keeps its transactions in its own offline
queue, as it would with its CSMS unreachable, and its next reconnect tries the CSMS again. If
the charger goes, the CSMS side is closed (1000).

Each relayed frame is also read (after it has been forwarded, so reading never delays it) and
handed to ``on_frame``; see ``OnFrame`` for the contract.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any

from ocpp.messages import Call, CallError, CallResult
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.connection import Connection
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.frames import CloseCode
from websockets.typing import Data, Subprotocol

from adapters.ocpp_local.frames import BadFrame, read_frame
from adapters.ocpp_local.handshake import SUBPROTOCOL
from adapters.ocpp_local.throttle import LogThrottle
from gateway.config import OcppChargerConfig

log = logging.getLogger(__name__)

CSMS_AWAY = CloseCode.TRY_AGAIN_LATER  # 1013: see the module docstring
CSMS_AWAY_REASON = "CSMS unavailable"
CSMS_OPEN_TIMEOUT_S = 10.0  # the charger's first frames wait (buffered) this long at most
MAX_PENDING = 64  # unanswered CALLs remembered per direction (OCPP allows one; a bad peer may send more)


class Direction(StrEnum):
    TO_CSMS = "to_csms"  # sent by the charger
    TO_CHARGER = "to_charger"  # sent by the CSMS


OnFrame = Callable[[str, Direction, int, str | None, dict[str, Any]], None]
"""``on_frame(identity, direction, message_type, action, payload)``, once per well-formed frame relayed.

- ``message_type``: 2 CALL, 3 CALLRESULT, 4 CALLERROR (OCPP-J's MessageTypeId).
- CALL: ``action`` and its payload (OCPP camelCase, as sent), in either direction.
- CALLRESULT: the payload, with the action of the CALL it answers (from a small map of the
  message ids of CALLs relayed the other way), or None if that CALL was not seen.
- CALLERROR: likewise matched; payload ``{"errorCode", "errorDescription", "errorDetails"}``.

Called after the frame was forwarded, in the relay's task: it must be quick and never block
(hand heavy work to a queue). Malformed frames are relayed but not reported. An exception it
raises is logged (at most once a minute per connection) and the relay goes on.
"""


def ignore_frame(
    identity: str, direction: Direction, message_type: int, action: str | None, payload: dict[str, Any]
) -> None:
    return None


class Passthrough:
    """One charger connection relayed to the CSMS; ``start()`` serves it until either side goes."""

    def __init__(
        self,
        identity: str,
        charger: ServerConnection,
        csms_url: str,
        *,
        csms_password: str | None = None,
        on_frame: OnFrame = ignore_frame,
        health: CsmsHealth | None = None,
    ) -> None:
        self.identity = identity
        self.charger = charger
        self.csms_url = csms_url
        self._password = csms_password
        self._on_frame = on_frame
        self._health = health or CsmsHealth()
        # Message ids of CALLs relayed in each direction (-> action), to name the answers.
        self._pending: dict[Direction, dict[str, str]] = {Direction.TO_CSMS: {}, Direction.TO_CHARGER: {}}
        self._observer_errors = LogThrottle()

    async def start(self) -> None:
        csms = await self._open_csms()
        if csms is None:
            return
        pumps = [
            asyncio.create_task(self._pump(self.charger, csms, Direction.TO_CSMS)),
            asyncio.create_task(self._pump(csms, self.charger, Direction.TO_CHARGER)),
        ]
        ended: Connection | None = None
        try:
            done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            ended, closed = next(iter(done)).result()
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            if ended is not csms:  # the charger went (or we were cancelled): the CSMS side goes too
                await csms.close(CloseCode.NORMAL_CLOSURE, "charger disconnected")
        if ended is csms:
            how = f"{closed.rcvd.code} {closed.rcvd.reason}".strip() if closed.rcvd else "no close frame"
            self._health.dropped(self.identity, self.csms_url, how)
            await self.charger.close(CSMS_AWAY, CSMS_AWAY_REASON)
            return
        raise closed  # the charger went: the server logs how (1009, keepalive, replaced, ...)

    async def _open_csms(self) -> ClientConnection | None:
        url = f"{self.csms_url}/{self.identity}"
        headers = {}
        if self._password is not None:
            token = base64.b64encode(f"{self.identity}:{self._password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        try:
            csms = await connect(
                url,
                subprotocols=[Subprotocol(SUBPROTOCOL)],
                additional_headers=headers,
                open_timeout=CSMS_OPEN_TIMEOUT_S,
            )
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            self._health.unreachable(self.identity, url, exc)
            await self.charger.close(CSMS_AWAY, CSMS_AWAY_REASON)
            return None
        self._health.connected(self.identity, url)
        return csms

    async def _pump(
        self, source: Connection, sink: Connection, direction: Direction
    ) -> tuple[Connection, ConnectionClosed]:
        """Copy ``source`` to ``sink`` until one closes; returns which one, and how."""
        while True:
            try:
                message = await source.recv()  # str for a text message (sent as text again), bytes for binary
            except ConnectionClosed as closed:
                return source, closed
            try:
                await sink.send(message)
            except ConnectionClosed as closed:
                return sink, closed
            self._observe(direction, message)

    # -- reading what was relayed ------------------------------------------------------------------
    def _observe(self, direction: Direction, message: Data) -> None:
        try:
            self._report(direction, message)
        except Exception:
            if self._observer_errors.allow() is not None:
                log.exception("OCPP charger %s: the passthrough observer failed on a frame", self.identity)

    def _report(self, direction: Direction, message: Data) -> None:
        frame = read_frame(message)
        if isinstance(frame, BadFrame):
            return
        if isinstance(frame, Call):
            pending = self._pending[direction]
            if len(pending) >= MAX_PENDING:
                del pending[next(iter(pending))]  # the oldest: never answered
            pending[frame.unique_id] = frame.action
            self._on_frame(self.identity, direction, Call.message_type_id, frame.action, frame.payload)
            return
        other = Direction.TO_CHARGER if direction is Direction.TO_CSMS else Direction.TO_CSMS
        action = self._pending[other].pop(frame.unique_id, None)  # the CALL it answers went the other way
        if isinstance(frame, CallResult):
            self._on_frame(self.identity, direction, CallResult.message_type_id, action, frame.payload)
        else:
            error = {
                "errorCode": frame.error_code,
                "errorDescription": frame.error_description,
                "errorDetails": frame.error_details,
            }
            self._on_frame(self.identity, direction, CallError.message_type_id, action, error)


class CsmsHealth:
    """Logs the CSMS's reachability like a good neighbour, per charger: one WARNING, DEBUG while down, INFO back."""

    def __init__(self) -> None:
        self._down: set[str] = set()

    def unreachable(self, identity: str, url: str, exc: BaseException) -> None:
        level = logging.DEBUG if identity in self._down else logging.WARNING
        self._down.add(identity)
        log.log(
            level,
            "OCPP charger %s (passthrough): cannot reach the CSMS at %s (%s): its connection is closed with %d %s; "
            "it keeps its transactions until it reconnects",
            identity,
            url,
            str(exc) or type(exc).__name__,
            CSMS_AWAY,
            CSMS_AWAY_REASON,
        )

    def dropped(self, identity: str, url: str, how: str) -> None:
        self._down.add(identity)
        log.warning(
            "OCPP charger %s (passthrough): the CSMS at %s closed the connection (%s): the charger's is closed with %d",
            identity,
            url,
            how,
            CSMS_AWAY,
        )

    def connected(self, identity: str, url: str) -> None:
        if identity in self._down:
            self._down.discard(identity)
            log.info("OCPP charger %s (passthrough): the CSMS at %s is reachable again", identity, url)
        else:
            log.info("OCPP charger %s (passthrough): relayed to the CSMS at %s", identity, url)


class PassthroughRelays:
    """The passthrough ``handler_factory`` of LocalOcppServer: a Passthrough per connection."""

    def __init__(self, csms_url: str, chargers: Iterable[OcppChargerConfig], on_frame: OnFrame = ignore_frame) -> None:
        self.csms_url = csms_url.rstrip("/")
        self.on_frame = on_frame
        self._passwords = {
            c.identity: c.csms_password.get_secret_value() if c.csms_password else None for c in chargers
        }
        self._health = CsmsHealth()

    def __call__(self, identity: str, connection: ServerConnection) -> Passthrough:
        return Passthrough(
            identity,
            connection,
            self.csms_url,
            csms_password=self._passwords.get(identity),
            on_frame=self.on_frame,
            health=self._health,
        )
