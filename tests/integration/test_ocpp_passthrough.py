"""Passthrough chargers: relayed to a CSMS (the DemoCsms, or a raw websockets stub) under their own identity."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action, RemoteStartStopStatus
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from adapters.demo_csms.csms import DemoCsms
from adapters.ocpp_local.passthrough import CSMS_AWAY, Direction, PassthroughRelays
from adapters.ocpp_local.server import LocalOcppServer
from gateway.app import Gateway
from gateway.config import OcppChargerConfig, OcppServerConfig, parse_config
from gateway.domain.errors import ConfigError
from tests.fixtures.net import free_port
from tests.integration.test_ocpp_local_server import basic, now

PASSWORD = "charger-to-gateway"
CSMS_PASSWORD = "gateway-to-csms"
CHARGERS = [
    OcppChargerConfig(
        identity="CP-P", password=PASSWORD, mode="passthrough", csms_password=CSMS_PASSWORD, connectors=[1]
    ),
    OcppChargerConfig(identity="CP-M", password=PASSWORD, connectors=[2]),  # merged: not served yet
]
OCPP16 = [Subprotocol("ocpp1.6")]
LOGGER = "adapters.ocpp_local"
Frame = tuple[str, Direction, int, str | None, dict[str, Any]]


class Observer:
    """The relay's ``on_frame``: records what it was told; tests wait on it."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self._arrived = asyncio.Event()

    def __call__(self, *frame: Any) -> None:
        self.frames.append(frame)  # type: ignore[arg-type]
        self._arrived.set()
        self._arrived = asyncio.Event()

    async def wait_for(self, predicate: Callable[[Frame], bool]) -> Frame:
        async with asyncio.timeout(5):
            while True:
                arrived = self._arrived
                if found := next((f for f in self.frames if predicate(f)), None):
                    return found
                await arrived.wait()


@asynccontextmanager
async def gateway(csms_url: str) -> AsyncIterator[tuple[LocalOcppServer, Observer]]:
    observer = Observer()
    relays = PassthroughRelays(csms_url, CHARGERS, on_frame=observer)
    server = LocalOcppServer(OcppServerConfig(port=free_port()), CHARGERS, None, passthrough=relays)
    await server.start()
    try:
        yield server, observer
    finally:
        await server.stop()


@pytest.fixture
async def csms() -> AsyncIterator[DemoCsms]:
    demo = DemoCsms(port=0, password=CSMS_PASSWORD)
    await demo.start()
    try:
        yield demo
    finally:
        await demo.stop()


class Charger(ChargePoint):
    """A charger simulated with the ocpp library; accepts a remote start."""

    remote_starts: list[str]

    @on(Action.remote_start_transaction)
    def on_remote_start(self, id_tag: str, **_: Any) -> call_result.RemoteStartTransaction:
        self.remote_starts.append(id_tag)
        return call_result.RemoteStartTransaction(status=RemoteStartStopStatus.accepted)


@asynccontextmanager
async def charger(url: str, identity: str = "CP-P") -> AsyncIterator[tuple[Charger, ClientConnection]]:
    async with connect(f"{url}/{identity}", additional_headers=basic(identity, PASSWORD), subprotocols=OCPP16) as ws:
        point = Charger(identity, ws, response_timeout=5)
        point.remote_starts = []
        task = asyncio.create_task(point.start())
        try:
            yield point, ws
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await task


async def closed_code(ws: ClientConnection) -> int | None:
    async with asyncio.timeout(2):  # "promptly"
        await ws.wait_closed()
    return ws.close_code


# -- relaying a charger to the DemoCsms ------------------------------------------------------------
async def test_a_whole_session_reaches_the_csms_unchanged_under_the_chargers_identity(csms: DemoCsms) -> None:
    async with gateway(csms.url) as (local, observer), charger(local.url) as (point, _):
        sample = {
            "value": "1500",
            "measurand": "Energy.Active.Import.Register",
            "unit": "Wh",
            "context": "Sample.Periodic",
        }
        boot = await point.call(call.BootNotification("Model-X", "Vendor-Y", firmware_version="1.2.3"), suppress=False)
        assert boot.status == "Accepted"
        await point.call(call.StatusNotification(1, "NoError", "Preparing", info="cable in"), suppress=False)
        started = await point.call(call.StartTransaction(1, "TAG-0001", 1000, now()), suppress=False)
        assert started.transaction_id == csms.last_transaction_id  # the CSMS's own id, not renumbered
        tx = started.transaction_id
        await point.call(call.MeterValues(1, [{"timestamp": now(), "sampledValue": [sample]}], tx), suppress=False)
        await point.call(call.StopTransaction(2000, now(), tx, reason="EVDisconnected"), suppress=False)

        sent = [(action, payload) for _, d, kind, action, payload in observer.frames if kind == 2 and d == "to_csms"]
        assert [action for action, _ in sent] == [
            "BootNotification",
            "StatusNotification",
            "StartTransaction",
            "MeterValues",
            "StopTransaction",
        ]
        assert [(m.action, m.payload) for m in csms.received] == sent  # each payload exactly as the charger sent it
        assert {m.charge_point_id for m in csms.received} == {"CP-P"}
        answers = [(a, p) for _, d, kind, a, p in observer.frames if kind == 3 and d == Direction.TO_CHARGER]
        assert [a for a, _ in answers] == [action for action, _ in sent]  # each answer named by its CALL's action
        assert answers[2][1]["transactionId"] == tx


async def test_a_csms_call_reaches_the_charger_and_its_answer_comes_back(csms: DemoCsms) -> None:
    async with gateway(csms.url) as (local, observer), charger(local.url) as (point, _):
        await point.call(call.Heartbeat(), suppress=False)  # the CSMS session is up once this is answered
        result = await csms.call("CP-P", call.RemoteStartTransaction(id_tag="TAG-0002", connector_id=1))
        assert result.status == "Accepted" and point.remote_starts == ["TAG-0002"]
        asked = await observer.wait_for(lambda f: f[1] == Direction.TO_CHARGER and f[2] == 2)
        assert asked == ("CP-P", "to_charger", 2, "RemoteStartTransaction", {"idTag": "TAG-0002", "connectorId": 1})
        answered = await observer.wait_for(lambda f: f[1] == Direction.TO_CSMS and f[2] == 3)
        assert answered == ("CP-P", "to_csms", 3, "RemoteStartTransaction", {"status": "Accepted"})


async def test_csms_away_closes_the_chargers_socket_until_it_is_back(
    csms: DemoCsms, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    async with gateway(csms.url) as (local, _):
        async with charger(local.url) as (point, ws):
            await point.call(call.Heartbeat(), suppress=False)
            await csms.stop()
            assert await closed_code(ws) == CSMS_AWAY == 1013
        assert "CP-P (passthrough): the CSMS at" in caplog.text and "closed the connection (1001" in caplog.text
        for _ in range(2):  # while it is away, every reconnect is accepted and then closed the same way
            async with charger(local.url) as (_, ws):
                assert await closed_code(ws) == 1013
        cannot = [r for r in caplog.records if "cannot reach the CSMS" in r.getMessage()]
        assert [r.levelname for r in cannot] == ["DEBUG", "DEBUG"]  # the WARNING was the drop
        await csms.start()  # same port
        async with charger(local.url) as (point, _):
            assert (await point.call(call.BootNotification("M", "V"), suppress=False)).status == "Accepted"
            assert "CP-P (passthrough): the CSMS at" in caplog.text and "is reachable again" in caplog.text
        assert PASSWORD not in caplog.text and CSMS_PASSWORD not in caplog.text


async def test_an_unreachable_csms_is_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    async with gateway(f"ws://127.0.0.1:{free_port()}/ocpp") as (local, _):
        for _ in range(3):
            async with charger(local.url) as (_, ws):
                assert await closed_code(ws) == 1013
                assert ws.close_reason == "CSMS unavailable"
    cannot = [r for r in caplog.records if "cannot reach the CSMS" in r.getMessage()]
    assert [r.levelname for r in cannot] == ["WARNING", "DEBUG", "DEBUG"]
    assert "its connection is closed with 1013 CSMS unavailable; it keeps its transactions" in cannot[0].getMessage()


# -- bytes as received, against a raw CSMS ---------------------------------------------------------
class RawCsms:
    """A websockets server standing in for a CSMS: records every message and request, sends what it is told."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[str | bytes] = asyncio.Queue()
        self.connections: asyncio.Queue[ServerConnection] = asyncio.Queue()
        self.closed: asyncio.Queue[int | None] = asyncio.Queue()

    async def handle(self, connection: ServerConnection) -> None:
        self.connections.put_nowait(connection)
        with contextlib.suppress(ConnectionClosed):
            async for message in connection:
                self.messages.put_nowait(message)
        self.closed.put_nowait(connection.close_code)

    async def next(self, queue: asyncio.Queue[Any]) -> Any:
        return await asyncio.wait_for(queue.get(), 5)


async def test_frames_are_relayed_byte_for_byte_both_ways() -> None:
    stub = RawCsms()
    async with serve(stub.handle, "127.0.0.1", 0, subprotocols=OCPP16) as csms_server:
        port = csms_server.sockets[0].getsockname()[1]
        async with gateway(f"ws://127.0.0.1:{port}/ocpp/") as (local, observer):
            headers = basic("CP-P", PASSWORD)
            async with connect(f"{local.url}/CP-P", additional_headers=headers, subprotocols=OCPP16) as ws:
                upstream = await stub.next(stub.connections)
                assert upstream.request.path == "/ocpp/CP-P" and upstream.subprotocol == "ocpp1.6"
                assert upstream.request.headers["Authorization"] == basic("CP-P", CSMS_PASSWORD)["Authorization"]
                odd = [
                    '[2 ,  "id-1",\t"Heartbeat" , { } ]',
                    '[2,"id-2","StatusNotification",{"status":"Available","errorCode":"NoError","connectorId":1}]',
                    '[2,"id-3","DataTransfer",{"vendorId":"Grüße \\u00fc","data":"1.50e+3"}]',
                    "not json at all {",
                ]
                for frame in odd:
                    await ws.send(frame)
                    assert await stub.next(stub.messages) == frame
                reply = '[3, "id-1" ,{"currentTime" :"2024-01-01T00:00:00.000+00:00"}  ]'
                await upstream.send(reply)
                assert await asyncio.wait_for(ws.recv(), 5) == reply
                await ws.send(b"\x00binary stays binary")
                assert await stub.next(stub.messages) == b"\x00binary stays binary"
            assert await stub.next(stub.closed) == 1000  # the charger went: the CSMS side is closed too
        kinds = [(f[1], f[2], f[3]) for f in observer.frames]
        assert kinds == [
            ("to_csms", 2, "Heartbeat"),
            ("to_csms", 2, "StatusNotification"),
            ("to_csms", 2, "DataTransfer"),
            ("to_charger", 3, "Heartbeat"),
        ]
        assert observer.frames[1][4] == {"status": "Available", "errorCode": "NoError", "connectorId": 1}


# -- what is not served, and the wiring ------------------------------------------------------------
async def test_a_merged_charger_is_refused_with_503_and_logged_once(
    csms: DemoCsms, caplog: pytest.LogCaptureFixture
) -> None:
    async with gateway(csms.url) as (local, _):
        for _ in range(2):
            with pytest.raises(InvalidStatus) as caught:
                async with connect(
                    f"{local.url}/CP-M", additional_headers=basic("CP-M", PASSWORD), subprotocols=OCPP16
                ):
                    pass
            assert caught.value.response.status_code == 503
        with pytest.raises(InvalidStatus) as caught:  # credentials are still checked first
            async with connect(f"{local.url}/CP-P", additional_headers=basic("CP-P", "wrong"), subprotocols=OCPP16):
                pass
        assert caught.value.response.status_code == 401
    said = [
        r for r in caplog.records if r.levelno >= logging.WARNING and "merged mode is not available yet" in r.message
    ]
    assert [r.message for r in said] == [
        "OCPP charger CP-M: merged mode is not available yet: its connections are refused with HTTP 503"
    ]
    assert csms.connections == 0


def config_data(tmp_path: Path, **charger: Any) -> dict[str, Any]:
    return {
        "site": {"id": "s1", "state_dir": str(tmp_path)},
        "status_page": {"port": free_port()},
        "upstream": {"url": "ws://127.0.0.1:9/ocpp", "charge_point_id": "SITE-1"},
        "ocpp_chargers": [{"identity": "CP-P", "mode": "passthrough", "connectors": [1], **charger}],
    }


def test_run_serves_the_passthrough_chargers(tmp_path: Path) -> None:
    gateway = Gateway.build(parse_config(config_data(tmp_path, csms_password="s3cret")))
    assert gateway.ocpp_server is not None
    assert [c.identity for c in gateway.ocpp_server.chargers] == ["CP-P"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"mode": "merged", "csms_password": "x"}, 'csms_password is only used with mode = "passthrough"'),
        ({"identity": "site-1"}, "'site-1' is upstream.charge_point_id, the site's own identity at the CSMS"),
    ],
)
def test_config_refuses_what_passthrough_cannot_do(tmp_path: Path, change: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config_data(tmp_path, **change))
    key, reason = caught.value.problems[0]
    assert key.startswith("ocpp_chargers[0]") and expected in reason
