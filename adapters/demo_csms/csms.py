"""DemoCsms: a minimal OCPP 1.6J central system that accepts, records and logs what it receives.

It validates every frame with the ``ocpp`` library's schemas (in both directions), so what the
gateway sends is checked by an independent peer. Tests wait on what it recorded with
``wait_for(...)``; the demo prints its log lines.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from ocpp.exceptions import InternalError
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call_result
from ocpp.v16.enums import Action, RegistrationStatus
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Received:
    """One CALL the CSMS received, with its payload in OCPP camelCase."""

    charge_point_id: str
    action: str
    payload: dict[str, Any]
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def _describe(action: str, payload: dict[str, Any]) -> str:
    """One readable line per message for the demo's log."""
    if action == "StatusNotification":
        extra = "" if payload["errorCode"] == "NoError" else f" ({payload['errorCode']})"
        return f"connector {payload['connectorId']}: {payload['status']}{extra}"
    if action == "MeterValues":
        parts = []
        for value in payload["meterValue"]:
            for sample in value["sampledValue"]:
                if sample.get("measurand") in ("Energy.Active.Import.Register", "Power.Active.Import"):
                    parts.append(f"{sample['value']} {sample.get('unit', '')}")
        return f"connector {payload['connectorId']}: " + ", ".join(parts)
    if action == "StartTransaction":
        return f"connector {payload['connectorId']}: meterStart {payload['meterStart']} Wh"
    if action == "StopTransaction":
        return f"transaction {payload['transactionId']}: meterStop {payload['meterStop']} Wh ({payload.get('reason')})"
    if action == "BootNotification":
        return f"{payload['chargePointVendor']} {payload['chargePointModel']}"
    return ""


class _Session(ChargePoint):
    """The CSMS side of one charge point connection."""

    def __init__(self, csms: DemoCsms, charge_point_id: str, connection: ServerConnection) -> None:
        super().__init__(charge_point_id, connection, logger=logging.getLogger("ocpp.demo_csms"))
        self.csms = csms

    async def _record(self, action: str, payload: dict[str, Any]) -> None:
        if self.csms.answer_delay_s:
            await asyncio.sleep(self.csms.answer_delay_s)
        self.csms.record(Received(self.id, action, payload))
        if action in self.csms.failing:
            raise InternalError(description=f"demo CSMS told to fail {action}")

    @on(Action.boot_notification)
    async def on_boot(self, **kwargs: Any) -> call_result.BootNotification:
        await self._record("BootNotification", _camel(kwargs))
        status, interval = self.csms.next_boot_answer()
        return call_result.BootNotification(current_time=_now_iso(), interval=interval, status=status)

    @on(Action.heartbeat)
    async def on_heartbeat(self) -> call_result.Heartbeat:
        await self._record("Heartbeat", {})
        return call_result.Heartbeat(current_time=_now_iso())

    @on(Action.status_notification)
    async def on_status(self, **kwargs: Any) -> call_result.StatusNotification:
        await self._record("StatusNotification", _camel(kwargs))
        return call_result.StatusNotification()

    @on(Action.authorize)
    async def on_authorize(self, id_tag: str) -> call_result.Authorize:
        await self._record("Authorize", {"idTag": id_tag})
        return call_result.Authorize(id_tag_info={"status": self.csms.id_tag_status(id_tag)})

    @on(Action.start_transaction)
    async def on_start_transaction(self, **kwargs: Any) -> call_result.StartTransaction:
        await self._record("StartTransaction", _camel(kwargs))
        self.csms.last_transaction_id += 1
        return call_result.StartTransaction(
            transaction_id=self.csms.last_transaction_id,
            id_tag_info={"status": self.csms.id_tag_status(kwargs["id_tag"])},
        )

    @on(Action.stop_transaction)
    async def on_stop_transaction(self, **kwargs: Any) -> call_result.StopTransaction:
        await self._record("StopTransaction", _camel(kwargs))
        return call_result.StopTransaction()

    @on(Action.meter_values)
    async def on_meter_values(self, **kwargs: Any) -> call_result.MeterValues:
        await self._record("MeterValues", _camel(kwargs))
        return call_result.MeterValues()


def _camel(data: Any) -> Any:
    from ocpp.charge_point import snake_to_camel_case

    return snake_to_camel_case(data)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class DemoCsms:
    """Serves ``ws://host:port/<path>/<charge_point_id>``; records every CALL it receives.

    ``boot_answers`` scripts the BootNotification replies (status, interval); the last one repeats.
    """

    subprotocol = "ocpp1.6"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9000,
        *,
        password: str | None = None,
        boot_answers: list[tuple[str, int]] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.password = password
        self.tls = tls  # serve wss:// (a test's security profile 2 or 3)
        self.boot_answers = list(boot_answers or [(RegistrationStatus.accepted, 60)])
        self.received: list[Received] = []
        self.connections = 0  # websocket sessions accepted so far
        self.last_transaction_id = 0
        self.blocked_id_tags: set[str] = set()  # answered Blocked (for tests)
        self.failing: set[str] = set()  # actions answered with a CALLERROR (for tests)
        self.answer_delay_s = 0.0  # every answer waits this long: a slow uplink (tests, bench/replay.py)
        self.sessions: dict[str, Any] = {}
        self.connected = asyncio.Event()
        self._arrived = asyncio.Event()
        self._server: Server | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            subprotocols=self.served(),
            process_request=self._check_auth,
            ssl=self.tls,
        )
        self.port = self._server.sockets[0].getsockname()[1] if self.port == 0 else self.port
        log.info("demo CSMS listening on %s://%s:%s/", self.scheme, self.host, self.port)

    def served(self) -> list[Subprotocol]:
        """The subprotocols it accepts (a test's CSMS may serve two versions on one url)."""
        return [Subprotocol(self.subprotocol)]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    @property
    def scheme(self) -> str:
        return "ws" if self.tls is None else "wss"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/ocpp"

    # -- connections -------------------------------------------------------------------------------
    def _check_auth(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.password is None:
            return None
        header = request.headers.get("Authorization", "")
        try:
            user_pass = base64.b64decode(header.removeprefix("Basic ")).decode()
        except (binascii.Error, UnicodeDecodeError):
            user_pass = ""
        charge_point_id = request.path.rstrip("/").rsplit("/", 1)[-1]
        if not header.startswith("Basic ") or user_pass != f"{charge_point_id}:{self.password}":
            return connection.respond(HTTPStatus.UNAUTHORIZED, "wrong or missing credentials\n")
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        charge_point_id = connection.request.path.rstrip("/").rsplit("/", 1)[-1]
        session = self._new_session(charge_point_id, connection)
        self.sessions[charge_point_id] = session
        self.connections += 1
        self.connected.set()
        log.info("charge point %s connected", charge_point_id)
        try:
            await session.start()
        except Exception as exc:
            log.info("charge point %s disconnected (%s)", charge_point_id, type(exc).__name__)
        finally:
            if self.sessions.get(charge_point_id) is session:
                del self.sessions[charge_point_id]
                self.connected.clear()

    def _new_session(self, charge_point_id: str, connection: ServerConnection) -> Any:
        """The library's peer for one connection (the 2.0.1 CSMS makes its own)."""
        return _Session(self, charge_point_id, connection)

    @staticmethod
    def describe(action: str, payload: dict[str, Any]) -> str:
        return _describe(action, payload)

    def id_tag_status(self, id_tag: str) -> str:
        return "Blocked" if id_tag in self.blocked_id_tags else "Accepted"

    def next_boot_answer(self) -> tuple[str, int]:
        return self.boot_answers.pop(0) if len(self.boot_answers) > 1 else self.boot_answers[0]

    async def call(self, charge_point_id: str, payload: Any) -> Any:
        """Send a CALL to a connected charge point and return its result (raises on CALLERROR)."""
        return await self.sessions[charge_point_id].call(payload, suppress=False)

    # -- what was received -------------------------------------------------------------------------
    def record(self, message: Received) -> None:
        self.received.append(message)
        summary = self.describe(message.action, message.payload)
        log.info("CSMS <- %s %s %s", message.charge_point_id, message.action, summary)
        self._arrived.set()  # wake every waiter, then arm a fresh event for the next message
        self._arrived = asyncio.Event()

    def messages(self, action: str) -> list[dict[str, Any]]:
        return [m.payload for m in self.received if m.action == action]

    async def wait_for(
        self, action: str, predicate: Callable[[dict[str, Any]], bool] = lambda _: True, timeout: float = 10.0
    ) -> dict[str, Any]:
        """The first payload of ``action`` (received from now or earlier) matching ``predicate``."""

        def find() -> dict[str, Any] | None:
            return next((p for p in self.messages(action) if predicate(p)), None)

        async with asyncio.timeout(timeout):
            while True:
                arrived = self._arrived
                if (found := find()) is not None:
                    return found
                await arrived.wait()
