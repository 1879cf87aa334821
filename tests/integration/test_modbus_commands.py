"""Current limit, enable and watchdog: the engine writes, the simulated charger reacts (real sockets)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from adapters.modbus.codec import TYPES, encode_raw
from adapters.modbus.layout import DeviceMap
from adapters.modbus.profile import Profile, load_profile, profile_names
from adapters.modbus.simulator import ModbusSimulator
from gateway.domain.errors import CommandRejected, DeviceUnavailable
from gateway.domain.model import ChargerSnapshot, DeviceFailed, VehicleState
from tests.fixtures.modbus import RecordingSink, StartSimulator, engine_for
from tests.fixtures.net import free_port

CHARGERS = [n for n in profile_names() if load_profile(n).writes.current_limit is not None]
WATCHDOGS = [n for n in profile_names() if load_profile(n).watchdog is not None]
C, B = VehicleState.C, VehicleState.B


def limit_words(
    profile: Profile, amps: float, socket: int, sockets: int
) -> tuple[tuple[str, int, int, int], list[int]]:
    """Where the current limit lives for ``socket`` and the words the vendor documents for ``amps``."""
    limit = profile.writes.current_limit
    assert limit is not None and limit.resolution_a is not None
    spec = limit.register()
    loc = DeviceMap(profile, sockets=sockets).locations(spec, socket)[0]
    raw = float(amps) if TYPES[spec.type or "u16"].kind == "float" else round(amps / limit.resolution_a)
    return (loc.table, loc.address, loc.width, loc.unit_id), encode_raw(spec, raw)


def expected_power_w(sim: ModbusSimulator, amps: float, wanted_w: float) -> float:
    phases = sim.profile.values["current_a"].phases if "current_a" in sim.profile.values else 1
    volts = sim.profile.simulator.initial.get("voltage_v", 230.0)
    return min(wanted_w, amps * volts * phases)


@pytest.mark.parametrize("name", CHARGERS)
async def test_limit_and_enable_change_the_simulated_charger(name: str, modbus_simulator: StartSimulator) -> None:
    profile = load_profile(name)
    sockets = min(profile.sockets, 2)
    socket = sockets  # the last socket: its own unit id or address offset
    sim = await modbus_simulator(profile, sockets=sockets)
    device = engine_for(sim, sockets=sockets)
    limit = profile.writes.current_limit
    assert limit is not None
    sim.start_charging(22_000, socket=socket)

    def state() -> VehicleState | None:
        return sim.get("vehicle_state", socket)  # type: ignore[return-value]

    try:
        await device.set_current_limit_a(10.0, socket=socket)
        await sim.wait_for(lambda: sim.offered_current_a(socket) == pytest.approx(10.0))
        (table, address, count, unit_id), words = limit_words(profile, 10.0, socket, sockets)
        assert sim.read_registers(table, address, count, unit_id=unit_id) == words  # type: ignore[arg-type]
        assert state() is C
        if "power_w" in profile.values:
            assert sim.get("power_w", socket) == pytest.approx(expected_power_w(sim, 10.0, 22_000), rel=1e-3)
        snapshot = (await device.poll_once())[socket - 1]
        assert isinstance(snapshot, ChargerSnapshot) and snapshot.vehicle_state is C
        if "offered_current_a" in profile.values:
            assert snapshot.reading.offered_current_a == pytest.approx(10.0)

        await device.set_enabled(False, socket=socket)
        await sim.wait_for(lambda: state() is B)
        if "power_w" in profile.values:
            assert sim.get("power_w", socket) == 0
        await device.set_enabled(True, socket=socket)
        await sim.wait_for(lambda: state() is C)
        assert sim.offered_current_a(socket) == pytest.approx(10.0)

        await device.set_current_limit_a(limit.min_a - 1, socket=socket)  # below the minimum: pause
        await sim.wait_for(lambda: state() is B)
        await device.set_current_limit_a(16, socket=socket)
        await sim.wait_for(lambda: state() is C and sim.offered_current_a(socket) == pytest.approx(16.0))

        with pytest.raises(CommandRejected, match=f"above the charger's maximum of {limit.max_a:g} A"):
            await device.set_current_limit_a(limit.max_a + 1, socket=socket)
    finally:
        device.close()


def short_watchdog(profile: Profile, timeout_s: float = 0.3, period_s: float = 0.1) -> Profile:
    """The profile with a watchdog fast enough for a test (the device's timeout register not used)."""
    assert profile.watchdog is not None
    dog = profile.watchdog.model_copy(update={"timeout_s": timeout_s, "timeout_register": None, "period_s": period_s})
    return profile.model_copy(update={"watchdog": dog})


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("name", WATCHDOGS)
async def test_the_watchdog_holds_the_limit_while_the_engine_runs(name: str, modbus_simulator: StartSimulator) -> None:
    profile = short_watchdog(load_profile(name))
    assert profile.watchdog is not None and profile.writes.current_limit is not None
    sim = await modbus_simulator(profile)
    sim.start_charging(22_000)
    device = engine_for(sim)
    task = asyncio.create_task(device.run())
    try:
        await device.set_current_limit_a(10.0)
        await sim.wait_for(lambda: sim.charger_state().feeds >= 5)  # 5 feeds 0.1 s apart outlast the 0.3 s timeout
        assert sim.charger_state().expiries == 0
        assert sim.offered_current_a() == pytest.approx(10.0)
        assert sim.get("vehicle_state") is C
    finally:
        await stop(task)
    await sim.wait_for(lambda: sim.charger_state().fallback, timeout_s=2.0)  # nobody feeds it any more
    safe_a = profile.watchdog.safe_current_a
    assert sim.offered_current_a() == safe_a
    assert sim.get("vehicle_state") is (C if safe_a >= profile.writes.current_limit.min_a else B)


async def test_the_watchdog_period_comes_from_the_device(modbus_simulator: StartSimulator) -> None:
    sim = await modbus_simulator("heidelberg-ec")  # "ModBus-Master WatchDog Timeout" HR 257, in ms
    sim.write_registers("holding", 257, [300])
    assert sim.watchdog_timeout_s() == pytest.approx(0.3)
    sim.start_charging(11_000)
    device = engine_for(sim)
    task = asyncio.create_task(device.run())
    try:
        await device.set_current_limit_a(10.0)
        await sim.wait_for(lambda: sim.charger_state().feeds >= 4)  # the engine feeds at half of 0.3 s
        assert sim.charger_state().expiries == 0
        assert sim.read_registers("holding", 258) == [4]  # "standby off", the value the profile writes
    finally:
        await stop(task)
    await sim.wait_for(lambda: sim.charger_state().fallback, timeout_s=2.0)
    assert sim.get("vehicle_state") is B  # Heidelberg's fail-safe current is 0 A in this profile


async def test_a_value_the_device_refuses_is_command_rejected(modbus_simulator: StartSimulator) -> None:
    profile = load_profile("bender-cc613")
    assert profile.writes.current_limit is not None
    sim = await modbus_simulator(profile)  # takes at most 32 A
    limit = profile.writes.current_limit.model_copy(update={"max_a": 80.0})
    generous = profile.model_copy(update={"writes": profile.writes.model_copy(update={"current_limit": limit})})
    device = engine_for(sim, profile=generous)
    with pytest.raises(CommandRejected, match=r"exception 3 \(illegal_value\)"):
        await device.set_current_limit_a(50.0)
    assert sim.read_registers("holding", 1000) == [0]  # nothing written
    snapshot = (await device.poll_once())[0]
    assert isinstance(snapshot, ChargerSnapshot) and snapshot.vehicle_state is VehicleState.A  # still connected
    device.close()


async def test_a_command_to_an_unreachable_device_is_a_device_error() -> None:
    from adapters.modbus.device import ModbusDevice

    device = ModbusDevice(
        "gone", load_profile("bender-cc613"), host="127.0.0.1", port=free_port(), timeout_s=0.5, sink=RecordingSink()
    )
    with pytest.raises(DeviceUnavailable, match="gone"):
        await device.set_current_limit_a(10.0)


async def test_commands_are_repeated_when_the_device_comes_back(modbus_simulator: StartSimulator) -> None:
    sim = await modbus_simulator("phoenix-ev-eth")
    sink = RecordingSink()
    device = engine_for(sim, sink)
    task = asyncio.create_task(device.run())
    try:
        await sink.next(ChargerSnapshot)
        await device.set_current_limit_a(13.0)
        await device.set_enabled(False)
        await sim.stop()
        await sink.next(DeviceFailed)
        sim.write_registers("holding", 528, [32])  # the charger rebooted with its defaults
        sim.write_registers("coil", 400, [True])
        await sim.start()
        await sim.wait_for(
            lambda: sim.read_registers("holding", 528) == [13] and sim.read_registers("coil", 400) == [0]
        )
    finally:
        await stop(task)
