"""The Modbus engine against simulators built from the same profiles, on real loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import pytest

from adapters.modbus.device import ModbusDevice
from adapters.modbus.profile import ROLES, load_profile, profile_names
from adapters.modbus.simulator import ModbusSimulator
from gateway.domain.errors import DecodeError, DeviceTimeout, DeviceUnavailable
from gateway.domain.model import (
    ChargerSnapshot,
    DeviceFailed,
    Fault,
    FaultKind,
    MeterSnapshot,
    VehicleState,
)
from tests.fixtures.modbus import TEST_VALUES, RecordingSink, StartSimulator, StepClock
from tests.fixtures.net import free_port


def device_for(sim: ModbusSimulator, sink: RecordingSink | None = None, **kwargs: object) -> ModbusDevice:
    options: dict[str, object] = {"poll_interval_s": 0.02, "timeout_s": 0.5, "backoff_max_s": 0.1, **kwargs}
    return ModbusDevice(
        "dev",
        sim.profile,
        host="127.0.0.1",
        port=sim.port,
        sink=sink or RecordingSink(),
        **options,  # type: ignore[arg-type]
    )


def tolerance(sim: ModbusSimulator, role: str) -> float:
    """Half a register step in the role's unit (scale, 10^exponent and scale factor); 0 for floats."""
    spec = sim.profile.values[role]
    if spec.type in ("f32", "f64"):
        return 0.0
    sf = sim.scale_factor(spec.scale_factor) or 0 if spec.scale_factor else 0
    return abs(spec.scale) * 10 ** (spec.exponent + sf) / 2 + 1e-9


async def poll_socket(device: ModbusDevice, socket: int = 1) -> ChargerSnapshot | MeterSnapshot:
    snapshots = await device.poll_once()
    snapshot = snapshots[socket - 1]
    assert not isinstance(snapshot, ChargerSnapshot) or snapshot.socket == socket
    return snapshot


@pytest.mark.parametrize("name", profile_names())
async def test_every_profile_round_trips_through_simulator_and_engine(
    name: str, modbus_simulator: StartSimulator
) -> None:
    sim = await modbus_simulator(name)
    profile = sim.profile
    device = device_for(sim, clock=StepClock())
    try:
        for role, spec in profile.values.items():
            if ROLES[role].kind in ("quantity", "energy"):
                value = TEST_VALUES[role]
                sim.set(role, value[: spec.phases] if isinstance(value, tuple) else value)
        reading = (await poll_socket(device)).reading
        assert reading.measured_at == StepClock().now()
        for role in profile.values:
            if ROLES[role].kind not in ("quantity", "energy"):
                continue
            got, held, want = getattr(reading, role), sim.get(role), TEST_VALUES[role]
            assert got == held, role  # what the engine decodes is exactly what the simulator holds
            if ROLES[role].per_phase:
                want = want[: profile.values[role].phases]  # type: ignore[index]
            if ROLES[role].kind == "energy":
                assert isinstance(got, int), role  # integer Wh
            assert got == pytest.approx(want, rel=1e-6, abs=tolerance(sim, role)), role  # unit and scale
        if profile.kind == "meter":
            return
        for state in dict.fromkeys((profile.values["vehicle_state"].map or {}).values()):
            sim.set("vehicle_state", state)
            snapshot = await poll_socket(device)
            assert isinstance(snapshot, ChargerSnapshot)
            assert snapshot.vehicle_state is state
        if "charging_enabled" in profile.values:
            for enabled in (True, False):
                sim.set("charging_enabled", enabled)
                assert (await poll_socket(device)).charging_enabled is enabled  # type: ignore[union-attr]
        for source in profile.faults.values():
            for code, kind in (source.codes or {}).items():
                if kind == "none" or code == "*":
                    continue
                sim.clear_faults()
                sim.raise_fault(FaultKind(kind))
                snapshot = await poll_socket(device)
                assert any(f.kind is FaultKind(kind) for f in snapshot.faults), kind  # type: ignore[union-attr]
        sim.clear_faults()
        assert (await poll_socket(device)).faults == ()  # type: ignore[union-attr]
    finally:
        device.close()


# Raw register contents as the vendor documents them -> the value the engine must report.
# Independent of the simulator's encoder, so a wrong scale, unit or word order in a profile fails.
GOLDEN = [
    ("eastron-sdm630", "input", 0x48, [0x4144, 0x0000], "energy_wh", 12_250),  # 12.25 kWh, f32 BE
    ("eastron-sdm630", "input", 0x02, [0x4367, 0x0000], "voltage_v", (230.0, 231.0, 230.0)),  # L2 231 V
    ("abb-terra-ac", "holding", 0x4010, [0x0000, 0x3E80], "current_a", (16.0, 0.0, 0.0)),  # 16000 mA
    ("abb-terra-ac", "holding", 0x4018, [0x0000, 0x0906], "voltage_v", (230.0, 231.0, 230.0)),  # L2 2310 x 0.1 V
    ("abb-terra-ac", "holding", 0x400C, [0x0000, 0x0400], "vehicle_state", VehicleState.C),  # C2 charging
    ("abb-terra-ac", "holding", 0x401E, [0x0001, 0x0000], "session_energy_wh", 65_536),
    ("phoenix-ev-eth", "input", 100, [0x0042], "vehicle_state", VehicleState.B),  # "B" in the low byte
    ("phoenix-ev-eth", "input", 120, [0x1C20, 0x0000], "power_w", 7_200.0),  # low word first
    ("phoenix-ev-eth", "holding", 904, [0x0000, 0x0001], "energy_wh", 65_536),
    ("bender-cc613", "holding", 122, [3], "vehicle_state", VehicleState.C),
    ("bender-cc613", "holding", 220, [0xFFFF, 0xFFFF], "power_w", None),  # "invalid" sentinel
    ("bender-cc613", "holding", 212, [0x0000, 0x1F40], "current_a", (8.0, 0.0, 0.0)),  # 8000 mA
    ("bender-cc613", "holding", 730, [0] * 11, "soc_percent", None),  # HR 730 = 0, HR 740 = 0: no vehicle data
    ("bender-cc613", "holding", 730, [57] + [0] * 10, "soc_percent", None),  # HR 740 = 0: not a smart vehicle
    ("bender-cc613", "holding", 730, [57] + [0] * 9 + [1], "soc_percent", 57.0),  # HR 740 = 1: ISO 15118 SoC
    ("bender-cc613", "holding", 730, [0xFFFF] + [0] * 9 + [1], "soc_percent", None),  # above "% 0-100"
    ("eastron-sdm120", "input", 0x48, [0x4144, 0x0000], "energy_wh", 12_250),
    ("carlo-gavazzi-em24", "input", 0x42, [0x3039, 0x0000], "energy_wh", 1_234_500),  # 12345 x 0.1 kWh, LSW first
    ("carlo-gavazzi-em340", "input", 0x33, [0x01F4], "frequency_hz", 50.0),  # 500 x 0.1 Hz
    ("abb-b23", "holding", 0x5000, [0, 0, 0, 0x3039], "energy_wh", 123_450),  # 12345 x 0.01 kWh, u64
    ("abb-b23", "holding", 0x5B14, [0x7FFF, 0xFFFF], "power_w", None),  # signed "NaN"
    ("janitza-umg96rme", "holding", 19068, [0x4974, 0x2400], "energy_wh", 1_000_000),  # f32 Wh
    ("sunspec-203", "holding", 40088, [3000, 0, 0, 0, 0xFFFF], "power_w", 300.0),  # W = 3000, W_SF = -1
    ("sunspec-203", "holding", 40116, [0x0001, 0x0000, 0, 0, 0, 0, 0, 0, 2], "energy_wh", 6_553_600),  # SF 2
    ("sunspec-213", "holding", 40098, [0x45E1, 0x0000], "power_w", 7_200.0),  # f32
    ("alfen-ng9xx", "holding", 1201, [0x4332, 0, 0, 0, 0], "vehicle_state", VehicleState.C),  # "C2"
    ("alfen-ng9xx", "holding", 1201, [0x4331, 0, 0, 0, 0], "vehicle_state", VehicleState.B),  # "C1": no PWM yet
    ("alfen-ng9xx", "holding", 374, [0x409F, 0x4000, 0, 0], "energy_wh", 2_000),  # f64 Wh
    ("heidelberg-ec", "input", 6, [160, 0, 0], "current_a", (16.0, 0.0, 0.0)),  # 0.1 A
    ("webasto-next", "input", 1008, [16_000], "current_a", (16.0, 0.0, 0.0)),  # mA
    ("vestel-evc04", "input", 1036, [0, 1_234], "energy_wh", 123_400),  # 0.1 kWh
    ("schneider-evlink-pro-ac", "holding", 3059, [0x6666, 0x40E6], "power_w", 7_200.0),  # 7.2 kW, LSW first
    ("phoenix-charx", "holding", 1299, [0x4300], "vehicle_state", VehicleState.C),  # "C" in the high byte
    ("phoenix-charx", "holding", 1238, [0, 16_000], "current_a", (16.0, 0.0, 0.0)),  # mA
    ("mennekes-amtron-compact", "holding", 0x0108, [28], "vehicle_state", VehicleState.C),  # C2
    ("mennekes-amtron-hcc3", "input", 781, [0x3039, 0x0000], "session_energy_wh", 12_345),  # LSW first
]


@pytest.mark.parametrize(("name", "table", "address", "words", "role", "expected"), GOLDEN)
async def test_documented_register_contents_decode_to_the_right_units(
    modbus_simulator: StartSimulator,
    name: str,
    table: str,
    address: int,
    words: list[int],
    role: str,
    expected: object,
) -> None:
    sim = await modbus_simulator(name)
    sim.write_registers(table, address, words)  # type: ignore[arg-type]
    device = device_for(sim)
    snapshot = await poll_socket(device)
    device.close()
    got = snapshot.vehicle_state if role == "vehicle_state" else getattr(snapshot.reading, role)  # type: ignore[union-attr]
    assert got == (pytest.approx(expected, rel=1e-6) if isinstance(expected, float | tuple) else expected)


async def test_contiguous_registers_are_read_in_one_request(modbus_simulator: StartSimulator) -> None:
    sim = await modbus_simulator("eastron-sdm630")
    device = device_for(sim)
    await device.poll_once()
    device.close()
    reads = [(r.function_code, r.address, r.count) for r in sim.requests if r.is_read]
    # V and I L1-L3 (0x00-0x0B) are one block; P total alone; Hz, import, export (0x46-0x4B) one block
    assert reads == [(4, 0x00, 12), (4, 0x34, 2), (4, 0x46, 6)]


async def test_gaps_are_bridged_only_where_the_profile_allows(modbus_simulator: StartSimulator) -> None:
    sim = await modbus_simulator("phoenix-ev-eth")  # max_gap_registers = 6 bridges IR 101-106
    device = device_for(sim)
    await device.poll_once()
    device.close()
    assert sorted((r.function_code, r.address, r.count) for r in sim.requests if r.is_read) == [
        (1, 400, 1),  # charging enable coil
        (3, 904, 2),  # energy
        (4, 100, 22),  # state, error code, V, I, P in one read
    ]


BLOCKED = """
id = "blocked-meter"
kind = "meter"
vendor = "Test"
model = "Block limit"
source = "tests"
[modbus]
max_block_registers = 8
request_delay_ms = 1
[values.voltage_v]
table = "holding"
address = 0
type = "u32"
phases = 3
[values.current_a]
table = "holding"
address = 6
type = "u32"
phases = 3
scale = 0.001
[values.energy_wh]
table = "holding"
address = 500
type = "u64"
"""


async def test_block_limit_is_respected(tmp_path: Path, modbus_simulator: StartSimulator) -> None:
    path = tmp_path / "blocked-meter.toml"
    path.write_text(BLOCKED, encoding="utf-8")
    sim = await modbus_simulator(load_profile(path))
    sim.set("current_a", (1.0, 2.0, 3.0))
    sim.set("energy_wh", 2**40)
    device = device_for(sim)
    reading = (await poll_socket(device)).reading
    device.close()
    reads = [(r.address, r.count) for r in sim.requests if r.is_read]
    assert reads == [(0, 8), (8, 4), (500, 4)]
    assert all(count <= 8 for _, count in reads)
    assert reading.current_a == pytest.approx((1.0, 2.0, 3.0))
    assert reading.energy_wh == 2**40


TWIN = """
id = "twin-charger"
kind = "charger"
vendor = "Test"
model = "Two sockets"
source = "tests"
[modbus]
sockets = 2
{sockets}
[values.vehicle_state]
table = "input"
address = 1100
type = "u16"
map = {{ "1" = "A", "2" = "B", "3" = "C" }}
[values.power_w]
table = "input"
address = 1101
type = "u16"
"""


@pytest.mark.parametrize("sockets", ["socket_address_stride = 1000", "socket_unit_ids = [1, 2]"])
async def test_each_socket_gets_its_own_snapshot(
    tmp_path: Path, modbus_simulator: StartSimulator, sockets: str
) -> None:
    path = tmp_path / "twin-charger.toml"
    path.write_text(TWIN.format(sockets=sockets), encoding="utf-8")
    sim = await modbus_simulator(load_profile(path), sockets=2)
    sim.plug_in(socket=2)
    sim.start_charging(3_680, socket=2)
    device = device_for(sim, sockets=2)
    first, second = await device.poll_once()
    device.close()
    assert isinstance(first, ChargerSnapshot) and isinstance(second, ChargerSnapshot)
    assert (first.socket, first.vehicle_state, first.reading.power_w) == (1, VehicleState.A, 0.0)
    assert (second.socket, second.vehicle_state, second.reading.power_w) == (2, VehicleState.C, 3_680.0)


async def test_comm_loss_is_reported_and_recovered(
    modbus_simulator: StartSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="adapters.modbus.device")
    sim = await modbus_simulator("phoenix-ev-eth")
    sim.set("energy_wh", 5_000)
    sink = RecordingSink()
    device = device_for(sim, sink)
    task = asyncio.create_task(device.run())
    try:
        assert (await sink.next(ChargerSnapshot)).reading.energy_wh == 5_000
        await sim.stop()
        failed = await sink.next(DeviceFailed)
        await sink.next(DeviceFailed)  # keeps retrying, and stays quiet about it
        assert failed.device == "dev" and "127.0.0.1" in failed.reason
        assert not task.done()
        await sim.start()  # same port; the device kept its memory
        assert (await sink.next(ChargerSnapshot)).reading.energy_wh == 5_000
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    records = [r for r in caplog.records if r.name == "adapters.modbus.device"]
    # the Site logs the device's loss and return (one line each, tests/integration/test_log_lines.py);
    # the device itself says every failed poll at DEBUG only
    assert [r.levelno for r in records if r.levelno >= logging.INFO] == []
    assert sum("poll failed" in r.getMessage() for r in records if r.levelno == logging.DEBUG) >= 2


async def test_fault_and_state_changes_reach_the_sink(modbus_simulator: StartSimulator) -> None:
    sim = await modbus_simulator("phoenix-ev-eth")
    sink = RecordingSink()
    task = asyncio.create_task(device_for(sim, sink).run())
    try:
        sim.plug_in()
        sim.start_charging(11_000)
        sim.raise_fault(FaultKind.GROUND_FAULT)
        while (snapshot := await sink.next(ChargerSnapshot)).faults == ():
            pass
        assert snapshot.faults == (Fault(FaultKind.GROUND_FAULT, vendor_code="15", info="error_code"),)
        assert snapshot.vehicle_state is VehicleState.C
        sim.raise_fault(10)  # a raw vendor code
        while (snapshot := await sink.next(ChargerSnapshot)).faults[0].vendor_code != "10":
            pass
        assert snapshot.faults[0].kind is FaultKind.POWER_METER
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_refused_connection_is_device_unavailable() -> None:
    device = ModbusDevice(
        "gone", load_profile("bender-cc613"), host="127.0.0.1", port=free_port(), timeout_s=0.5, sink=RecordingSink()
    )
    with pytest.raises(DeviceUnavailable, match=r"gone \(127.0.0.1:\d+\): cannot connect"):
        await device.poll_once()


async def test_silent_device_is_device_timeout(modbus_simulator: StartSimulator) -> None:
    sim = await modbus_simulator("abb-terra-ac")
    device = device_for(sim, timeout_s=0.1)
    sim.stall()
    with pytest.raises(DeviceTimeout, match=r"no answer within 0\.1 s"):
        await device.poll_once()
    sim.resume()
    assert (await device.poll_once())[0].reading.voltage_v == pytest.approx((230.0,) * 3)  # reconnects
    device.close()


async def test_exception_response_is_decode_error(modbus_simulator: StartSimulator) -> None:
    sim = await modbus_simulator("eastron-sdm630")
    device = device_for(sim)
    sim.answer_with_exception = True
    with pytest.raises(DecodeError, match=r"exception 4 \(device_failure\)"):
        await device.poll_once()
    device.close()


async def test_simulator_energy_grows_with_power(modbus_simulator: StartSimulator) -> None:
    meter = await modbus_simulator("eastron-sdm630")
    meter.set("energy_wh", 1_000)
    meter.set("power_w", 3_600.0)
    for _ in range(10):
        meter.tick(0.5)  # 10 x 0.5 Wh, kept exactly although the register holds float32 kWh
    assert meter.get("energy_wh") == 1_005
    charger = await modbus_simulator("abb-terra-ac")
    charger.plug_in()
    charger.start_charging(7_200)
    charger.tick(60)
    assert charger.get("session_energy_wh") == 120
    assert charger.get("current_a") == pytest.approx((7_200 / 3 / 230,) * 3, abs=0.001)
    charger.unplug()
    assert (charger.get("vehicle_state"), charger.get("power_w")) == (VehicleState.A, 0.0)


async def test_simulator_reports_a_port_in_use(modbus_simulator: StartSimulator) -> None:
    running = await modbus_simulator("eastron-sdm630")
    with pytest.raises(OSError):
        await ModbusSimulator("eastron-sdm630").start("127.0.0.1", running.port)
