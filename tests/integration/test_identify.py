"""identify(): which profiles fit the device behind a connection, tried against every profile's simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapters.modbus import bus
from adapters.modbus.identify import ReadFn, identify
from adapters.modbus.profile import ROLES, Profile, Table, load_profile, profile_names
from adapters.modbus.simulator import ModbusSimulator
from adapters.modbus.transport import ModbusLine, TcpTransport
from gateway.domain.errors import DeviceUnavailable
from gateway.domain.model import VehicleState
from tests.fixtures.modbus import StartSimulator

PROFILES = [load_profile(name) for name in profile_names()]

# Register maps that contain another profile's map: the smaller profile fits the bigger device too
# (an SDM630 answers every register the SDM72 and SDM120 profiles read). probe lists them all.
LOOK_ALIKES = {
    "eastron-sdm630": {"eastron-sdm72", "eastron-sdm120"},
    "eastron-sdm72": {"eastron-sdm120"},
}


@pytest.fixture
async def line() -> AsyncIterator[list[ModbusLine]]:
    lines: list[ModbusLine] = []
    yield lines
    for opened in lines:
        opened.close()


async def reader(sim: ModbusSimulator, lines: list[ModbusLine]) -> ReadFn:
    """What probe hands to identify(): one read request per call, errors as the engine sees them."""
    opened = ModbusLine(TcpTransport("127.0.0.1", sim.port), 0.5)
    lines.append(opened)
    client = await opened.connect("test")

    async def read(table: Table, address: int, count: int, unit_id: int) -> list[int]:
        return await bus.read(client, table, address, count, unit_id, where="test", timeout_s=0.5)

    return read


@pytest.mark.parametrize("name", profile_names())
async def test_each_simulator_is_recognised_by_its_own_profile_only(
    name: str, modbus_simulator: StartSimulator, line: list[ModbusLine]
) -> None:
    sim = await modbus_simulator(name)
    for role, spec in sim.profile.values.items():  # something recognisable in every value
        if ROLES[role].kind in ("quantity", "energy") and role not in ("voltage_v", "frequency_hz"):
            sim.set(role, (7.0,) * spec.phases if ROLES[role].per_phase else 7)
    read = await reader(sim, line)
    fits = {profile.id for profile in PROFILES if await identify(profile, read) is not None}
    assert fits == {name} | LOOK_ALIKES.get(name, set())
    result = await identify(sim.profile, read)
    assert result is not None and result.profile is sim.profile
    assert result.unit_id == sim.profile.modbus.unit_id
    assert len(result.evidence) == len(sim.profile.identify.match)  # type: ignore[union-attr]
    for role in sim.profile.values:
        if ROLES[role].kind in ("quantity", "energy"):
            assert result.values[role] == sim.get(role), role  # the values probe shows are the device's
    if sim.profile.kind == "charger":
        assert result.values["vehicle_state"] is VehicleState.A


async def test_sunspec_is_recognised_by_marker_and_model_chain(
    modbus_simulator: StartSimulator, line: list[ModbusLine]
) -> None:
    sim = await modbus_simulator("sunspec-203")
    assert sim.read_registers("holding", 40000, 4) == [0x5375, 0x6E53, 1, 66]  # "SunS", model 1, L = 66
    assert sim.read_registers("holding", 40070, 2) == [203, 105]
    assert sim.read_registers("holding", 40177) == [0xFFFF]  # end of the chain
    sim.set_scale_factor("w", -1)  # the device changes its scale: the same raw words mean less power
    sim.write_registers("holding", 40088, [12345])
    result = await identify(load_profile("sunspec-203"), await reader(sim, line))
    assert result is not None
    assert result.evidence[0] == "holding registers 40000 of unit 1 = 'SunS'"
    assert result.values["power_w"] == pytest.approx(1234.5)
    assert await identify(load_profile("sunspec-213"), await reader(sim, line)) is None


async def test_the_unit_id_can_be_given(modbus_simulator: StartSimulator, line: list[ModbusLine]) -> None:
    sim = await modbus_simulator("abb-b23", unit_id=7)
    read = await reader(sim, line)
    assert await identify(sim.profile, read) is None  # the profile's unit 1 is not there
    result = await identify(sim.profile, read, unit_id=7)
    assert result is not None and result.unit_id == 7


async def test_a_profile_without_identify_cannot_be_recognised() -> None:
    async def never(table: Table, address: int, count: int, unit_id: int) -> list[int]:
        raise AssertionError("no reads expected")

    bare: Profile = load_profile("eastron-sdm630").model_copy(update={"identify": None})
    assert await identify(bare, never) is None


async def test_no_connection_is_not_a_misfit() -> None:
    async def unplugged(table: Table, address: int, count: int, unit_id: int) -> list[int]:
        raise DeviceUnavailable("connection lost")

    with pytest.raises(DeviceUnavailable):
        await identify(load_profile("eastron-sdm630"), unplugged)


async def test_a_device_answering_zeros_everywhere_fits_no_profile(zeros_device: int, line: list[ModbusLine]) -> None:
    opened = ModbusLine(TcpTransport("127.0.0.1", zeros_device), 0.5)
    line.append(opened)
    client = await opened.connect("test")
    answered: list[tuple[str, int]] = []

    async def read(table: Table, address: int, count: int, unit_id: int) -> list[int]:
        words = await bus.read(client, table, address, count, unit_id, where="test", timeout_s=0.5)
        answered.append((table, address))
        assert not any(words)
        return words

    fits = [profile.id for profile in PROFILES if await identify(profile, read) is not None]
    assert fits == []  # abb-terra-ac, schneider, vestel and webasto fitted before positive evidence was required
    assert answered  # the zeros really were read, not refused
