"""The demo's occasional fault (``gateway.demo_fault``), stepped by hand on simulators that serve
nobody: the charger's fault register shows over-temperature in its profile's own code, it stops
delivering, its car waits, and it recovers on time. No clock, no sleeps."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.modbus.profile import load_profile
from adapters.modbus.simulator import ModbusSimulator
from gateway.config import ChargerConfig, load_config
from gateway.demo import STEP_S, TICK_S, DemoSite
from gateway.demo_fault import DEMO_FAULT, FaultSchedule, Overheating, can_overheat, overheating_charger
from gateway.domain.model import FaultKind, VehicleState

ROOT = Path(__file__).resolve().parents[2]


def demo_site(fault: FaultSchedule | None) -> tuple[DemoSite, dict[str, ModbusSimulator]]:
    config = load_config(ROOT / "config.toml")
    simulators = {
        device.name: ModbusSimulator(
            load_profile(device.profile),
            unit_id=device.unit_id,
            sockets=len(device.connectors) if isinstance(device, ChargerConfig) else 1,
        )
        for device in [*config.chargers, *config.meters]
    }
    return DemoSite(config, simulators, fault=fault), simulators


def run_for(site: DemoSite, seconds: float, watch: list[tuple[float, bool, float]] | None = None) -> None:
    """The demo's loop (script once a TICK_S, electrics every STEP_S), for ``seconds`` more;
    ``watch`` collects (elapsed, hot, current shown by the hot charger) after every step."""
    steps_per_tick = round(TICK_S / STEP_S)
    for _ in range(round(seconds / STEP_S)):
        if round(site.elapsed_s / STEP_S) % steps_per_tick == 0:
            site.tick()
        site.step(STEP_S)
        if watch is not None and site.overheating is not None:
            shown = site.overheating.simulator.get("current_a")
            current = max(float(a or 0.0) for a in shown) if isinstance(shown, tuple) else 0.0
            watch.append((round(site.elapsed_s, 1), site.overheating.hot, current))


def test_the_shipped_demo_overheats_its_webasto_within_two_minutes_while_its_car_charges() -> None:
    site, _ = demo_site(DEMO_FAULT)
    hot = site.overheating
    assert hot is not None and hot.name == "carport-right"  # the Bender has no public fault codes
    car = next(c for c in site.cars if c.simulator is hot.simulator)
    watch: list[tuple[float, bool, float]] = []
    run_for(site, 130, watch)
    began = next(at for at, is_hot, _ in watch if is_hot)
    ended = next(at for at, is_hot, _ in watch if at > began and not is_hot)
    assert DEMO_FAULT.first_after_s <= began <= 120  # a new user sees it within two minutes
    assert ended - began == pytest.approx(DEMO_FAULT.lasts_s, abs=STEP_S)
    assert all(current == 0.0 for at, is_hot, current in watch if is_hot)  # nothing flows while hot
    assert any(current > 6.0 for at, _, current in watch if at > ended)  # and it charges again after
    assert car.phase == "charging"  # its car got no energy while the charger was hot: it still wants some


def test_the_fault_register_shows_over_temperature_in_the_profiles_own_code_and_clears() -> None:
    site, _ = demo_site(FaultSchedule(first_after_s=0.0, every_s=1000.0, lasts_s=2.0))
    hot = site.overheating
    assert hot is not None
    run_for(site, 15)  # the car on the Webasto charges from about 13 s
    assert hot.hot
    faults = hot.simulator.faults()
    assert [(f.kind, f.vendor_code) for f in faults] == [(FaultKind.OVER_TEMPERATURE, "10")]  # HR 1006 = 10
    assert hot.simulator.get("vehicle_state") == VehicleState.B  # plugged, not charging
    assert not hot.simulator.may_charge()
    run_for(site, 3)
    assert not hot.hot and hot.simulator.faults() == []
    assert hot.simulator.may_charge()


def test_the_fault_comes_again_every_period_but_only_while_the_car_charges() -> None:
    schedule = FaultSchedule(first_after_s=0.0, every_s=20.0, lasts_s=1.0)
    simulator = ModbusSimulator(load_profile("webasto-next"))
    overheating = Overheating(schedule, "wb", simulator)
    began: list[float] = []
    for tenth in range(0, 700):
        now = tenth / 10
        was = overheating.hot
        overheating.step(now, charging=not 25 <= now < 50)  # the car is away from 25 s to 50 s
        if overheating.hot and not was:
            began.append(now)
    assert began == [0.0, 20.0, 50.0]  # due at 40 s, it waits for the car


def test_no_fault_without_a_schedule_or_a_charger_that_can_say_over_temperature() -> None:
    site, _ = demo_site(None)
    assert site.overheating is None
    bender = ModbusSimulator(load_profile("bender-cc613"))  # codes: 0 none, anything else "other"
    assert not can_overheat(bender)
    assert overheating_charger([("left", bender)], DEMO_FAULT) is None
    assert can_overheat(ModbusSimulator(load_profile("mennekes-amtron-hcc3")))


@pytest.mark.parametrize(
    ("first", "every", "lasts"), [(-1.0, 300.0, 30.0), (0.0, 30.0, 30.0), (0.0, 300.0, 0.0), (0.0, 10.0, 20.0)]
)
def test_a_schedule_that_makes_no_sense_is_refused(first: float, every: float, lasts: float) -> None:
    with pytest.raises(ValueError, match="fault schedule"):
        FaultSchedule(first, every, lasts)
