"""The demo's simulated site (``gateway.demo.DemoSite``) against the shipped demo site's
``[load_management]``: its cars want more than the fuse leaves after the building, so they must
share, yet both fit at 6 A; and its cars move their current as real ones do, so that the site meter
and the chargers add up. Stepped by hand on simulators that serve nobody: no clock, no sleeps."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from adapters.modbus.profile import load_profile
from adapters.modbus.sim_charger import NOMINAL_VOLTAGE_V
from adapters.modbus.simulator import ModbusSimulator
from gateway.config import ChargerConfig, GatewayConfig, load_config
from gateway.demo import (
    CAR_RAMP_A_PER_S,
    SITE_BASE_LOAD_W,
    SITE_LOAD_WANDER_W,
    STEP_S,
    TICK_S,
    DemoSite,
)
from gateway.domain.model import VehicleState

ROOT = Path(__file__).resolve().parents[2]
MIN_A = 6.0  # IEC 61851-1: the least current a car can be offered


def demo_site() -> tuple[DemoSite, GatewayConfig]:
    config = load_config(ROOT / "config.toml")
    simulators = {
        device.name: ModbusSimulator(
            load_profile(device.profile),
            unit_id=device.unit_id,
            sockets=len(device.connectors) if isinstance(device, ChargerConfig) else 1,
        )
        for device in [*config.chargers, *config.meters]
    }
    return DemoSite(config, simulators), config


def building_a(watts: float) -> float:
    return watts / NOMINAL_VOLTAGE_V / 3


def test_the_shipped_demo_site_makes_two_cars_share_its_fuse_and_fits_both_at_6_a() -> None:
    site, config = demo_site()
    lm = config.load_management
    assert lm is not None, "the shipped demo site manages its load"
    room = lm.fuse_a - lm.margin_a  # what building and chargers together may draw per phase
    lightest = building_a(SITE_BASE_LOAD_W - SITE_LOAD_WANDER_W)
    heaviest = building_a(SITE_BASE_LOAD_W + SITE_LOAD_WANDER_W)
    wanted = sorted(car.max_a for car in site.cars)
    assert sum(wanted) > room - lightest  # both cars charging: they must share, whatever the building
    assert wanted[-1] <= room - heaviest  # one car alone takes all it wants: sharing is "at times"
    assert len(wanted) * MIN_A <= room - heaviest  # sharing never has to pause one of them
    # the fallback holds the fuse with the building at its highest, and still lets both cars charge
    assert lm.fallback_a + heaviest <= room
    assert lm.fallback_a >= len(wanted) * MIN_A


def test_without_load_management_the_demo_script_takes_the_site_over_its_fuse() -> None:
    """The script itself (cars at what they want, nobody limiting them): within its first minute
    both cars charge at once and the site meter reads more than fuse - margin on every phase."""
    site, config = demo_site()
    assert config.load_management is not None
    meter = site.meters[0]
    highest = [0.0, 0.0, 0.0]
    both = False
    steps_per_tick = round(TICK_S / STEP_S)
    for count in range(round(60 / STEP_S)):
        if count % steps_per_tick == 0:
            site.tick()
        site.step(STEP_S)
        grid = meter.get("current_a")
        assert isinstance(grid, tuple)
        highest = [max(h, float(g or 0.0)) for h, g in zip(highest, grid, strict=True)]
        both = both or all(car.current_a > 0 for car in site.cars)
    assert both
    assert min(highest) > config.load_management.fuse_a - config.load_management.margin_a


def test_a_demo_car_follows_its_offer_at_its_ramp_and_the_site_meter_adds_it_up() -> None:
    site, _ = demo_site()
    car = max(site.cars, key=lambda c: c.max_a)  # the 11 kW car: 16 A per phase
    meter = site.meters[0]
    car.simulator.plug_in(socket=car.socket)
    car.phase, car.left_s = "charging", 60.0
    car.simulator.charger_state(car.socket).limit_a = 10.0  # what the gateway's write of 10 A leaves
    ramp = CAR_RAMP_A_PER_S * STEP_S
    currents = [0.0]
    for _ in range(25):
        site.step(STEP_S)
        currents.append(car.current_a)
        shown = [c.simulator.get("current_a", c.socket) for c in site.cars]  # what the gateway reads
        per_phase = [sum(float(s[p] or 0.0) for s in shown if isinstance(s, tuple)) for p in range(3)]
        expected = tuple(building_a(site.building_w) + a for a in per_phase)
        assert meter.get("current_a") == pytest.approx(expected, abs=0.02)  # in the same step
    steps = [b - a for a, b in itertools.pairwise(currents)]
    assert max(steps) <= ramp + 1e-9  # up at the ramp...
    assert max(currents) == currents[-1] == 10.0  # ...to its offer, never above it
    assert car.simulator.get("vehicle_state", car.socket) == VehicleState.C

    car.simulator.charger_state(car.socket).limit_a = 0.0  # paused: it runs down, as fast, to nothing
    site.step(STEP_S)
    assert car.current_a == pytest.approx(10.0 - ramp)
    for _ in range(20):
        site.step(STEP_S)
    assert car.current_a == 0.0 and car.simulator.get("vehicle_state", car.socket) == VehicleState.B


def test_a_full_demo_car_tapers_off_and_leaves_only_once_it_draws_nothing() -> None:
    site, _ = demo_site()
    car = max(site.cars, key=lambda c: c.max_a)
    car.simulator.plug_in(socket=car.socket)
    car.phase, car.left_s = "charging", 60.0
    for _ in range(40):  # no master: it takes what it wants, 16 A
        site.step(STEP_S)
    assert car.current_a == pytest.approx(car.max_a)
    car.phase, car.left_s = "full", 0.5
    car.step(site.rng)  # its time in "full" is up, but it still draws: it stays
    site.step(STEP_S)
    assert car.phase == "full" and 0 < car.current_a < car.max_a
    while car.current_a > 0:
        car.step(site.rng)
        site.step(STEP_S)
        assert car.phase == "full"
    car.step(site.rng)
    assert car.phase == "away" and car.simulator.get("vehicle_state", car.socket) == VehicleState.A
