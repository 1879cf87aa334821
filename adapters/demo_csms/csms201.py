"""DemoCsms201: a minimal OCPP 2.0.1 CSMS that accepts, records and logs what it receives.

The 2.0.1 counterpart of ``DemoCsms`` (same surface: host/port, optional password, scripted
``boot_answers``, ``received``, ``connected``, ``wait_for``, ``answer_delay_s``). It validates every
frame with the ``ocpp`` library's 2.0.1 schemas in both directions, so what the gateway sends is
checked by an independent peer, and it can send the station the requests a CSMS starts with
(``call``): RequestStartTransaction, RequestStopTransaction, Reset, ChangeAvailability,
TriggerMessage...
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from ocpp.charge_point import snake_to_camel_case
from ocpp.routing import on
from ocpp.v201 import ChargePoint, call_result
from ocpp.v201.enums import Action
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from adapters.demo_csms.csms import Received

log = logging.getLogger(__name__)
SUBPROTOCOL = "ocpp2.0.1"


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _describe(action: str, payload: dict[str, Any]) -> str:
    """One readable line per message for the demo's log (never an id token)."""
    if action == "StatusNotification":
        return f"EVSE {payload['evseId']}: {payload['connectorStatus']}"
    if action == "TransactionEvent":
        info = payload["transactionInfo"]
        energy = [
            f"{s['value']} Wh"
            for v in payload.get("meterValue", [])
            for s in v["sampledValue"]
            if s.get("measurand", "Energy.Active.Import.Register") == "Energy.Active.Import.Register"
        ]
        return f"{payload['eventType']} #{payload['seqNo']} {info['transactionId']} {' '.join(energy)}".rstrip()
    if action == "BootNotification":
        station = payload["chargingStation"]
        return f"{station['vendorName']} {station['model']} ({payload['reason']})"
    return ""


class _Session201(ChargePoint):
    """The CSMS side of one station connection."""

    def __init__(self, csms: DemoCsms201, station_id: str, connection: ServerConnection) -> None:
        super().__init__(station_id, connection, logger=logging.getLogger("ocpp.demo_csms"))
        self.csms = csms

    async def _record(self, action: str, kwargs: dict[str, Any]) -> None:
        if self.csms.answer_delay_s:
            await asyncio.sleep(self.csms.answer_delay_s)
        self.csms.record(Received(self.id, action, snake_to_camel_case(kwargs)))

    def _token_info(self, id_token: dict[str, Any] | None) -> dict[str, Any]:
        tag = str(id_token["id_token"]) if id_token else ""
        return {"status": "Blocked" if tag in self.csms.blocked_id_tags else "Accepted"}

    @on(Action.boot_notification)
    async def on_boot(self, **kwargs: Any) -> Any:
        await self._record("BootNotification", kwargs)
        status, interval = self.csms.next_boot_answer()
        return call_result.BootNotification(current_time=_now_iso(), interval=interval, status=status)

    @on(Action.heartbeat)
    async def on_heartbeat(self, **kwargs: Any) -> Any:
        await self._record("Heartbeat", kwargs)
        return call_result.Heartbeat(current_time=_now_iso())

    @on(Action.status_notification)
    async def on_status(self, **kwargs: Any) -> Any:
        await self._record("StatusNotification", kwargs)
        return call_result.StatusNotification()

    @on(Action.authorize)
    async def on_authorize(self, id_token: dict[str, Any], **kwargs: Any) -> Any:
        await self._record("Authorize", {"id_token": id_token, **kwargs})
        return call_result.Authorize(id_token_info=self._token_info(id_token))

    @on(Action.transaction_event)
    async def on_transaction_event(self, **kwargs: Any) -> Any:
        await self._record("TransactionEvent", kwargs)
        if kwargs.get("id_token") is None:
            return call_result.TransactionEvent()
        return call_result.TransactionEvent(id_token_info=self._token_info(kwargs["id_token"]))

    @on(Action.meter_values)
    async def on_meter_values(self, **kwargs: Any) -> Any:
        await self._record("MeterValues", kwargs)
        return call_result.MeterValues()

    @on(Action.notify_event)
    async def on_notify_event(self, **kwargs: Any) -> Any:
        await self._record("NotifyEvent", kwargs)
        return call_result.NotifyEvent()


class DemoCsms201:
    """Serves ``ws://host:port/ocpp/<station id>`` with subprotocol ocpp2.0.1; records every CALL.

    ``boot_answers`` scripts the BootNotification replies (status, interval); the last one repeats.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9000,
        *,
        password: str | None = None,
        boot_answers: list[tuple[str, int]] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.password = password
        self.boot_answers = list(boot_answers or [("Accepted", 60)])
        self.received: list[Received] = []
        self.connections = 0
        self.blocked_id_tags: set[str] = set()
        self.answer_delay_s = 0.0
        self.sessions: dict[str, _Session201] = {}
        self.connected = asyncio.Event()
        self._arrived = asyncio.Event()
        self._server: Server | None = None

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            subprotocols=[Subprotocol(SUBPROTOCOL)],
            process_request=self._check_auth,
        )
        self.port = self._server.sockets[0].getsockname()[1] if self.port == 0 else self.port
        log.info("demo CSMS (OCPP 2.0.1) listening on ws://%s:%s/", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/ocpp"

    def _check_auth(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.password is None:
            return None
        header = request.headers.get("Authorization", "")
        try:
            user_pass = base64.b64decode(header.removeprefix("Basic ")).decode()
        except (binascii.Error, UnicodeDecodeError):
            user_pass = ""
        station_id = request.path.rstrip("/").rsplit("/", 1)[-1]
        if not header.startswith("Basic ") or user_pass != f"{station_id}:{self.password}":
            return connection.respond(HTTPStatus.UNAUTHORIZED, "wrong or missing credentials\n")
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        station_id = connection.request.path.rstrip("/").rsplit("/", 1)[-1]
        session = _Session201(self, station_id, connection)
        self.sessions[station_id] = session
        self.connections += 1
        self.connected.set()
        log.info("charging station %s connected", station_id)
        try:
            await session.start()
        except Exception as exc:
            log.info("charging station %s disconnected (%s)", station_id, type(exc).__name__)
        finally:
            if self.sessions.get(station_id) is session:
                del self.sessions[station_id]
                self.connected.clear()

    def next_boot_answer(self) -> tuple[str, int]:
        return self.boot_answers.pop(0) if len(self.boot_answers) > 1 else self.boot_answers[0]

    async def call(self, station_id: str, payload: Any) -> Any:
        """Send a CALL to a connected station and return its result (raises on CALLERROR)."""
        return await self.sessions[station_id].call(payload, suppress=False)

    def record(self, message: Received) -> None:
        self.received.append(message)
        log.info(
            "CSMS <- %s %s %s", message.charge_point_id, message.action, _describe(message.action, message.payload)
        )
        self._arrived.set()
        self._arrived = asyncio.Event()

    def messages(self, action: str) -> list[dict[str, Any]]:
        return [m.payload for m in self.received if m.action == action]

    async def wait_for(
        self, action: str, predicate: Callable[[dict[str, Any]], bool] = lambda _: True, timeout: float = 10.0
    ) -> dict[str, Any]:
        """The first payload of ``action`` (received from now or earlier) matching ``predicate``."""
        async with asyncio.timeout(timeout):
            while True:
                arrived = self._arrived
                found = next((p for p in self.messages(action) if predicate(p)), None)
                if found is not None:
                    return found
                await arrived.wait()
