"""The battery of a connector's car: best SoC, its source, estimates and targets (pure, times passed in)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from gateway.domain.battery import Battery, SocSource, SocTargets, SocValue, estimate_soc_percent
from gateway.domain.errors import CommandRejected

T0 = datetime(2026, 5, 1, 18, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_nothing_known_is_none() -> None:
    assert Battery().best() is None


def test_the_newest_measured_value_wins_whatever_its_source() -> None:
    battery = Battery()
    battery.charger_soc(50.0, at(0))
    assert battery.best() == SocValue(50.0, SocSource.CHARGER, at(0))
    battery.report(55.0, None, at(1), now=at(1))
    assert battery.best() == SocValue(55.0, SocSource.REPORT, at(1))
    battery.charger_soc(56.0, at(2))
    assert battery.best() == SocValue(56.0, SocSource.CHARGER, at(2))
    battery.charger_soc(None, at(3))  # the charger has no SoC now: its last one stays, with its time
    assert battery.best() == SocValue(56.0, SocSource.CHARGER, at(2))


def test_a_report_older_than_the_last_one_is_ignored_but_its_capacity_is_taken() -> None:
    battery = Battery()
    battery.report(60.0, None, at(10), now=at(10))
    battery.report(40.0, 50_000, at(5), now=at(11))
    assert battery.best() == SocValue(60.0, SocSource.REPORT, at(10))
    assert battery.capacity_wh == 50_000


def test_estimate_is_start_soc_plus_energy_since_over_capacity_at_the_register_time() -> None:
    battery = Battery()
    battery.register(10_000, at(0))
    battery.report(40.0, 50_000, at(0.5), now=at(0.5))
    assert battery.best() == SocValue(40.0, SocSource.REPORT, at(0.5))  # nothing delivered since yet
    battery.register(20_000, at(60))
    estimate = battery.best()
    assert estimate == SocValue(60.0, SocSource.ESTIMATE, at(60))
    assert estimate is not None and estimate.estimated
    battery.register(60_000, at(300))
    assert battery.best() == SocValue(100.0, SocSource.ESTIMATE, at(300))  # clamped


def test_capacity_and_start_soc_may_come_in_separate_reports() -> None:
    battery = Battery()
    battery.register(1_000, at(0))
    battery.report(20.0, None, at(0), now=at(0))
    battery.register(5_000, at(10))
    assert battery.best() == SocValue(20.0, SocSource.REPORT, at(0))  # no capacity: no estimate
    battery.report(None, 40_000, at(11), now=at(11))
    assert battery.best() == SocValue(30.0, SocSource.ESTIMATE, at(10))  # from the report, 4 kWh of 40


def test_a_report_before_the_first_register_reading_starts_from_that_reading() -> None:
    battery = Battery()
    battery.report(50.0, 60_000, at(0), now=at(0))
    battery.register(100_000, at(1))
    assert battery.best() == SocValue(50.0, SocSource.REPORT, at(0))
    battery.register(106_000, at(30))
    assert battery.best() == SocValue(60.0, SocSource.ESTIMATE, at(30))


def test_a_fresh_measurement_beats_the_estimate_and_a_new_report_restarts_it() -> None:
    battery = Battery()
    battery.register(0, at(0))
    battery.report(40.0, 50_000, at(0), now=at(0))
    battery.register(5_000, at(20))
    assert battery.best() == SocValue(50.0, SocSource.ESTIMATE, at(20))
    battery.charger_soc(48.0, at(21))
    assert battery.best() == SocValue(48.0, SocSource.CHARGER, at(21))
    battery.report(49.0, None, at(22), now=at(22))
    battery.register(10_000, at(40))
    assert battery.best() == SocValue(59.0, SocSource.ESTIMATE, at(40))  # 49 % + 5 kWh of 50


def test_estimates_are_rounded_and_never_go_down() -> None:
    assert estimate_soc_percent(33.3, 1_234, 77_000) == 34.9
    assert estimate_soc_percent(33.3, -500, 77_000) == 33.3
    assert estimate_soc_percent(99.0, 10_000, 50_000) == 100.0


@pytest.mark.parametrize(
    ("soc", "capacity", "minutes_ahead", "reason"),
    [
        (None, None, 0, "needs soc_percent or capacity_wh"),
        (101.0, None, 0, "soc_percent must be 0..100"),
        (-1.0, None, 0, "soc_percent must be 0..100"),
        (50.0, 0.0, 0, "capacity_wh must be 1000..500000"),
        (50.0, 1e-300, 0, "capacity_wh must be 1000..500000"),  # made every Wh jump the estimate to 100 %
        (50.0, 999.0, 0, "capacity_wh must be 1000..500000"),
        (50.0, 500_001.0, 0, "capacity_wh must be 1000..500000"),
        (50.0, math.nan, 0, "capacity_wh must be 1000..500000"),
        (math.nan, None, 0, "soc_percent must be 0..100"),
        (50.0, None, 6, "in the future"),
    ],
)
def test_a_bad_report_is_rejected_and_changes_nothing(
    soc: float | None, capacity: float | None, minutes_ahead: float, reason: str
) -> None:
    battery = Battery()
    battery.report(30.0, 40_000, at(0), now=at(0))
    with pytest.raises(CommandRejected, match=reason):
        battery.report(soc, capacity, at(1 + minutes_ahead), now=at(1))
    assert battery.best() == SocValue(30.0, SocSource.REPORT, at(0))
    assert battery.capacity_wh == 40_000


def test_a_report_slightly_ahead_of_our_clock_counts_as_now() -> None:
    battery = Battery()
    battery.report(30.0, None, at(4), now=at(0))
    assert battery.best() == SocValue(30.0, SocSource.REPORT, at(0))


def test_targets_default_to_the_config_and_are_replaced_at_runtime() -> None:
    targets = SocTargets({1: 90.0})
    assert (targets.get(1), targets.get(2)) == (90.0, None)
    targets.set(1, None)  # charge to full, whatever the config says
    targets.set(2, 80.0)
    assert (targets.get(1), targets.get(2)) == (None, 80.0)
    with pytest.raises(CommandRejected, match="soc_target_percent"):
        targets.set(2, 0.0)
    with pytest.raises(CommandRejected, match="soc_target_percent"):
        targets.set(2, math.nan)  # passed the old check: NaN compares false to both bounds
    assert targets.get(2) == 80.0
    assert targets.to_dict() == {"1": {"percent": None, "default": 90.0}, "2": {"percent": 80.0, "default": None}}


def test_stored_targets_come_back_unless_the_config_changed_since() -> None:
    stored = SocTargets({1: 90.0, 2: 70.0})
    stored.set(1, 60.0)
    stored.set(2, 75.0)
    restarted = SocTargets({1: 90.0, 2: 85.0})  # the installer changed connector 2's target meanwhile
    notes = restarted.load_dict({**stored.to_dict(), "9": {"percent": 50, "default": None}, "x": 3}, {1, 2})
    assert (restarted.get(1), restarted.get(2)) == (60.0, 85.0)
    assert len(notes) == 3
    assert "connector 2: the config's soc_target_percent changed" in notes[0]
