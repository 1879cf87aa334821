"""A billing register never bills a glitch: not one that goes down, not one that jumps up (issue 14)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.domain.metering import (
    DEFAULT_CONNECTOR_MAX_POWER_W,
    REGISTER_BACKWARDS,
    REGISTER_JUMP,
    GoodRegister,
    check_register,
    max_rise_wh,
)
from gateway.domain.model import (
    ChargerSnapshot,
    Connector,
    ConnectorStatus,
    FaultKind,
    Meter,
    MeterSnapshot,
    Reading,
    VehicleState,
)
from gateway.domain.transactions import AuthPolicy, StartTransaction, StopTransaction
from gateway.services.sessions import ConnectorPolicy
from gateway.services.site import Site
from tests.fixtures.settings import DictSettings

T0 = datetime(2026, 3, 1, tzinfo=UTC)
FREE = {1: ConnectorPolicy(AuthPolicy.FREE, "CARPORT")}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def poll(state: VehicleState, seconds: float, energy_wh: int | None) -> ChargerSnapshot:
    return ChargerSnapshot("phoenix", 1, Reading(at(seconds), energy_wh=energy_wh), vehicle_state=state)


def sessions(events: list[object]) -> list[object]:
    return [e for e in events if isinstance(e, StartTransaction | StopTransaction)]


def drain(site_stream: object) -> list[object]:
    got = []
    while (event := site_stream.get_nowait()) is not None:  # type: ignore[attr-defined]
        got.append(event)
    return got


def test_a_rise_within_what_the_connector_can_deliver_is_accepted() -> None:
    last = GoodRegister(281_678, T0)
    # 22 kW for one minute is 367 Wh: well within 44 kW x 1.5
    reading, fault, good = check_register(last, Reading(at(60), energy_wh=282_045), DEFAULT_CONNECTOR_MAX_POWER_W)
    assert (reading.energy_wh, fault, good) == (282_045, None, GoodRegister(282_045, at(60)))


@pytest.mark.parametrize("elapsed_s", [1.5, 60, 3600])
def test_a_jump_beyond_max_power_times_time_is_a_meter_fault(elapsed_s: float) -> None:
    last = GoodRegister(281_678, T0)
    limit = last.energy_wh + max_rise_wh(DEFAULT_CONNECTOR_MAX_POWER_W, last, at(elapsed_s))
    for value in (1_000_000_000, int(limit) + 1):
        reading, fault, good = check_register(last, Reading(at(elapsed_s), energy_wh=value), 44_000)
        assert (reading.energy_wh, fault, good) == (None, REGISTER_JUMP, last)
    reading, fault, _ = check_register(last, Reading(at(elapsed_s), energy_wh=int(limit)), 44_000)
    assert (reading.energy_wh, fault) == (int(limit), None)


def test_a_negative_register_is_never_a_billing_value() -> None:
    reading, fault, good = check_register(None, Reading(T0, energy_wh=-5), 44_000)
    assert (reading.energy_wh, fault, good) == (None, REGISTER_BACKWARDS, None)


def test_a_kwh_register_may_step_by_a_whole_kwh_between_fast_polls() -> None:
    last = GoodRegister(1_234_000, T0)
    reading, fault, _ = check_register(last, Reading(at(1), energy_wh=1_235_000), 11_000)
    assert (reading.energy_wh, fault) == (1_235_000, None)


def test_a_register_glitch_during_a_session_is_never_billed_and_heals_by_itself() -> None:
    """The Phoenix EV-ETH case: HR 904 read 1,000,000,000 Wh for 1.5 s mid-session."""
    site = Site([Connector(1, "phoenix")], [], policies=FREE, settings=DictSettings())
    events = site.subscribe()
    site.apply(poll(VehicleState.A, 0, 281_670))
    site.apply(poll(VehicleState.C, 1, 281_678))  # a car: the session starts here
    site.apply(poll(VehicleState.C, 600, 283_500))
    site.apply(poll(VehicleState.C, 601, 1_000_000_000))  # the glitch
    assert site.connectors[1].status is ConnectorStatus.FAULTED
    assert site.connectors[1].faults[0].kind is FaultKind.POWER_METER
    assert site.billing_energy_wh(1) == 283_500
    site.apply(poll(VehicleState.C, 602.5, 283_510))  # its true value again: healed, no restart
    assert site.connectors[1].status is ConnectorStatus.CHARGING
    site.apply(poll(VehicleState.A, 1200, 285_000))  # the car leaves
    start, stop = sessions(drain(events))
    assert isinstance(start, StartTransaction) and isinstance(stop, StopTransaction)
    assert (start.meter_start_wh, stop.meter_stop_wh) == (281_678, 285_000)
    site.apply(poll(VehicleState.B, 1300, 285_000))  # the next session bills from the true register
    site.apply(poll(VehicleState.A, 2000, 286_000))
    start, stop = sessions(drain(events))
    assert (start.meter_start_wh, stop.meter_stop_wh) == (285_000, 286_000)  # type: ignore[union-attr]


def test_the_last_good_register_survives_a_restart() -> None:
    """A glitch in the first poll after a restart is measured against the register kept on disk."""
    settings = DictSettings()
    before = Site([Connector(1, "phoenix")], [Meter("m", 1)], settings=settings)
    before.apply(MeterSnapshot("m", Reading(T0, energy_wh=50_000)))
    before.apply(MeterSnapshot("m", Reading(at(30), energy_wh=50_100)))  # not yet saved again (60 s)
    after = Site([Connector(1, "phoenix")], [Meter("m", 1)], settings=settings)
    after.restore()
    after.apply(MeterSnapshot("m", Reading(at(40), energy_wh=1_000_000_000)))
    assert after.meters["m"].reading is not None and after.meters["m"].reading.energy_wh is None
    assert after.billing_energy_wh(1) == 50_000
    after.apply(MeterSnapshot("m", Reading(at(41), energy_wh=10)))  # and backwards against it
    assert after.billing_energy_wh(1) == 50_000
    after.apply(MeterSnapshot("m", Reading(at(45), energy_wh=50_120)))
    assert after.billing_energy_wh(1) == 50_120


def test_a_configured_ceiling_bounds_the_rise() -> None:
    settings = DictSettings()
    site = Site([Connector(1, "dc", max_power_w=150_000)], [], settings=settings)
    site.apply(ChargerSnapshot("dc", 1, Reading(T0, energy_wh=10_000)))
    # 150 kW for 60 s = 2.5 kWh: plausible for this DC connector, not for an AC one
    site.apply(ChargerSnapshot("dc", 1, Reading(at(60), energy_wh=12_500)))
    assert site.billing_energy_wh(1) == 12_500
