"""The SoC sent upstream is the best one the Site knows, stamped with the time it was measured."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from adapters.ocpp_upstream.sampling import site_meter_values
from gateway.domain.model import ChargerSnapshot, Connector, DeviceFailed, Reading, VehicleState
from gateway.services.site import Site

T0 = datetime(2026, 5, 1, 18, 0, tzinfo=UTC)
MEASURANDS = ["Energy.Active.Import.Register", "SoC"]


class FixedClock:
    def now(self) -> datetime:
        return T0


def make(soc: float | None = None) -> Site:
    site = Site([Connector(1, "wb")], [], clock=FixedClock())
    reading = Reading(T0, energy_wh=5_000, soc_percent=soc)
    site.apply(ChargerSnapshot("wb", 1, reading, vehicle_state=VehicleState.B))
    return site


def sent(site: Site, **kwargs: object) -> list[tuple[str, list[tuple[str, str, str | None, str | None]]]]:
    [(connector_id, values)] = site_meter_values(site, MEASURANDS, **kwargs)  # type: ignore[arg-type]
    assert connector_id == 1
    return [(v.timestamp, [(s.measurand, s.value, s.unit, s.location) for s in v.sampled_value]) for v in values]


def test_the_chargers_soc_goes_with_the_values_measured_with_it() -> None:
    assert sent(make(soc=64.0)) == [
        (
            "2026-05-01T18:00:00.000Z",
            [("Energy.Active.Import.Register", "5000", "Wh", "Outlet"), ("SoC", "64", "Percent", "EV")],
        )
    ]


def test_a_reported_soc_measured_at_another_time_has_its_own_element_and_time() -> None:
    site = make(soc=64.0)
    site.report_battery(1, 71.5, None)  # newer than the charger's (the clock is at T0: a tie goes to the report)
    assert sent(site)[0][1][-1] == ("SoC", "71.5", "Percent", "EV")  # same time: one element
    site.report_battery(1, 72.5, None, T0 + timedelta(seconds=1))  # ahead of our clock: counts as now
    site.apply(ChargerSnapshot("wb", 1, Reading(T0 + timedelta(seconds=5), energy_wh=5_001), VehicleState.B))
    assert sent(site) == [
        ("2026-05-01T18:00:05.000Z", [("Energy.Active.Import.Register", "5001", "Wh", "Outlet")]),
        ("2026-05-01T18:00:00.000Z", [("SoC", "72.5", "Percent", "EV")]),
    ]


def test_clock_aligned_values_carry_the_boundary_and_a_soc_without_a_charger() -> None:
    site = make()
    site.report_battery(1, 30.0, None, T0 - timedelta(minutes=4))
    boundary = T0 + timedelta(minutes=15)
    assert sent(site, context="Sample.Clock", stamp=boundary) == [
        (
            "2026-05-01T18:15:00.000Z",
            [("Energy.Active.Import.Register", "5000", "Wh", "Outlet"), ("SoC", "30", "Percent", "EV")],
        )
    ]
    assert sent(site)[1] == ("2026-05-01T17:56:00.000Z", [("SoC", "30", "Percent", "EV")])
    site.apply(DeviceFailed("wb", "timeout", T0))  # the charger is away; the car integration's SoC is not
    assert sent(site) == [("2026-05-01T17:56:00.000Z", [("SoC", "30", "Percent", "EV")])]
