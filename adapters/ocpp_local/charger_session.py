"""ChargerSession: the central-system side of one native charger's connection (ocpp.v16).

For now it answers what a charger sends as a plain central system would (Boot Accepted,
Authorize Accepted, transaction ids from a counter) and hands every message it handled to
``on_message(identity, action, payload)``, where the Site merge hooks in next.

Frames are routed by ``route_message`` here, not the library's: every frame with a readable
message id is answered (a CALLERROR with OCPP 1.6's code, see ``frames.py``), anything else is
one log line (at most one a minute per connection), and no frame ends the connection. The
library's schema validation stays on in both directions. A handler that refuses what passed the
schema (a value no charger should send) raises the OCPPError to answer with: ``_handle_call``
sends it and logs one line, without the traceback and frame the library would log.
"""

from __future__ import annotations

import inspect
import itertools
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from ocpp.charge_point import camel_to_snake_case, remove_nones, serialize_as_dict, snake_to_camel_case
from ocpp.exceptions import InternalError, OCPPError
from ocpp.messages import Call, validate_payload
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call_result
from ocpp.v16.enums import Action, AuthorizationStatus, DataTransferStatus, RegistrationStatus
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from adapters.ocpp_local.frames import (
    OCPP_VERSION,
    BadFrame,
    call_error_frame,
    read_frame,
    schema_error,
    short,
    unknown_action,
)
from adapters.ocpp_local.throttle import LogThrottle

log = logging.getLogger(__name__)
# The ocpp library logs every frame at INFO (id tags included): a child of "ocpp", kept at WARNING.
frame_log = logging.getLogger("ocpp.local")

OnMessage = Callable[[str, str, dict[str, Any]], None]


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _ignore(identity: str, action: str, payload: dict[str, Any]) -> None:
    return None


class ChargerSession(ChargePoint):
    """One connection of one charger; ``start()`` (the library's loop) serves it until it closes."""

    def __init__(
        self,
        identity: str,
        connection: ServerConnection,
        *,
        heartbeat_interval_s: int,
        transaction_ids: Iterator[int],
        on_message: OnMessage = _ignore,
    ) -> None:
        super().__init__(identity, connection, logger=frame_log)
        self.heartbeat_interval_s = heartbeat_interval_s
        self._transaction_ids = transaction_ids
        self._on_message = on_message
        self._bad_frames = LogThrottle()
        self._refusals = LogThrottle()  # by action: input a handler refused

    async def start(self) -> None:
        try:
            await super().start()
        finally:
            if held := self._bad_frames.held_back():
                log.warning("OCPP charger %s: %d more bad frame(s) on this connection were not logged", self.id, held)
            for action in self.route_map:
                if held := self._refusals.held_back(action):
                    log.warning("OCPP charger %s: %d more refused %s were not logged", self.id, held, action)

    # -- routing -----------------------------------------------------------------------------------
    async def route_message(self, raw_msg: str | bytes) -> None:
        try:
            await self._route(raw_msg)
        except ConnectionClosed:
            raise  # the connection is gone: start() ends, the server logs why
        except Exception:
            # A bug of ours while reading a frame: say it loudly, but the charger keeps its connection.
            if self._bad_frames.allow() is not None:
                log.exception("OCPP charger %s: a frame could not be handled", self.id)

    async def _route(self, raw: str | bytes) -> None:
        frame = read_frame(raw)
        if isinstance(frame, BadFrame):
            await self._refuse(frame.unique_id, frame.error, frame.reason)
        elif isinstance(frame, Call):
            await self._answer(frame)
        elif self._call_lock.locked():  # a response while a call() of ours waits for one
            self._response_queue.put_nowait(frame)
        else:  # nobody waits: queued, it would be taken for the answer to our next call
            await self._refuse(None, None, f"a response to no request of ours (id {short(frame.unique_id, 40)!r})")

    async def _answer(self, call: Call) -> None:
        if "_on_action" not in self.route_map.get(call.action, {}):
            await self._refuse(call.unique_id, unknown_action(call.action), f"action {short(call.action, 40)!r}")
            return
        if (error := await schema_error(call)) is not None:
            await self._refuse(call.unique_id, error, f"{call.action} payload")
            return
        try:
            await self._handle_call(call)  # runs the handler, validates the answer
        except OCPPError as error:  # the payload passed above: our answer failed its schema
            log.error("OCPP charger %s: our answer to %s failed the schema: %s", self.id, call.action, error)
            await self._send(call_error_frame(call.unique_id, InternalError()))

    async def _handle_call(self, msg: Call) -> None:
        """The library's ``_handle_call`` (``_answer`` has checked the action and the schema),
        except for what a handler raises. An OCPPError is the charger's input refused: answered
        with that CALLERROR and one WARNING with its ``cause`` (at most one a minute per action);
        the library would log a traceback with the whole frame, id tags included. Anything else
        is a bug of ours: InternalError, logged with its traceback but not the frame. (No ``@after``
        hooks: no session here has one.)"""
        handlers = self.route_map[msg.action]
        try:
            response = handlers["_on_action"](**camel_to_snake_case(msg.payload))
            if inspect.isawaitable(response):
                response = await response
        except OCPPError as error:
            await self._send(call_error_frame(msg.unique_id, error))
            if (held := self._refusals.allow(msg.action)) is not None:
                cause = error.details.get("cause", "") if isinstance(error.details, dict) else ""
                more = f"; {held} more refused since the last line" if held else ""
                log.warning("OCPP charger %s: %s refused (%s): %s%s", self.id, msg.action, error.code, cause, more)
            return
        except Exception:
            await self._send(call_error_frame(msg.unique_id, InternalError()))
            if self._bad_frames.allow("bug") is not None:
                log.exception("OCPP charger %s: handling %s failed", self.id, msg.action)
            return
        result = msg.create_call_result(snake_to_camel_case(remove_nones(serialize_as_dict(response))))
        await validate_payload(result, OCPP_VERSION)  # an OCPPError: ``_answer`` says so
        await self._send(result.to_json())

    async def _refuse(self, unique_id: str | None, error: OCPPError | None, reason: str) -> None:
        """Answer a bad frame with a CALLERROR if it has an id; log it (throttled) either way."""
        if unique_id is not None and error is not None:
            await self._send(call_error_frame(unique_id, error))
        held = self._bad_frames.allow()
        if held is None:
            return
        answer = f"answered {error.code}" if unique_id is not None and error is not None else "not answered"
        cause = error.details.get("cause") if error is not None and isinstance(error.details, dict) else None
        if cause and cause != reason:
            reason += f": {cause}"
        more = f"; {held} more bad frame(s) since the last line" if held else ""
        log.warning("OCPP charger %s: bad frame (%s), %s%s", self.id, reason, answer, more)

    def _received(self, action: str, payload: dict[str, Any]) -> None:
        self._on_message(self.id, str(action), snake_to_camel_case(payload))

    # -- what a charger sends ----------------------------------------------------------------------
    @on(Action.boot_notification)
    def on_boot_notification(self, **payload: Any) -> call_result.BootNotification:
        self._received(Action.boot_notification, payload)
        return call_result.BootNotification(
            current_time=_now_iso(), interval=self.heartbeat_interval_s, status=RegistrationStatus.accepted
        )

    @on(Action.heartbeat)
    def on_heartbeat(self, **payload: Any) -> call_result.Heartbeat:
        self._received(Action.heartbeat, payload)
        return call_result.Heartbeat(current_time=_now_iso())

    @on(Action.status_notification)
    def on_status_notification(self, **payload: Any) -> call_result.StatusNotification:
        self._received(Action.status_notification, payload)
        return call_result.StatusNotification()

    @on(Action.authorize)
    def on_authorize(self, **payload: Any) -> call_result.Authorize:
        self._received(Action.authorize, payload)
        return call_result.Authorize(id_tag_info={"status": AuthorizationStatus.accepted})

    @on(Action.start_transaction)
    def on_start_transaction(self, **payload: Any) -> call_result.StartTransaction:
        self._received(Action.start_transaction, payload)
        return call_result.StartTransaction(
            transaction_id=next(self._transaction_ids), id_tag_info={"status": AuthorizationStatus.accepted}
        )

    @on(Action.stop_transaction)
    def on_stop_transaction(self, **payload: Any) -> call_result.StopTransaction:
        self._received(Action.stop_transaction, payload)
        return call_result.StopTransaction()

    @on(Action.meter_values)
    def on_meter_values(self, **payload: Any) -> call_result.MeterValues:
        self._received(Action.meter_values, payload)
        return call_result.MeterValues()

    @on(Action.data_transfer)
    def on_data_transfer(self, **payload: Any) -> call_result.DataTransfer:
        self._received(Action.data_transfer, payload)
        return call_result.DataTransfer(status=DataTransferStatus.unknown_vendor_id)

    @on(Action.diagnostics_status_notification)
    def on_diagnostics_status_notification(self, **payload: Any) -> call_result.DiagnosticsStatusNotification:
        self._received(Action.diagnostics_status_notification, payload)
        return call_result.DiagnosticsStatusNotification()

    @on(Action.firmware_status_notification)
    def on_firmware_status_notification(self, **payload: Any) -> call_result.FirmwareStatusNotification:
        self._received(Action.firmware_status_notification, payload)
        return call_result.FirmwareStatusNotification()


class ChargerSessions:
    """The ``handler_factory`` of LocalOcppServer: a ChargerSession per connection.

    Transaction ids come from one counter for all chargers, so a charger that reconnects mid-
    session never gets an id it already holds. It starts at 1 each process: the Site merge maps
    them to the CSMS's ids, so they only need to be unique among the sessions this process sees.
    """

    def __init__(self, heartbeat_interval_s: int, on_message: OnMessage = _ignore) -> None:
        self.heartbeat_interval_s = heartbeat_interval_s
        self.on_message = on_message
        self._transaction_ids = itertools.count(1)

    def __call__(self, identity: str, connection: ServerConnection) -> ChargerSession:
        return ChargerSession(
            identity,
            connection,
            heartbeat_interval_s=self.heartbeat_interval_s,
            transaction_ids=self._transaction_ids,
            on_message=self.on_message,
        )
