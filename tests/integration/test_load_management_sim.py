"""Site power sharing proven on the whole gateway: Modbus charger and grid meter simulators, a real
CSMS (the ``ocpp`` library, schema validation on), and site physics in which every car follows its
charger's offer a second late and the grid meter adds the cars to the building (issue 16, "Proof").

What is asserted is measured where a fuse would feel it: the grid meter simulator's current per
phase, and the current each charger simulator offers. Polls are 0.2 s; a car follows 1 s late.
Every wait has a deadline; none is a fixed sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocpp.v16 import call

from adapters.demo_csms.csms import DemoCsms
from adapters.modbus.simulator import ModbusSimulator
from adapters.modbus.site_physics import Car, SitePhysics
from gateway.app import Gateway
from gateway.config import parse_config
from gateway.domain.load_sharing import SharingSettings
from gateway.domain.phase_limits import Phase, Reason
from tests.fixtures.modbus import StartSimulator
from tests.fixtures.net import free_port

CHARGER = "alfen-ng9xx"  # a three-phase charger: f32 current per phase, a writable limit in 0.1 A
GRID_METER = "eastron-sdm630"  # a three-phase meter: f32 current per phase
POLL_S = 0.2  # every device, the grid meter too
STEP_S = 0.1  # the site physics
DELAY_S = 1.0  # how late a car follows its charger's offer
WRITE_S = 0.3  # a decision and one register write on loopback
SLACK_S = 1.0  # a busy 2-core CI box
CUT_DEADLINE_S = POLL_S + WRITE_S + SLACK_S  # a grid step -> the chargers offer less
FOLLOW_DEADLINE_S = CUT_DEADLINE_S + DELAY_S + STEP_S  # ... -> the grid current is under the fuse again
TOLERANCE_A = 0.05  # f32 registers
# Turns, settling and held raises of seconds instead of minutes, so a test can watch them.
FAST = SharingSettings(
    settle_s=3.0,
    raise_hold_s=2.0,
    rotation_s=3.0,
    min_on_s=1.5,
    min_off_s=1.5,
    building_hold_s=1.0,
    follow_s=DELAY_S + WRITE_S,
)


@dataclass
class SimSite:
    gateway: Gateway
    physics: SitePhysics
    grid: ModbusSimulator
    chargers: dict[str, ModbusSimulator]
    connector: dict[str, int]  # charger name -> its connector number

    def offer(self, name: str) -> float:
        """What charger ``name`` offers its car now (A); 0 while paused."""
        sim = self.chargers[name]
        return (sim.offered_current_a() or 0.0) if sim.may_charge() else 0.0

    def offers(self) -> dict[str, float]:
        return {name: round(self.offer(name), 2) for name in self.chargers}

    def cars(self) -> dict[str, float]:
        return {name: round(self.physics.car_a(name), 2) for name in self.chargers}

    def reason(self, name: str) -> Reason | None:
        load = self.gateway.site.load.state
        share = load.shares.get(self.connector[name]) if load is not None else None
        return share.reason if share is not None else None

    def picture(self) -> str:
        return f"offers {self.offers()}, cars {self.cars()}, grid {self.physics.grid_a()}"

    async def until(self, condition: Callable[[], bool], timeout_s: float, what: str) -> float:
        """Wait until ``condition()`` holds (checked every 20 ms); the seconds it took. Fails the test
        with ``what`` and the site's state after ``timeout_s``."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        while not condition():
            if loop.time() - started > timeout_s:
                raise AssertionError(f"not within {timeout_s:.1f} s: {what}; {self.picture()}")
            await asyncio.sleep(0.02)
        return loop.time() - started

    async def steady(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Wait until ``condition()`` has held for a car's delay and two polls on end (start-up
        transients are over), within ``timeout_s``."""
        loop = asyncio.get_running_loop()
        since: list[float] = []

        def held() -> bool:
            if not condition():
                since.clear()
                return False
            since[:] = since or [loop.time()]
            return loop.time() - since[0] >= DELAY_S + 2 * POLL_S

        await self.until(held, timeout_s, what)

    async def charging(self, cars: dict[str, Car], timeout_s: float = 8.0) -> None:
        """Plug ``cars`` in (free sessions: each starts at once) and wait until every one draws."""
        for name, car in cars.items():
            self.physics.arrive(name, car)
        await self.until(
            lambda: all(self.gateway.site.connectors[self.connector[n]].session is not None for n in cars),
            timeout_s,
            "every car has a session",
        )


@contextlib.asynccontextmanager
async def running_site(
    start_simulator: StartSimulator,
    csms: DemoCsms,
    state: Path,
    chargers: dict[str, dict[str, Any]],
    *,
    fuse_a: float,
    fallback_a: float,
    building_a: float | tuple[float, float, float],
    margin_a: float = 2.0,
    sharing: SharingSettings = FAST,
) -> AsyncIterator[SimSite]:
    """A gateway sharing ``fuse_a`` between ``chargers`` (name -> extra config keys, e.g. grid_phases,
    priority), their simulators, a grid meter simulator and the physics running."""
    grid = await start_simulator(GRID_METER)
    sims = {name: await start_simulator(CHARGER) for name in chargers}
    physics = SitePhysics(grid, step_s=STEP_S)
    physics.set_building(building_a)
    numbers = {name: i for i, name in enumerate(chargers, start=1)}
    for name, extra in chargers.items():
        wired = tuple(Phase[p] for p in extra.get("grid_phases", ("L1", "L2", "L3")))
        physics.add_charger(name, sims[name], grid_phases=wired)
    device = {"host": "127.0.0.1", "poll_interval_s": POLL_S, "timeout_s": 0.5}
    config = parse_config(
        {
            "site": {"id": "lm-sim", "state_dir": str(state)},
            "status_page": {"enabled": False},
            "upstream": {"url": csms.url, "charge_point_id": "GW-LM", "reconnect_max_s": 1},
            "mqtt": {"host": "127.0.0.1", "port": free_port()},  # nobody there: MQTT just retries
            "chargers": [
                {
                    "name": name,
                    "profile": CHARGER,
                    "port": sims[name].port,
                    "connectors": [numbers[name]],
                    **device,
                    **{k: v for k, v in extra.items() if k == "grid_phases"},
                }
                for name, extra in chargers.items()
            ],
            "meters": [
                {"name": "grid", "profile": GRID_METER, "port": grid.port, "connector": 0, **device}
                | {"offline_after_failures": 2}
            ],
            "connectors": [{"id": numbers[n], "priority": extra.get("priority", 0)} for n, extra in chargers.items()],
            "load_management": {"grid_meter": "grid", "fuse_a": fuse_a, "margin_a": margin_a, "fallback_a": fallback_a},
        }
    )
    gateway = Gateway.build(config, sharing=sharing)
    tasks = [asyncio.create_task(physics.run()), asyncio.create_task(gateway.run())]
    try:
        await csms.wait_for("BootNotification")
        yield SimSite(gateway, physics, grid, sims, numbers)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def under(limit_a: float, currents: tuple[float, ...]) -> bool:
    return all(c <= limit_a + TOLERANCE_A for c in currents)


async def test_a_load_step_up_cuts_the_chargers_under_the_fuse_within_a_poll_a_write_and_the_cars_delay(
    modbus_simulator: StartSimulator, csms: DemoCsms, tmp_path: Path
) -> None:
    async with running_site(
        modbus_simulator, csms, tmp_path, {"a": {}, "b": {}}, fuse_a=50, fallback_a=16, building_a=10
    ) as site:
        await site.charging({"a": Car(delay_s=DELAY_S), "b": Car(delay_s=DELAY_S)})
        # 50 - 2 - 10 = 38 A for the chargers: 19 A each, drawn in full
        await site.steady(lambda: site.cars() == {"a": 19, "b": 19}, 10, "both cars draw 19 A")
        assert under(48, site.physics.grid_a())

        site.physics.set_building(30)  # the heat pump starts: 68 A through a 50 A fuse
        cut_s = await site.until(lambda: sum(site.offers().values()) <= 18 + TOLERANCE_A, CUT_DEADLINE_S, "cut")
        follow_s = await site.until(lambda: under(48, site.physics.grid_a()), FOLLOW_DEADLINE_S, "under the fuse")
        assert site.offers() == {"a": 9, "b": 9}  # what is left, shared equally
        assert site.reason("a") == site.reason("b") == Reason.FUSE
        print(f"load step: chargers cut after {cut_s:.2f} s, grid under fuse - margin after {follow_s:.2f} s")


async def test_a_load_step_down_raises_the_chargers_gently_and_uses_what_is_free(
    modbus_simulator: StartSimulator, csms: DemoCsms, tmp_path: Path
) -> None:
    async with running_site(
        modbus_simulator, csms, tmp_path, {"a": {}, "b": {}}, fuse_a=50, fallback_a=16, building_a=30
    ) as site:
        await site.charging({"a": Car(delay_s=DELAY_S), "b": Car(delay_s=DELAY_S)})
        await site.steady(lambda: site.cars() == {"a": 9, "b": 9}, 10, "both cars draw 9 A")

        site.physics.reset_peak()
        most_offered = 0.0

        def offered_up_to(offers: dict[str, float]) -> Callable[[], bool]:
            def check() -> bool:
                nonlocal most_offered
                most_offered = max(most_offered, sum(site.offers().values()))
                return site.offers() == offers

            return check

        site.physics.set_building(11)  # 19 A more: a raise of 9.5 A each is made at once
        await site.until(offered_up_to({"a": 18.5, "b": 18.5}), CUT_DEADLINE_S, "both offered 18.5 A")
        await site.until(lambda: site.cars() == {"a": 18.5, "b": 18.5}, DELAY_S + 1, "both rise to 18.5 A")
        site.physics.set_building(10)  # 1 A more: a small raise, made within raise_hold_s (2 s)
        await site.until(offered_up_to({"a": 19, "b": 19}), FAST.raise_hold_s + CUT_DEADLINE_S, "small raise")
        await site.until(lambda: site.cars() == {"a": 19, "b": 19}, DELAY_S + 1, "the cars follow")
        # on the way up the offers never add up to more than is free: a grid reading taken while a
        # car was still following its raise must not make the building look smaller (it did: 48 A
        # offered of 38 A, the grid at 58 A for a 48 A limit)
        assert most_offered <= 38.0 + TOLERANCE_A, f"{most_offered} A offered of 38 A"
        assert max(site.physics.peak_a) <= 50 - 2 + TOLERANCE_A, f"grid peak {site.physics.peak_a}"
        used = sum(site.cars().values())
        assert used >= 0.95 * (50 - 2 - 10), f"only {used} A of 38 A used"


async def test_the_csms_charge_point_max_profile_is_shared_by_the_connectors(
    modbus_simulator: StartSimulator, csms: DemoCsms, tmp_path: Path
) -> None:
    async with running_site(
        modbus_simulator, csms, tmp_path, {"a": {}, "b": {}}, fuse_a=63, fallback_a=20, building_a=5
    ) as site:
        await site.charging({"a": Car(delay_s=DELAY_S), "b": Car(delay_s=DELAY_S)})
        await site.steady(lambda: site.cars() == {"a": 28, "b": 28}, 10, "both draw 28 A (the fuse's share)")
        profile = {
            "chargingProfileId": 7,
            "stackLevel": 0,
            "chargingProfilePurpose": "ChargePointMaxProfile",
            "chargingProfileKind": "Absolute",
            "chargingSchedule": {
                "chargingRateUnit": "A",
                "startSchedule": "2020-01-01T00:00:00Z",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 20}],
            },
        }
        answer = await csms.call("GW-LM", call.SetChargingProfile(connector_id=0, cs_charging_profiles=profile))
        assert answer.status == "Accepted"
        await site.until(lambda: site.offers() == {"a": 10, "b": 10}, CUT_DEADLINE_S, "20 A shared, not 20 A each")
        assert site.reason("a") == site.reason("b") == Reason.CSMS
        await site.until(lambda: sum(site.cars().values()) <= 20 + TOLERANCE_A, DELAY_S + 1, "the cars follow")


async def test_a_lost_grid_meter_brings_the_chargers_together_to_the_fallback(
    modbus_simulator: StartSimulator, csms: DemoCsms, tmp_path: Path
) -> None:
    async with running_site(
        modbus_simulator, csms, tmp_path, {"a": {}, "b": {}}, fuse_a=50, fallback_a=16, building_a=10
    ) as site:
        await site.charging({"a": Car(delay_s=DELAY_S), "b": Car(delay_s=DELAY_S)})
        await site.steady(lambda: site.cars() == {"a": 19, "b": 19}, 10, "both cars draw 19 A")
        site.grid.stall()  # the meter stops answering: two timed-out polls (0.5 s each), then it is lost
        await site.until(lambda: sum(site.offers().values()) <= 16 + TOLERANCE_A, 3 + CUT_DEADLINE_S, "fallback")
        assert site.offers() == {"a": 8, "b": 8}
        assert site.reason("a") == Reason.FALLBACK
        await site.until(lambda: sum(site.cars().values()) <= 16 + TOLERANCE_A, DELAY_S + 1, "the cars follow")
        site.grid.resume()  # back: the headroom is measured again
        await site.until(lambda: site.cars() == {"a": 19, "b": 19}, 5, "both back at 19 A")


async def test_a_lost_charger_keeps_its_last_offer_free_so_its_car_may_still_rise_to_it(
    modbus_simulator: StartSimulator, csms: DemoCsms, tmp_path: Path
) -> None:
    # settle_s 60 s: the car on b keeps its offer while it takes less; follow_s as the simulated cars
    # (a grid reading within follow_s of a change waits for the cars: 6 s for real ones)
    slow = SharingSettings(raise_hold_s=2.0, building_hold_s=5.0, follow_s=FAST.follow_s)
    async with running_site(
        modbus_simulator,
        csms,
        tmp_path,
        {"a": {}, "b": {}, "c": {}},
        fuse_a=80,
        fallback_a=30,
        building_a=6,
        sharing=slow,
    ) as site:
        cars = {"a": Car(delay_s=DELAY_S), "b": Car(max_a=10, delay_s=DELAY_S), "c": Car(delay_s=DELAY_S)}
        await site.charging(cars)
        # 80 - 2 - 6 = 72 A: 24 A offered to each; the car on b takes only 10 A of it
        await site.steady(
            lambda: site.cars() == {"a": 24, "b": 10, "c": 24} and site.offers() == {"a": 24, "b": 24, "c": 24},
            10,
            "24 A offered to each, 24/10/24 A drawn",
        )
        await site.chargers["b"].stop()  # charger b drops off the network; its car charges on
        await site.until(
            lambda: site.gateway.site.connectors[site.connector["b"]].device_online is False, 5, "b is lost"
        )
        # whatever b's car does, it may draw up to the 24 A b last offered: the others share 72 - 24 at most
        await site.until(lambda: site.offer("a") + site.offer("c") <= 48 + TOLERANCE_A, CUT_DEADLINE_S, "room for b")
        assert site.offer("a") >= 6 and site.offer("c") >= 6  # the others charge on
        # (offers() and cars() are both rounded to 0.01 A: a float32 register reads 10.300000190734863)
        await site.until(lambda: site.cars()["a"] == site.offers()["a"], DELAY_S + 1, "a follows")
        site.physics.reset_peak()
        site.physics.change_car("b", Car(max_a=32, delay_s=DELAY_S))  # b's car now takes all it is offered
        await site.until(lambda: site.cars()["b"] == 24, DELAY_S + 1, "b's car rises to its last offer")
        await site.until(lambda: site.offers()["a"] == site.cars()["a"], 5, "settled")
        assert under(78, site.physics.peak_a), f"over the fuse: {site.physics.peak_a}"
        assert site.offer("a") + site.offer("c") <= 48 + TOLERANCE_A


async def test_the_higher_priority_gets_its_full_current_first(
    modbus_simulator: StartSimulator, csms: DemoCsms, tmp_path: Path
) -> None:
    async with running_site(
        modbus_simulator,
        csms,
        tmp_path,
        {"fleet": {"priority": 1}, "guest": {}},
        fuse_a=50,
        fallback_a=20,
        building_a=10,
    ) as site:
        await site.charging({"fleet": Car(delay_s=DELAY_S), "guest": Car(delay_s=DELAY_S)})
        # 38 A: the fleet car gets its charger's 32 A, the guest the 6 A left
        await site.steady(lambda: site.cars() == {"fleet": 32, "guest": 6}, 10, "32 A and 6 A")
        assert site.reason("fleet") == Reason.OWN_LIMIT and site.reason("guest") == Reason.PRIORITY
        site.physics.set_building(20)  # 10 A less: taken from the fleet car; the guest keeps its 6 A
        await site.until(lambda: site.offers() == {"fleet": 22, "guest": 6}, CUT_DEADLINE_S, "22 A and 6 A")
        await site.until(lambda: under(48, site.physics.grid_a()), FOLLOW_DEADLINE_S, "under the fuse")


async def test_three_cars_with_room_for_two_take_turns(
    modbus_simulator: StartSimulator, csms: DemoCsms, tmp_path: Path
) -> None:
    async with running_site(
        modbus_simulator, csms, tmp_path, {"a": {}, "b": {}, "c": {}}, fuse_a=16, fallback_a=12, building_a=0
    ) as site:
        # 16 - 2 = 14 A: two cars at 7 A, not three at 6 A
        await site.charging({name: Car(delay_s=DELAY_S) for name in ("a", "b", "c")})
        charged: set[str] = set()
        most_at_once = 0

        def everyone_had_a_turn() -> bool:
            nonlocal most_at_once
            drawing = {name for name, amps in site.cars().items() if amps >= 6}
            charged.update(drawing)
            most_at_once = max(most_at_once, len(drawing))
            return charged == {"a", "b", "c"}

        await site.until(lambda: len([a for a in site.cars().values() if a >= 6]) == 2, 10, "two charge")
        site.physics.reset_peak()
        charged.clear()
        await site.until(everyone_had_a_turn, 4 * FAST.rotation_s + 4, "every car had a turn")
        assert most_at_once == 2
        assert under(14, site.physics.peak_a), f"over the fuse while turns changed: {site.physics.peak_a}"

        def one_waits() -> bool:  # between two turns both may be off for a moment (cut before raise)
            paused = [name for name in site.chargers if site.offer(name) == 0]
            return len(paused) == 1 and site.reason(paused[0]) in (Reason.ROTATION, Reason.SWITCH_HELD)

        await site.until(one_waits, 2 * FAST.rotation_s, "one car waits for its turn")


async def test_single_phase_cars_on_different_phases_each_phase_holds_and_l2_is_not_cut_for_l1(
    modbus_simulator: StartSimulator, csms: DemoCsms, tmp_path: Path
) -> None:
    async with running_site(
        modbus_simulator,
        csms,
        tmp_path,
        {"one": {"grid_phases": ["L1"]}, "two": {"grid_phases": ["L2"]}},
        fuse_a=32,
        fallback_a=10,
        building_a=(20, 5, 5),
    ) as site:
        single = Car(phases=1, delay_s=DELAY_S)
        await site.charging({"one": single, "two": single})
        # 30 A per phase: L1 has 10 A left for "one", L2 has 25 A for "two"
        await site.steady(lambda: site.cars() == {"one": 10, "two": 25}, 10, "10 A on L1, 25 A on L2")
        assert site.physics.grid_a() == (30, 30, 5)
        lowest_on_l2 = site.offer("two")

        def l1_cut() -> bool:
            nonlocal lowest_on_l2
            lowest_on_l2 = min(lowest_on_l2, site.offer("two"))
            return site.offer("one") == 6

        site.physics.set_building((24, 5, 5))  # L1 fuller: only "one" is cut
        await site.until(l1_cut, CUT_DEADLINE_S, "the car on L1 cut to 6 A")
        await site.until(lambda: under(30, site.physics.grid_a()), FOLLOW_DEADLINE_S, "every phase under the fuse")
        assert lowest_on_l2 == 25 and site.offer("two") == 25  # never cut because L1 was full
        assert site.physics.grid_a() == (30, 30, 5)
