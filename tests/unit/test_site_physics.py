"""The site physics the load-management tests run on: cars follow their chargers late, the grid adds up."""

from __future__ import annotations

import pytest

from adapters.modbus.simulator import ModbusSimulator
from adapters.modbus.site_physics import Car, SitePhysics
from gateway.domain.model import VehicleState
from gateway.domain.phase_limits import Phase

CHARGER = "alfen-ng9xx"  # offers 16 A at power-on ([simulator] initial); f32 currents per phase
GRID = "eastron-sdm630"


def site() -> tuple[SitePhysics, ModbusSimulator, ModbusSimulator, ModbusSimulator]:
    grid, three, single = ModbusSimulator(GRID), ModbusSimulator(CHARGER), ModbusSimulator(CHARGER)
    physics = SitePhysics(grid, building_a=(10, 10, 10))
    physics.add_charger("three", three)
    physics.add_charger("single", single, grid_phases=(Phase.L2,))
    return physics, grid, three, single


def test_a_car_follows_its_offer_after_its_delay_and_the_grid_meter_adds_it_on_its_phases() -> None:
    physics, grid, three, single = site()
    physics.arrive("three", Car(max_a=32, delay_s=1.0))
    physics.arrive("single", Car(max_a=10, phases=1, delay_s=1.0))  # takes less than its 16 A offer
    physics.step(0.0)
    physics.step(0.9)
    assert (physics.car_a("three"), physics.car_a("single")) == (0, 0)  # not yet
    assert grid.get("current_a") == (10, 10, 10)
    physics.step(1.0)
    assert (physics.car_a("three"), physics.car_a("single")) == (16, 10)
    assert three.get("current_a") == (16, 16, 16)
    assert single.get("current_a") == (10, 0, 0)  # a single-phase car: the charger's first phase only
    assert three.get("vehicle_state") == VehicleState.C
    assert grid.get("current_a") == (26, 36, 26)  # the single-phase charger is wired to L2
    assert single.get("power_w") == pytest.approx(10 * 230)


def test_a_cut_and_a_pause_reach_the_car_late_and_energy_follows_what_it_draws() -> None:
    physics, grid, three, _ = site()
    physics.arrive("three", Car(max_a=32, delay_s=1.5))
    for t in (0.0, 1.5, 2.0):
        physics.step(t)
    energy = three.get("energy_wh")
    three._charger.sockets[1].limit_a = 8.0  # what a master write of 8 A leaves behind
    physics.step(2.2)
    physics.step(3.6)
    assert physics.car_a("three") == 16  # 1.4 s after the cut: still the old current
    physics.step(3.8)
    assert physics.car_a("three") == 8
    assert grid.get("current_a") == (18, 18, 18)
    drawn_wh = 16 * 3 * 230 * 1.6 / 3600 + 8 * 3 * 230 * 0.2 / 3600  # 16 A up to 3.6 s, then 8 A
    assert three.get("energy_wh") == pytest.approx(energy + drawn_wh, abs=1)  # the register shows whole Wh
    three._charger.sockets[1].limit_a = 0.0  # paused: the car stops, late as well
    physics.step(4.0)
    assert not three.may_charge() and physics.car_a("three") == 8
    physics.step(5.6)
    assert physics.car_a("three") == 0
    assert three.get("vehicle_state") == VehicleState.B
    physics.set_building((30, 5, 0))
    assert grid.get("current_a") == (30, 5, 0)
    physics.leave("three")
    assert three.get("vehicle_state") == VehicleState.A
