"""Connectors that would bill every session as 0 Wh are named by check_billing (issue 15)."""

from __future__ import annotations

from typing import Any

from gateway.config import parse_config
from gateway.config_checks import check_billing


def site(chargers: list[dict[str, Any]], meters: list[dict[str, Any]] | None = None, **more: Any) -> dict[str, Any]:
    return {
        "site": {"id": "s1"},
        "upstream": {"url": "ws://csms.example/ocpp", "charge_point_id": "GW1"},
        "chargers": chargers,
        "meters": meters or [],
        **more,
    }


def charger(name: str, profile: str, connector: int) -> dict[str, Any]:
    return {"name": name, "profile": profile, "host": f"10.0.0.{connector}", "connectors": [connector]}


def meter(name: str, connector: int | None) -> dict[str, Any]:
    return {
        "name": name,
        "profile": "eastron-sdm120",
        "host": "10.0.1.1",
        "unit_id": 10 + (connector or 0),
        "connector": connector,
    }


def test_a_charger_with_only_a_session_counter_and_no_meter_is_named_with_the_fix() -> None:
    config = parse_config(site([charger("ok", "phoenix-ev-eth", 1), charger("terra", "abb-terra-ac", 2)]))
    [(key, reason)] = check_billing(config)
    assert key == "chargers[1].connectors[0]"
    assert reason.startswith("connector 2 has no billing register: 'abb-terra-ac' has no lifetime energy register")
    assert "(only a per-session counter)" in reason
    assert "every session would be billed as 0 Wh" in reason
    assert reason.endswith("assign a meter to it ([[meters]] with connector = 2)")


def test_a_site_meter_or_an_mqtt_only_meter_does_not_bill_a_connector() -> None:
    meters = [meter("grid", 0), {**meter("spare", None), "unit_id": 30}]
    config = parse_config(site([charger("terra", "abb-terra-ac", 1)], meters))
    assert [key for key, _ in check_billing(config)] == ["chargers[0].connectors[0]"]


def test_a_meter_assigned_to_the_connector_is_its_billing_register() -> None:
    config = parse_config(site([charger("terra", "abb-terra-ac", 1), charger("hcc3", "mennekes-amtron-hcc3", 2)]))
    assert [key for key, _ in check_billing(config)] == ["chargers[0].connectors[0]", "chargers[1].connectors[0]"]
    metered = parse_config(
        site(
            [charger("terra", "abb-terra-ac", 1), charger("hcc3", "mennekes-amtron-hcc3", 2)],
            [meter("sub1", 1), meter("sub2", 2)],
        )
    )
    assert check_billing(metered) == []


def test_native_ocpp_chargers_report_their_own_register() -> None:
    config = parse_config(site([], ocpp_chargers=[{"identity": "CP-1", "connectors": [1]}]))
    assert check_billing(config) == []


def test_an_unknown_profile_is_left_to_the_profile_check() -> None:
    config = parse_config(site([charger("x", "no-such-profile", 1)]))
    assert check_billing(config) == []
