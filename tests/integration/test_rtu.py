"""Modbus RTU for real: the engine against pymodbus RTU servers on a socat pty pair and over TCP.

The serial tests need socat (``.ci/run`` installs it); without it they fail, they do not skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator

import pytest

from adapters.modbus.device import ModbusDevice
from adapters.modbus.profile import ROLES
from adapters.modbus.simulator import ModbusSimulator
from adapters.modbus.transport import ModbusLine, ModbusLines, SerialTransport, TcpTransport
from gateway.app import Gateway
from gateway.config import parse_config
from gateway.domain.errors import DecodeError, DeviceError
from gateway.domain.model import ChargerSnapshot, DeviceFailed, FaultKind, MeterSnapshot
from tests.fixtures.modbus import TEST_VALUES, RecordingSink
from tests.fixtures.net import free_port
from tests.fixtures.serial import PtyPair

TIMEOUT_S = 0.5


@pytest.fixture
async def simulators() -> AsyncIterator[list[ModbusSimulator]]:
    """Simulators a test starts; all stopped afterwards (before socat goes away)."""
    started: list[ModbusSimulator] = []
    yield started
    for sim in started:
        await sim.stop()


def device_on(line: ModbusLine, sim: ModbusSimulator, name: str = "dev", unit_id: int | None = None) -> ModbusDevice:
    """The engine for ``sim`` on ``line``; ``unit_id`` None: the profile's default, as the simulator's."""
    return ModbusDevice(name, sim.profile, line=line, unit_id=unit_id, timeout_s=TIMEOUT_S, sink=RecordingSink())


def fill(sim: ModbusSimulator) -> None:
    """Every mapped quantity, a state, a fault: what the test then expects to read back."""
    for role in sim.profile.values:
        if ROLES[role].kind in ("quantity", "energy") and role in TEST_VALUES:
            sim.set(role, TEST_VALUES[role])
    if sim.profile.kind == "charger":
        sim.plug_in()
        sim.start_charging(6_543.0)
        sim.raise_fault(FaultKind.OTHER)


def assert_reads_what_the_simulator_holds(snapshot: ChargerSnapshot | MeterSnapshot, sim: ModbusSimulator) -> None:
    reading = snapshot.reading
    for role in sim.profile.values:
        if ROLES[role].kind in ("quantity", "energy"):
            assert getattr(reading, role) == pytest.approx(sim.get(role)), role
    if isinstance(snapshot, ChargerSnapshot):
        assert snapshot.vehicle_state == sim.get("vehicle_state")
        assert snapshot.faults == tuple(sim.faults())
        assert snapshot.faults


@pytest.mark.parametrize("name", ["eastron-sdm630", "phoenix-ev-eth"])
async def test_every_mapped_value_reads_the_same_over_rtu(
    name: str, pty_pair: PtyPair, simulators: list[ModbusSimulator]
) -> None:
    sim = ModbusSimulator(name)
    fill(sim)
    # 8N1: a Linux pty keeps no parity bit and refuses parity once set (make_client's unit test covers E/O)
    await sim.start_serial(pty_pair.device_end, baudrate=19200)
    simulators.append(sim)
    line = ModbusLine(SerialTransport(pty_pair.gateway_end, baudrate=19200), TIMEOUT_S)
    device = device_on(line, sim)
    try:
        [snapshot] = await device.poll_once()
    finally:
        device.close()
    assert_reads_what_the_simulator_holds(snapshot, sim)
    assert {r.unit_id for r in sim.requests} == {sim.profile.modbus.unit_id}
    assert not line.is_open  # the last user let go of the port


async def test_two_stations_on_one_bus_share_the_line_and_take_turns(
    pty_pair: PtyPair, simulators: list[ModbusSimulator]
) -> None:
    meter = ModbusSimulator("eastron-sdm630", unit_id=1)
    charger = ModbusSimulator("abb-terra-ac", unit_id=2)
    fill(meter)
    fill(charger)
    await meter.start_serial(pty_pair.device_end, bus_with=[charger])
    simulators.append(meter)
    lines = ModbusLines()
    bus = SerialTransport(pty_pair.gateway_end)
    line = lines.line(bus, TIMEOUT_S)
    assert lines.line(bus, TIMEOUT_S) is line  # the registry gives every device on the port the same line
    devices = [device_on(line, meter, "meter", 1), device_on(line, charger, "charger", 2)]
    try:
        for round_ in range(15):  # both devices poll at the same time, over and over
            meter.set("energy_wh", 1_000_000 + round_)
            charger.set("power_w", 1_000.0 + round_)
            [meter_snapshot], [charger_snapshot] = await asyncio.gather(*(d.poll_once() for d in devices))
            assert meter_snapshot.reading.energy_wh == 1_000_000 + round_
            assert charger_snapshot.reading.power_w == 1_000.0 + round_
        assert_reads_what_the_simulator_holds(meter_snapshot, meter)
        assert_reads_what_the_simulator_holds(charger_snapshot, charger)
    finally:
        for device in devices:
            device.close()
    assert line.connects == 1  # one port, opened once, for both
    per_poll = {"meter": len(devices[0].read_blocks), "charger": len(devices[1].read_blocks)}
    assert len(meter.requests) == 15 * per_poll["meter"]  # nothing garbled, nothing repeated
    assert len(charger.requests) == 15 * per_poll["charger"]
    assert {r.unit_id for r in meter.requests} == {1} and {r.unit_id for r in charger.requests} == {2}


async def test_a_failing_station_does_not_cut_off_the_bus(pty_pair: PtyPair, simulators: list[ModbusSimulator]) -> None:
    meter = ModbusSimulator("eastron-sdm630", unit_id=1)
    charger = ModbusSimulator("abb-terra-ac", unit_id=2)
    await meter.start_serial(pty_pair.device_end, bus_with=[charger])
    simulators.append(meter)
    line = ModbusLines().line(SerialTransport(pty_pair.gateway_end), TIMEOUT_S)
    meter_device, charger_device = device_on(line, meter, "meter", 1), device_on(line, charger, "charger", 2)
    try:
        await asyncio.gather(meter_device.poll_once(), charger_device.poll_once())
        charger.answer_with_exception = True
        results = await asyncio.gather(meter_device.poll_once(), charger_device.poll_once(), return_exceptions=True)
        assert isinstance(results[1], DecodeError) and "unit 2" in str(results[1])
        assert line.is_open  # the charger let go; the meter still uses the port
        meter.set("energy_wh", 4_242)
        [snapshot] = await meter_device.poll_once()
        assert snapshot.reading.energy_wh == 4_242
        charger.answer_with_exception = False
        await charger_device.poll_once()
    finally:
        meter_device.close()
        charger_device.close()
    assert line.connects == 1 and not line.is_open


async def test_rtu_over_tcp_through_a_serial_gateway(simulators: list[ModbusSimulator]) -> None:
    sim = ModbusSimulator("phoenix-ev-eth")
    fill(sim)
    await sim.start("127.0.0.1", free_port(), framer="rtu")
    simulators.append(sim)
    device = device_on(ModbusLine(TcpTransport("127.0.0.1", sim.port, framer="rtu"), TIMEOUT_S), sim)
    try:
        [snapshot] = await device.poll_once()
    finally:
        device.close()
    assert_reads_what_the_simulator_holds(snapshot, sim)
    # The framing is real: a Modbus TCP (MBAP) master gets no answer it can use from the same port.
    mbap = ModbusDevice("mbap", sim.profile, host="127.0.0.1", port=sim.port, timeout_s=0.2, sink=RecordingSink())
    with pytest.raises(DeviceError):
        await mbap.poll_once()
    mbap.close()


async def test_gateway_puts_devices_of_one_port_on_one_line(
    pty_pair: PtyPair, simulators: list[ModbusSimulator]
) -> None:
    meter = ModbusSimulator("eastron-sdm630", unit_id=1)
    charger = ModbusSimulator("abb-terra-ac", unit_id=3)
    fill(meter)
    fill(charger)
    await meter.start_serial(pty_pair.device_end, baudrate=38400, bus_with=[charger])
    simulators.append(meter)
    serial = {"serial": pty_pair.gateway_end, "baudrate": 38400, "timeout_s": TIMEOUT_S}
    config = parse_config(
        {
            "site": {"id": "rtu", "state_dir": tempfile.mkdtemp(prefix="rtu-state-")},
            "status_page": {"port": free_port()},
            "upstream": {"url": "ws://127.0.0.1:1/ocpp", "charge_point_id": "GW"},
            "chargers": [{"name": "wallbox", "profile": "abb-terra-ac", "unit_id": 3, "connectors": [1], **serial}],
            "meters": [{"name": "grid", "profile": "eastron-sdm630", "connector": 0, **serial}],
        }
    )
    gateway = Gateway.build(config)
    charger_device, meter_device = gateway.devices
    try:
        results = await asyncio.gather(charger_device.poll_once(), meter_device.poll_once())
    finally:
        for device in gateway.devices:
            device.close()
    assert_reads_what_the_simulator_holds(results[0][0], charger)
    assert_reads_what_the_simulator_holds(results[1][0], meter)


async def test_a_station_that_goes_quiet_is_reported_and_recovered(
    pty_pair: PtyPair, simulators: list[ModbusSimulator]
) -> None:
    sim = ModbusSimulator("phoenix-ev-eth")
    sim.set("energy_wh", 7_000)
    await sim.start_serial(pty_pair.device_end)
    sink = RecordingSink()
    line = ModbusLine(SerialTransport(pty_pair.gateway_end), 0.2)
    device = ModbusDevice(
        "quiet", sim.profile, line=line, poll_interval_s=0.02, timeout_s=0.2, backoff_max_s=0.05, sink=sink
    )
    task = asyncio.create_task(device.run())
    try:
        assert (await sink.next(ChargerSnapshot)).reading.energy_wh == 7_000
        await sim.stop()  # on a bus, a dead station is silence, not a refused connection
        failed = await sink.next(DeviceFailed)
        assert "no answer within 0.2 s" in failed.reason and pty_pair.gateway_end in failed.reason
        await sim.start_serial(pty_pair.device_end)
        simulators.append(sim)
        assert (await sink.next(ChargerSnapshot)).reading.energy_wh == 7_000
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert not line.is_open
