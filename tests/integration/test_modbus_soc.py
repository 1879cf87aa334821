"""A simulated car's SoC through the engine: unknown without a vehicle, a plausible start, rising.

The demo once showed a Bender SoC of 0 % while charging, and the charger's 0 overrode a real SoC
sent over MQTT. The profile now declares when HR 730 means nothing (``valid_when``: "smart vehicle
detected" HR 740 = 1, at most 100 %) and the simulator shows what a real CC613 would.
"""

from __future__ import annotations

from adapters.modbus.device import ModbusDevice
from adapters.modbus.simulator import ARRIVAL_SOC_PERCENT
from gateway.domain.model import ChargerSnapshot
from tests.fixtures.modbus import StartSimulator, engine_for


async def soc(device: ModbusDevice) -> float | None:
    [snapshot] = await device.poll_once()
    assert isinstance(snapshot, ChargerSnapshot)
    return snapshot.reading.soc_percent


async def test_bender_soc_is_unknown_without_a_car_and_rises_while_one_charges(
    modbus_simulator: StartSimulator,
) -> None:
    sim = await modbus_simulator("bender-cc613")
    device = engine_for(sim)
    try:
        assert await soc(device) is None  # no vehicle: unknown, not 0 %
        assert sim.read_registers("holding", 740) == [0]  # what a CC613 shows: no smart vehicle

        sim.plug_in()
        arrived = await soc(device)
        assert arrived == ARRIVAL_SOC_PERCENT and arrived > 0
        sim.start_charging(11_000)
        sim.tick(1_800)  # half an hour at 11 kW into a 60 kWh battery: about 9 % more
        charged = await soc(device)
        assert charged is not None and arrived + 8 <= charged <= arrived + 10

        sim.unplug()
        assert await soc(device) is None
        assert sim.read_registers("holding", 730, 11) == [0] * 11  # SoC 0 while HR 740 says "no vehicle"
    finally:
        device.close()


async def test_a_car_that_reports_no_soc_leaves_it_unknown(modbus_simulator: StartSimulator) -> None:
    sim = await modbus_simulator("bender-cc613")
    device = engine_for(sim)
    try:
        sim.plug_in(soc_percent=None)
        sim.start_charging(7_000)
        sim.tick(600)
        assert await soc(device) is None
    finally:
        device.close()


async def test_the_soc_stops_at_100_percent(modbus_simulator: StartSimulator) -> None:
    sim = await modbus_simulator("bender-cc613")
    device = engine_for(sim)
    try:
        sim.plug_in(soc_percent=95)
        sim.start_charging(11_000)
        sim.tick(4 * 3600)
        assert await soc(device) == 100.0
    finally:
        device.close()
