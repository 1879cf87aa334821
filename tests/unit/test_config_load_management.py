"""``[load_management]``, connector priorities and charger wiring: parsed, checked, turned into settings."""

from __future__ import annotations

import pytest

from gateway.app import load_settings
from gateway.config import parse_config
from gateway.domain.phase_limits import Phase
from tests.unit.test_config import base, problems

SECTION = {"grid_meter": "m1", "fuse_a": 63, "fallback_a": 16}


def with_load(**changes: object) -> dict:
    data = base()
    data["load_management"] = {**SECTION, **changes}
    return data


def test_the_section_becomes_the_sharing_settings() -> None:
    data = with_load(rotation_min=5)
    data["chargers"][1]["grid_phases"] = ["L2", "L3", "L1"]
    data["chargers"][0]["grid_phases"] = ["L3"]
    data["connectors"] = [{"id": 3, "priority": 10}]
    settings = load_settings(parse_config(data))
    assert settings.grid is not None
    assert (settings.grid.grid_meter, settings.grid.fuse_a, settings.grid.margin_a, settings.grid.fallback_a) == (
        "m1",
        63.0,
        2.0,  # the default margin
        16.0,
    )
    assert settings.sharing.rotation_s == 300.0 and settings.sharing.min_on_s <= 300.0
    assert settings.wiring == {1: (Phase.L3,), 2: (Phase.L2, Phase.L3, Phase.L1), 3: (Phase.L2, Phase.L3, Phase.L1)}
    assert settings.priorities == {3: 10}


def test_without_the_section_nothing_but_the_csms_and_site_limits_is_shared() -> None:
    assert load_settings(parse_config(base())).grid is None


@pytest.mark.parametrize(
    ("changes", "key", "reason"),
    [
        ({"margin_a": 63}, "load_management", "margin_a (63 A) must be below fuse_a (63 A)"),
        ({"fallback_a": 70}, "load_management", "fallback_a (70 A) must not be above fuse_a - margin_a (61 A)"),
        ({"grid_meter": "nope"}, "load_management.grid_meter", "no [[meters]] named 'nope' (meters: m1)"),
        ({"fuse_a": 0}, "load_management.fuse_a", "greater than 0"),
        ({"fallback_a": None}, "load_management.fallback_a", ""),
        ({"rotation_min": 0.5}, "load_management.rotation_min", "greater than or equal to 1"),
    ],
)
def test_a_bad_section_names_the_key_and_the_reason(changes: dict, key: str, reason: str) -> None:
    data = with_load(**changes)
    data["load_management"] = {k: v for k, v in data["load_management"].items() if v is not None}
    found = problems(data)
    assert any(k == key and reason in r for k, r in found), found


def test_a_connector_meter_is_not_a_grid_meter_and_priorities_and_wiring_are_bounded() -> None:
    data = with_load()
    data["meters"][0]["connector"] = 1
    assert problems(data) == [
        (
            "load_management.grid_meter",
            "'m1' is connector 1's billing meter; the grid meter measures the whole site "
            "(connector = 0, or no connector)",
        )
    ]
    data = base()
    data["connectors"] = [{"id": 1, "priority": 1000}]
    assert problems(data)[0][0] == "connectors[0].priority"
    data = base()
    data["chargers"][0]["grid_phases"] = ["L4"]
    assert problems(data)[0][0] == "chargers[0].grid_phases[0]"
    data["chargers"][0]["grid_phases"] = []
    assert problems(data)[0][0] == "chargers[0].grid_phases"
