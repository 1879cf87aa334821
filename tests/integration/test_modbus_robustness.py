"""Devices that refuse optional registers or answer garbage: values go unknown or polls fail, nothing crashes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Iterable
from types import TracebackType

import pytest

from adapters.modbus.device import ModbusDevice
from adapters.modbus.errors import ExceptionResponse
from adapters.modbus.profile import load_profile
from adapters.modbus.simulator import SimRequest
from gateway.domain.errors import DecodeError, DeviceError, DeviceTimeout
from gateway.domain.model import ChargerSnapshot, DeviceFailed, MeterSnapshot
from tests.fixtures.modbus import RecordingSink, StartSimulator, engine_for

WARNINGS = logging.WARNING


def reads_of(requests: Iterable[SimRequest], address: int) -> int:
    """How many read requests covered ``address``."""
    return sum(1 for r in requests if r.is_read and r.address <= address < r.address + r.count)


async def test_a_refused_optional_value_is_unknown_and_warned_about_once(
    modbus_simulator: StartSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="adapters.modbus.reads")
    sim = await modbus_simulator("bender-cc613")  # HR 730 "EV Battery State" is optional
    sim.set("soc_percent", 57.0)
    sim.set("energy_wh", 42_000)
    sim.refuse("soc_percent")
    device = engine_for(sim)
    try:
        first = (await device.poll_once())[0]
        assert first.reading.soc_percent is None
        assert first.reading.energy_wh == 42_000 and first.reading.voltage_v == pytest.approx((230.0,) * 3)
        asked = reads_of(sim.requests, 730)
        second = (await device.poll_once())[0]
        assert second.reading.soc_percent is None
        assert reads_of(sim.requests, 730) == asked  # left out until the retry time
        device.optional_retry_s = 0.0
        await device.poll_once()  # tried again, still refused: no second warning
        assert reads_of(sim.requests, 730) > asked
        sim.refuse("soc_percent", refused=False)
        assert (await device.poll_once())[0].reading.soc_percent == 57.0
    finally:
        device.close()
    warnings = [r for r in caplog.records if r.levelno >= WARNINGS]
    assert len(warnings) == 1
    assert "values.soc_percent is not available" in warnings[0].getMessage()
    assert "illegal_address" in warnings[0].getMessage()
    assert any("values.soc_percent is available again" in r.getMessage() for r in caplog.records)


async def test_an_optional_value_inside_a_merged_read_does_not_take_its_neighbours_along(
    modbus_simulator: StartSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    sim = await modbus_simulator("bender-cc613")  # HR 212-227: currents, energy, power, voltages in one read
    sim.start_charging(6_900)
    sim.set("energy_wh", 1_234)
    sim.refuse("power_w")  # legacy firmware without the power register
    device = engine_for(sim)
    try:
        reading = (await device.poll_once())[0].reading
        assert reading.power_w is None
        assert reading.energy_wh == 1_234
        assert reading.current_a == pytest.approx((10.0, 10.0, 10.0), abs=0.001)
        assert reading.voltage_v == pytest.approx((230.0,) * 3)
        before = len(sim.requests)
        await device.poll_once()
        blocks = sorted((r.address, r.count) for r in list(sim.requests)[before:])
        assert {(212, 8), (222, 6)} <= set(blocks)  # re-planned around the refused register 220-221
        assert not any(address <= 220 < address + count for address, count in blocks)
    finally:
        device.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= WARNINGS]
    assert len(warnings) == 1 and "values.power_w is not available" in warnings[0]


async def test_a_refused_required_value_fails_the_poll(modbus_simulator: StartSimulator) -> None:
    sim = await modbus_simulator("bender-cc613")
    sim.refuse("energy_wh")  # not optional: the profile does not fit this device
    device = engine_for(sim)
    with pytest.raises(ExceptionResponse, match=r"exception 2 \(illegal_address\)") as info:
        await device.poll_once()
    assert isinstance(info.value, DecodeError) and info.value.code == 2
    device.close()


async def test_a_charger_socket_keeps_working_when_another_value_is_refused(modbus_simulator: StartSimulator) -> None:
    sim = await modbus_simulator("phoenix-charx", sockets=2)  # SoC (+264) is optional
    sim.plug_in(socket=2)
    sim.start_charging(3_680, socket=2)
    sim.refuse("soc_percent", socket=2)
    device = engine_for(sim, sockets=2)
    first, second = await device.poll_once()
    device.close()
    assert isinstance(second, ChargerSnapshot) and second.reading.soc_percent is None
    assert second.reading.power_w == pytest.approx(3_680.0)
    assert first.reading.soc_percent == 0.0  # socket 1 answers its own SoC register


class GarbageDevice:
    """A Modbus TCP peer that answers every read in a broken way (``mode``), or correctly ("ok")."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> GarbageDevice:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                tid, _pid, length, unit = struct.unpack(">HHHB", await reader.readexactly(7))
                function, _address, count = struct.unpack(">BHH", await reader.readexactly(length - 1))
                writer.write(self._answer(tid, unit, function, count))
                await writer.drain()
        writer.close()

    def _answer(self, tid: int, unit: int, function: int, count: int) -> bytes:
        if self.mode == "junk":
            return b"\xde\xad\xbe\xef" * 3
        registers = {"short": count - 1, "long": count + 1}.get(self.mode, count)
        function = {3: 4, 4: 3}[function] if self.mode == "function" else function
        unit = unit + 1 if self.mode == "unit" else unit
        pdu = bytes([function, registers * 2]) + b"\x00\x00" * registers
        return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


@pytest.mark.parametrize(
    ("mode", "error", "message"),
    [
        ("short", DecodeError, "got 11 input registers instead of 12"),
        ("long", DecodeError, "got 13 input registers instead of 12"),
        ("function", DecodeError, "the answer is for function 3, not 4"),
        ("unit", DeviceTimeout, "no answer within 0.2 s"),  # pymodbus drops answers from another unit
        ("junk", DeviceError, "junk"),
    ],
)
async def test_garbage_answers_fail_the_poll_cleanly(mode: str, error: type[Exception], message: str) -> None:
    async with GarbageDevice(mode) as peer:
        device = ModbusDevice(
            "junk",
            load_profile("eastron-sdm630"),
            host="127.0.0.1",
            port=peer.port,
            timeout_s=0.2,
            sink=RecordingSink(),
        )
        with pytest.raises(error, match=message):
            await device.poll_once()
        device.close()


async def test_run_survives_garbage_and_recovers() -> None:
    async with GarbageDevice("short") as peer:
        sink = RecordingSink()
        device = ModbusDevice(
            "junk",
            load_profile("eastron-sdm630"),
            host="127.0.0.1",
            port=peer.port,
            timeout_s=0.2,
            poll_interval_s=0.02,
            backoff_max_s=0.05,
            sink=sink,
        )
        task = asyncio.create_task(device.run())
        try:
            failed = await sink.next(DeviceFailed)
            assert "instead of 12" in failed.reason
            peer.mode = "function"
            await sink.next(DeviceFailed)
            peer.mode = "ok"
            snapshot = await sink.next(MeterSnapshot)
            assert snapshot.reading.energy_wh == 0
            assert not task.done()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_undecodable_registers_fail_the_poll(modbus_simulator: StartSimulator) -> None:
    sim = await modbus_simulator("alfen-ng9xx")
    sim.write_registers("holding", 1201, [0xFFFF] * 5)  # "Mode 3 state" that is not text
    device = engine_for(sim)
    with pytest.raises(DecodeError, match="cannot decode the registers"):
        await device.poll_once()
    device.close()


class CancelTurnedTimeout(ModbusDevice):
    """A poll in which the bus library turns our cancellation into a timeout, as Python 3.11's
    ``asyncio.wait_for`` inside pymodbus can when the cancel lands just as the answer does (a race
    that cannot be timed on purpose, so it is played here)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.polling = asyncio.Event()
        self.polls = 0

    async def poll_once(self) -> list:  # type: ignore[override]
        self.polls += 1
        if self.polls == 1:
            self.polling.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()  # cancelled here ...
        raise DeviceTimeout("no answer within 0.1 s")  # ... and reported as a timeout


async def test_a_cancellation_reported_as_a_timeout_still_ends_the_poll_loop() -> None:
    device = CancelTurnedTimeout(
        "dev", load_profile("eastron-sdm630"), host="127.0.0.1", port=1, sink=RecordingSink(), poll_interval_s=0.05
    )
    task = asyncio.create_task(device.run())
    await asyncio.wait_for(device.polling.wait(), timeout=5)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=5)
    assert done, f"the poll loop ran on after its cancellation ({device.polls} polls)"
    assert device.polls == 1
