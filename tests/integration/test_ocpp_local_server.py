"""The local OCPP server with chargers simulated by the ``ocpp`` library (and raw websockets for bad frames)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from ocpp.v16 import ChargePoint, call
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus
from websockets.typing import Subprotocol

from adapters.ocpp_callerrors import OCPP16_ACTIONS
from adapters.ocpp_local.charger_session import ChargerSession, ChargerSessions
from adapters.ocpp_local.server import LocalOcppServer
from gateway.config import OcppChargerConfig, OcppServerConfig
from tests.fixtures.net import free_port
from tests.fixtures.pki import Pki, make_pki

PASSWORD = "correct-horse-battery"
CHARGERS = [
    OcppChargerConfig(identity="CP-A", password=PASSWORD, connectors=[1]),
    OcppChargerConfig(identity="CP-B", password=PASSWORD, connectors=[2, 3]),
    OcppChargerConfig(identity="CP-OPEN", connectors=[4]),
]
OCPP16 = [Subprotocol("ocpp1.6")]
LOGGER = "adapters.ocpp_local"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Recorder:
    """The server's handler factory: real ChargerSessions, plus what they received and when each ended."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str, dict[str, Any]]] = []
        self.ended: asyncio.Queue[str] = asyncio.Queue()
        self._sessions = ChargerSessions(heartbeat_interval_s=300, on_message=self._record)

    def _record(self, identity: str, action: str, payload: dict[str, Any]) -> None:
        self.messages.append((identity, action, payload))

    def __call__(self, identity: str, connection: ServerConnection) -> _Tracked:
        return _Tracked(self._sessions(identity, connection), self.ended)

    async def next_end(self) -> str:
        return await asyncio.wait_for(self.ended.get(), 5)


@dataclass
class _Tracked:
    session: ChargerSession
    ended: asyncio.Queue[str]

    async def start(self) -> None:
        try:
            await self.session.start()
        finally:
            self.ended.put_nowait(self.session.id)


@asynccontextmanager
async def running(**settings: Any) -> AsyncIterator[tuple[LocalOcppServer, Recorder]]:
    recorder = Recorder()
    server = LocalOcppServer(OcppServerConfig(port=free_port(), **settings), CHARGERS, recorder)
    await server.start()
    try:
        yield server, recorder
    finally:
        await server.stop()


@pytest.fixture
async def server() -> AsyncIterator[tuple[LocalOcppServer, Recorder]]:
    async with running() as started:
        yield started


@asynccontextmanager
async def charger(
    url: str, identity: str, password: str | None = PASSWORD, **kwargs: Any
) -> AsyncIterator[tuple[ChargePoint, ClientConnection]]:
    """A charger simulated with the ocpp library: connects with Basic auth and serves its side."""
    headers = basic(identity, password) if password is not None else {}
    kwargs.setdefault("subprotocols", OCPP16)
    async with connect(f"{url}/{identity}", additional_headers=headers, **kwargs) as ws:
        point = ChargePoint(identity, ws, response_timeout=5)
        task = asyncio.create_task(point.start())
        try:
            yield point, ws
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await task


@asynccontextmanager
async def raw_charger(url: str, identity: str) -> AsyncIterator[ClientConnection]:
    """A charger's websocket without the ocpp library: for frames no library would send."""
    async with connect(f"{url}/{identity}", additional_headers=basic(identity, PASSWORD), subprotocols=OCPP16) as ws:
        yield ws


async def refused(url: str, headers: Any = None, **kwargs: Any) -> InvalidStatus:
    kwargs.setdefault("subprotocols", OCPP16)
    with pytest.raises(InvalidStatus) as caught:
        async with connect(url, additional_headers=headers or {}, **kwargs):
            pass
    return caught.value


async def boot(point: ChargePoint) -> Any:
    return await point.call(call.BootNotification(charge_point_model="M1", charge_point_vendor="V"), suppress=False)


def meter_values(connector: int, transaction_id: int, wh: int) -> call.MeterValues:
    sample = {"value": str(wh), "measurand": "Energy.Active.Import.Register", "unit": "Wh"}
    return call.MeterValues(connector, [{"timestamp": now(), "sampledValue": [sample]}], transaction_id=transaction_id)


# -- connecting ------------------------------------------------------------------------------------
async def test_a_charger_connects_boots_and_runs_a_session(server: tuple[LocalOcppServer, Recorder]) -> None:
    local, recorder = server
    async with charger(local.url, "CP-A") as (point, _):
        answer = await boot(point)
        assert (answer.status, answer.interval) == ("Accepted", 300)
        assert set(local.connections) == {"CP-A"}
        assert (await point.call(call.Heartbeat(), suppress=False)).current_time.endswith("Z")
        await point.call(call.StatusNotification(1, "NoError", "Preparing"), suppress=False)
        authorized = await point.call(call.Authorize("TAG-0001"), suppress=False)
        assert authorized.id_tag_info["status"] == "Accepted"
        started = await point.call(call.StartTransaction(1, "TAG-0001", 1000, now()), suppress=False)
        assert started.transaction_id == 1
        await point.call(meter_values(1, started.transaction_id, 1500), suppress=False)
        await point.call(call.StopTransaction(2000, now(), started.transaction_id), suppress=False)
        transfer = await point.call(call.DataTransfer("com.example"), suppress=False)
        assert transfer.status == "UnknownVendorId"
    actions = [action for identity, action, _ in recorder.messages if identity == "CP-A"]
    assert actions == [
        "BootNotification",
        "Heartbeat",
        "StatusNotification",
        "Authorize",
        "StartTransaction",
        "MeterValues",
        "StopTransaction",
        "DataTransfer",
    ]
    start = next(payload for _, action, payload in recorder.messages if action == "StartTransaction")
    assert start["connectorId"] == 1 and start["meterStart"] == 1000  # OCPP camelCase, as received
    assert await recorder.next_end() == "CP-A"
    assert dict(local.connections) == {}


async def test_identity_ignores_case_and_a_path_prefix(server: tuple[LocalOcppServer, Recorder]) -> None:
    local, _ = server
    async with charger(f"{local.url}/ocpp", "cp-a") as (point, _):
        assert (await boot(point)).status == "Accepted"
        assert set(local.connections) == {"CP-A"}  # known by its configured spelling


async def test_unknown_identity_is_refused_with_404_before_the_upgrade(
    server: tuple[LocalOcppServer, Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    local, recorder = server
    error = await refused(f"{local.url}/CP-NOPE", basic("CP-NOPE", PASSWORD))
    assert error.response.status_code == 404
    assert "refused 'CP-NOPE' from 127.0.0.1: no charger has this identity (HTTP 404 Not Found)" in caplog.text
    assert (await refused(f"{local.url}/", basic("CP-A", PASSWORD))).response.status_code == 404
    assert recorder.ended.empty()  # no session was ever started


async def test_wrong_or_missing_credentials_are_refused_with_401(
    server: tuple[LocalOcppServer, Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    local, _ = server
    url = f"{local.url}/CP-A"
    wrong = await refused(url, basic("CP-A", "not-the-password"))
    assert wrong.response.status_code == 401
    assert wrong.response.headers["WWW-Authenticate"].startswith("Basic ")
    assert (await refused(url)).response.status_code == 401  # no Authorization header
    assert (await refused(url, basic("CP-B", PASSWORD))).response.status_code == 401  # user is not the identity
    assert (await refused(url, {"Authorization": "Basic %%%"})).response.status_code == 401
    assert (await refused(url, basic("CP-A", "pässwort"))).response.status_code == 401  # non-ASCII: no TypeError
    twice = [*basic("CP-A", PASSWORD).items(), *basic("CP-A", PASSWORD).items()]
    assert (await refused(url, twice)).response.status_code == 401  # two headers: which one? neither
    lines = [r.getMessage() for r in caplog.records if r.name.startswith(LOGGER)]
    assert lines == ["refused 'CP-A' from 127.0.0.1: Basic auth with a wrong password (HTTP 401 Unauthorized)"]
    assert "not-the-password" not in caplog.text and PASSWORD not in caplog.text


async def test_a_charger_without_a_password_connects_and_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with running() as (local, _), charger(local.url, "CP-OPEN", password=None) as (point, _):
        assert (await boot(point)).status == "Accepted"
    assert "OCPP charger CP-OPEN has no password" in caplog.text


@pytest.mark.parametrize(
    ("offered", "logged"),
    [(None, "offered no subprotocol, not ocpp1.6"), (["ocpp2.0.1"], "offered ocpp2.0.1, not ocpp1.6")],
)
async def test_a_charger_that_does_not_offer_ocpp16_is_refused_with_400(
    server: tuple[LocalOcppServer, Recorder], caplog: pytest.LogCaptureFixture, offered: list[str] | None, logged: str
) -> None:
    local, _ = server
    error = await refused(f"{local.url}/CP-A", basic("CP-A", PASSWORD), subprotocols=offered)
    assert error.response.status_code == 400
    assert logged in caplog.text and "set the charger to OCPP 1.6J" in caplog.text


async def test_tls_with_basic_auth(tmp_path: Path) -> None:
    pki: Pki = make_pki(tmp_path / "pki")
    tls = {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key)}
    async with running(tls=tls) as (local, _):
        assert local.url.startswith("wss://127.0.0.1:")
        trust = ssl.create_default_context(cafile=str(pki.ca_file))
        async with charger(local.url, "CP-A", ssl=trust) as (point, ws):
            assert (await boot(point)).status == "Accepted"
            assert ws.transport.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
        with pytest.raises((InvalidMessage, OSError)):  # plain HTTP to a TLS port
            async with connect(local.url.replace("wss://", "ws://") + "/CP-A", subprotocols=OCPP16, open_timeout=2):
                pass


async def test_a_reconnect_replaces_the_old_connection(
    server: tuple[LocalOcppServer, Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    local, recorder = server
    async with charger(local.url, "CP-A") as (first, old):
        await boot(first)
        async with charger(local.url, "CP-A") as (second, _):
            await old.wait_closed()
            assert (old.close_code, old.close_reason) == (1000, "replaced")
            assert await recorder.next_end() == "CP-A"  # the old session ended ...
            assert (await boot(second)).status == "Accepted"  # ... the new one carries on
            assert len(local.connections) == 1
    assert "OCPP charger CP-A connected again from 127.0.0.1: its previous connection is closed (replaced)" in (
        caplog.text
    )


async def test_a_charger_that_stops_answering_pings_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    hanging = running(ping_interval_s=0.2, ping_timeout_s=0.2)
    async with hanging as (local, recorder), charger(local.url, "CP-A", ping_interval=None) as (point, ws):
        await boot(point)
        ws.transport.pause_reading()  # the charger hangs: the server's pings get no pong
        assert await recorder.next_end() == "CP-A"
        ws.transport.resume_reading()
    assert "OCPP charger CP-A did not answer a ping within 0.2 s" in caplog.text


async def test_an_oversized_frame_closes_that_connection_only(caplog: pytest.LogCaptureFixture) -> None:
    async with running(max_frame_bytes=2048) as (local, recorder), charger(local.url, "CP-B") as (other, _):
        await boot(other)
        async with raw_charger(local.url, "CP-A") as ws:
            await ws.send(json.dumps([2, "big", "DataTransfer", {"vendorId": "x", "data": "y" * 4096}]))
            await ws.wait_closed()
            assert ws.close_code == 1009  # never read, so no message id to answer
        assert await recorder.next_end() == "CP-A"
        assert (await other.call(call.Heartbeat(), suppress=False)).current_time  # CP-B did not notice
        async with charger(local.url, "CP-A") as (again, _):  # the charger may reconnect
            assert (await boot(again)).status == "Accepted"
    assert "OCPP charger CP-A sent a frame over max_frame_bytes (2048): connection closed with 1009" in caplog.text


async def test_a_huge_request_header_is_one_warning_line_not_a_traceback(
    server: tuple[LocalOcppServer, Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    local, _ = server
    caplog.set_level(logging.INFO)
    logged = asyncio.Event()
    seen = logging.Handler()
    seen.emit = lambda record: logged.set()  # type: ignore[method-assign]
    logging.getLogger("websockets.server").addHandler(seen)
    host, port = local.settings.host, local.port
    reader, writer = await asyncio.open_connection(host, port)
    head = f"GET /CP-A HTTP/1.1\r\nHost: {host}\r\nX-Big: {'a' * 50_000}\r\n\r\n"
    writer.write(head.encode())
    await writer.drain()
    with contextlib.suppress(ConnectionError):
        await asyncio.wait_for(reader.read(), 5)  # the server drops the connection
    writer.close()
    try:
        await asyncio.wait_for(logged.wait(), 5)
    finally:
        logging.getLogger("websockets.server").removeHandler(seen)
    lines = [r for r in caplog.records if "handshake" in r.getMessage() or "refused a request" in r.getMessage()]
    assert [r.levelno for r in lines] == [logging.WARNING]
    assert "refused a request from 127.0.0.1" in lines[0].getMessage()
    assert "line too long" in lines[0].getMessage()  # why: what websockets said, in one line
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    async with charger(local.url, "CP-A") as (point, _):  # the server carries on
        assert (await boot(point)).status == "Accepted"


# -- bad frames --------------------------------------------------------------------------------------
Generator = Callable[[random.Random, str], tuple[str | bytes, str | None]]
STATUS = {"connectorId": 1, "errorCode": "NoError", "status": "Available"}


def _frame(*parts: Any) -> str:
    return json.dumps(list(parts))


def _word(rng: random.Random, n: int = 8) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyzXYZ") for _ in range(n))


# Each kind: (frame, expected CALLERROR code or None for "no answer: logged only"), for a message id.
KINDS: dict[str, Generator] = {
    "garbage": lambda rng, mid: ("{" + _word(rng, rng.randint(0, 40)), None),
    "truncated call": lambda rng, mid: (
        _frame(2, mid, "StatusNotification", STATUS)[: rng.randint(len(mid) + 7, 30)],
        "FormationViolation",
    ),
    "number over 4300 digits": lambda rng, mid: (f'[2,"{mid}","Heartbeat",{{"n":{"9" * 5000}}}]', "FormationViolation"),
    "nested too deep": lambda rng, mid: ("[" * 20000 + "]" * 20000, None),
    "not an array": lambda rng, mid: (rng.choice(['{"a":1}', '"text"', "42", "null", "true"]), None),
    "empty array": lambda rng, mid: ("[]", None),
    "no message id": lambda rng, mid: (
        rng.choice([_frame(2), _frame(2, 17, "Heartbeat", {}), _frame(2, None, "Heartbeat", {})]),
        None,
    ),
    "wrong element count": lambda rng, mid: (
        rng.choice([_frame(2, mid), _frame(2, mid, "Heartbeat"), _frame(2, mid, "Heartbeat", {}, 1)]),
        "FormationViolation",
    ),
    "wrong message type": lambda rng, mid: (
        _frame(rng.choice([0, 1, 5, 9, "2", 2.5, True]), mid, "Heartbeat", {}),
        "FormationViolation",
    ),
    "message id too long": lambda rng, mid: (_frame(2, mid, "Heartbeat", {}), "FormationViolation"),  # mid > 36
    "action not a string": lambda rng, mid: (
        _frame(2, mid, rng.choice([[1], 7, None, {"a": 1}]), {}),
        "FormationViolation",
    ),
    "payload not an object": lambda rng, mid: (
        _frame(2, mid, "Heartbeat", rng.choice([[], "x", 1, None])),
        "FormationViolation",
    ),
    "unknown action": lambda rng, mid: (_frame(2, mid, "X" + _word(rng), {}), "NotImplemented"),
    "1.6 action we do not handle": lambda rng, mid: (
        _frame(2, mid, rng.choice(["Reset", "GetConfiguration", "SecurityEventNotification"]), {}),
        "NotSupported",
    ),
    "required field missing": lambda rng, mid: (
        _frame(2, mid, "StatusNotification", {"connectorId": 1, "errorCode": "NoError"}),
        "ProtocolError",
    ),
    "wrong type": lambda rng, mid: (
        _frame(2, mid, "StatusNotification", {**STATUS, "connectorId": "one"}),
        "TypeConstraintViolation",
    ),
    "string too long": lambda rng, mid: (
        _frame(2, mid, "Authorize", {"idTag": "T" * rng.randint(21, 60)}),
        "TypeConstraintViolation",
    ),
    "unknown field": lambda rng, mid: (_frame(2, mid, "Heartbeat", {_word(rng): 1}), "FormationViolation"),
    "value not allowed": lambda rng, mid: (
        _frame(2, mid, "StatusNotification", {**STATUS, "status": _word(rng)}),
        "PropertyConstraintViolation",
    ),
    "empty list": lambda rng, mid: (
        _frame(2, mid, "MeterValues", {"connectorId": 1, "meterValue": []}),
        "OccurenceConstraintViolation",
    ),
    "stray response": lambda rng, mid: (
        rng.choice([_frame(3, mid, {}), _frame(4, mid, "GenericError", "", {}), _frame(3), _frame(4, mid)]),
        None,
    ),
    "binary, not UTF-8": lambda rng, mid: (bytes(rng.randrange(0x80, 0x100) for _ in range(rng.randint(1, 30))), None),
    "a good heartbeat": lambda rng, mid: (_frame(2, mid, "Heartbeat", {}), "result"),
}


def malformed_frames(count: int, seed: int = 20240608) -> list[tuple[str, str, str | bytes, str | None]]:
    """``count`` frames of every kind in a seeded order: (kind, message id, frame, expected answer)."""
    rng = random.Random(seed)
    kinds = list(KINDS)
    frames = []
    for i in range(count):
        kind = kinds[i % len(kinds)] if i < len(kinds) else rng.choice(kinds)
        message_id = f"f{i}".ljust(40, "x") if kind == "message id too long" else f"f{i}"
        frames.append((kind, message_id, *KINDS[kind](rng, message_id)))
    return frames


def test_the_generator_covers_every_kind_and_avoids_real_actions() -> None:
    frames = malformed_frames(1200)
    assert {kind for kind, *_ in frames} == set(KINDS)
    unknown = [json.loads(frame)[2] for kind, _, frame, _ in frames if kind == "unknown action"]
    assert not OCPP16_ACTIONS & set(unknown)


async def test_a_flood_of_bad_frames_is_answered_and_another_charger_is_undisturbed(
    server: tuple[LocalOcppServer, Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    local, recorder = server
    frames = malformed_frames(1200)
    sent = 0
    progress = asyncio.Condition()

    async def flood(ws: ClientConnection) -> None:
        nonlocal sent
        for kind, message_id, frame, expected in frames:
            await ws.send(frame)
            if expected is not None:
                reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
                code = "result" if reply[0] == 3 else reply[2]
                assert (reply[1], code) == (message_id, expected), (kind, frame[:80])
            async with progress:
                sent += 1
                progress.notify_all()

    async def session(point: ChargePoint) -> int:
        """Boot, start, 50 meter values and stop, spread over the flood; returns how many were answered."""
        answered = 0

        async def step(n: int, message: Any) -> Any:
            nonlocal answered
            async with progress:  # step n waits for 100 + 15 n bad frames: the session spans the flood
                await progress.wait_for(lambda: sent >= 100 + 15 * n)
            answer = await point.call(message, suppress=False)
            answered += answer is not None
            return answer

        await step(0, call.BootNotification(charge_point_model="M1", charge_point_vendor="V"))
        transaction_id = (await step(1, call.StartTransaction(2, "TAG-0002", 0, now()))).transaction_id
        for n in range(50):
            await step(2 + n, meter_values(2, transaction_id, 100 * (n + 1)))
        await step(52, call.StopTransaction(5000, now(), transaction_id))
        return answered

    async with raw_charger(local.url, "CP-A") as fuzzed, charger(local.url, "CP-B") as (calm, _):
        async with asyncio.TaskGroup() as both:  # a failure in either ends the other
            both.create_task(flood(fuzzed))
            answered = both.create_task(session(calm))
        assert answered.result() == 53
        await fuzzed.send(_frame(2, "last", "Heartbeat", {}))  # nothing unasked came back in between:
        assert json.loads(await asyncio.wait_for(fuzzed.recv(), 5))[:2] == [3, "last"]  # the next is this
        assert fuzzed.close_code is None and set(local.connections) == {"CP-A", "CP-B"}
    assert {await recorder.next_end(), await recorder.next_end()} == {"CP-A", "CP-B"}
    ours = [r for r in caplog.records if r.name.startswith(LOGGER) and "CP-A: bad frame" in r.getMessage()]
    assert len(ours) == 1  # one line for the flood, not one per frame
    assert "more bad frame(s) on this connection were not logged" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no tracebacks
    assert "9999999999" not in caplog.text  # frames are not echoed into the log
