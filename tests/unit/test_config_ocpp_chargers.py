"""``[ocpp_server]`` and ``[[ocpp_chargers]]``: defaults, and every bad input named by its key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import parse_config
from gateway.config_summary import summary
from tests.fixtures.pki import make_pki
from tests.unit.test_config import base, problems  # base(): Modbus chargers on connectors 1, 2 and 3


def with_ocpp(*chargers: dict[str, Any], **server: Any) -> dict[str, Any]:
    data = {**base(), "ocpp_chargers": list(chargers)}
    if server:
        data["ocpp_server"] = server
    return data


def test_defaults() -> None:
    config = parse_config(with_ocpp({"identity": "CP-1", "connectors": [4]}))
    server, charger = config.ocpp_server, config.ocpp_chargers[0]
    assert (server.host, server.port, server.tls, server.max_frame_bytes) == ("127.0.0.1", 9100, None, 65536)
    assert (server.ping_interval_s, server.ping_timeout_s, server.heartbeat_interval_s) == (30, 30, 300)
    assert (charger.password, charger.mode, charger.connectors) == (None, "merged", [4])
    assert config.connector_count == 4


def test_ocpp_chargers_continue_the_site_numbering() -> None:
    config = parse_config(
        with_ocpp(
            {"identity": "CP-1", "password": "secret-1", "connectors": [5, 4]},  # charger connector 1 -> site 5
            {"identity": "CP-2", "mode": "passthrough", "connectors": [6]},
        )
    )
    assert [c.connectors for c in config.ocpp_chargers] == [[5, 4], [6]]
    assert config.connector_count == 5  # the passthrough charger's connector is its own, not the site's
    assert "secret-1" not in repr(config)


def test_a_connector_of_a_modbus_charger_is_named_with_both_places() -> None:
    assert problems(with_ocpp({"identity": "CP-1", "connectors": [3]})) == [
        ("ocpp_chargers[0].connectors[0]", "connector 3 is already chargers[1].connectors[1]")
    ]


def test_a_connector_twice_in_one_charger_or_in_two() -> None:
    found = problems(
        with_ocpp({"identity": "CP-1", "connectors": [4, 4]}, {"identity": "CP-2", "connectors": [5, 4]}),
    )
    assert found == [
        ("ocpp_chargers[0].connectors[1]", "connector 4 is already ocpp_chargers[0].connectors[0]"),
        ("ocpp_chargers[1].connectors[1]", "connector 4 is already ocpp_chargers[0].connectors[0]"),
    ]


def test_the_numbering_stays_gapless_across_modbus_and_ocpp_chargers() -> None:
    assert problems(with_ocpp({"identity": "CP-1", "connectors": [5]})) == [
        ("chargers + ocpp_chargers", "connector numbers must run 1..N without gaps; missing [4]")
    ]
    only_ocpp = {**with_ocpp({"identity": "CP-1", "connectors": [2, 1]}), "chargers": [], "meters": []}
    assert parse_config(only_ocpp).connector_count == 2


def test_duplicate_identity_ignores_case() -> None:
    found = problems(with_ocpp({"identity": "CP-1", "connectors": [4]}, {"identity": "cp-1", "connectors": [5]}))
    assert found == [
        ("ocpp_chargers[1].identity", "duplicate identity 'cp-1' (also ocpp_chargers[0]; identities ignore case)")
    ]


@pytest.mark.parametrize(
    ("charger", "key", "reason"),
    [
        ({"identity": "CP/1"}, "identity", "may not contain /: it is the last part of the charger's URL"),
        ({"identity": "CP:1"}, "identity", "may not contain :"),
        ({"identity": "CP 1"}, "identity", "must be printable ASCII without spaces"),
        ({"identity": "Ladesäule"}, "identity", "must be printable ASCII without spaces"),
        ({"identity": "C" * 49}, "identity", "String should have at most 48 characters"),
        ({"identity": ""}, "identity", "String should have at least 1 character"),
        ({"identity": "CP-1", "mode": "relay"}, "mode", "Input should be 'merged' or 'passthrough'"),
        ({"identity": "CP-1", "connectors": []}, "connectors", "List should have at least 1 item"),
        ({"identity": "CP-1", "connectors": [0]}, "connectors[0]", "Input should be greater than or equal to 1"),
        ({"identity": "CP-1", "pasword": "x"}, "pasword", "unknown key (check the spelling)"),
        ({"connectors": [4]}, "identity", "required key is missing"),
    ],
)
def test_bad_charger_keys_are_named(charger: dict[str, Any], key: str, reason: str) -> None:
    charger = {"connectors": [4], **charger}
    [(found_key, found_reason)] = problems(with_ocpp(charger))
    assert found_key == f"ocpp_chargers[0].{key}"
    assert reason in found_reason


@pytest.mark.parametrize(
    ("server", "key", "reason"),
    [
        ({"port": 0}, "port", "greater than or equal to 1"),
        ({"max_frame_bytes": 100}, "max_frame_bytes", "greater than or equal to 1024"),
        ({"ping_timeout_s": 0}, "ping_timeout_s", "greater than 0"),
        ({"heartbeat_interval_s": -5}, "heartbeat_interval_s", "greater than 0"),
        ({"hots": "0.0.0.0"}, "hots", "unknown key (check the spelling)"),
        ({"tls": {}}, "tls.cert_file", "required key is missing"),
        ({"tls": {"cert_file": "/nonexistent/server.crt"}}, "tls.cert_file", "no such file: '/nonexistent/server.crt'"),
    ],
)
def test_bad_server_keys_are_named(server: dict[str, Any], key: str, reason: str) -> None:
    [(found_key, found_reason)] = problems(with_ocpp({"identity": "CP-1", "connectors": [4]}, **server))
    assert found_key == f"ocpp_server.{key}"
    assert reason in found_reason


def test_tls_certificate_and_key_are_loaded_when_the_config_is(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    good = {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key)}
    assert parse_config(with_ocpp({"identity": "CP-1", "connectors": [4]}, tls=good)).ocpp_server.tls is not None
    mismatched = {"cert_file": str(pki.server_cert), "key_file": str(pki.client_key)}
    [(key, reason)] = problems(with_ocpp({"identity": "CP-1", "connectors": [4]}, tls=mismatched))
    assert key == "ocpp_server.tls"
    assert reason.startswith("cannot load the certificate and key:")


def test_meters_and_policies_may_name_an_ocpp_connector() -> None:
    data = with_ocpp({"identity": "CP-1", "connectors": [4]})
    data["meters"][0]["connector"] = 4
    data["connectors"] = [{"id": 4, "policy": "remote"}]
    assert parse_config(data).meters[0].connector == 4


def test_check_config_summary_lists_ocpp_chargers() -> None:
    config = parse_config(
        with_ocpp({"identity": "CP-1", "password": "pw", "connectors": [4, 5]}, host="0.0.0.0", port=9101)
    )
    text = summary(config)
    assert "upstream   ws://csms.example/ocpp/GW1, no auth: OCPP 1.6J, one charge point with 5 connector(s)" in text
    assert "ocpp       ws://0.0.0.0:9101/<identity> for 1 OCPP charger(s)" in text
    assert "    4  CP-1 connector 1  (OCPP 1.6J, merged, Basic auth)" in text
    assert "    5  CP-1 connector 2  (OCPP 1.6J, merged, Basic auth)" in text
    assert "ocpp " not in summary(parse_config(base()))


def test_ocpp_chargers_behind_a_2_0_1_station_are_named_by_their_evses() -> None:
    """Issue 19: a merged charger's connectors are EVSEs of the 2.0.1 station; a passthrough
    charger keeps its own 1.6 link under its identity. check-config says which."""
    data = with_ocpp(
        {"identity": "CP-1", "password": "pw", "connectors": [4, 5]},
        {"identity": "CP-P", "mode": "passthrough", "connectors": [6]},
    )
    data["upstream"]["ocpp_version"] = "2.0.1"
    text = summary(parse_config(data))  # accepted (it was refused before issue 19's native part)
    assert "OCPP 2.0.1, one charging station with 5 EVSE(s) (site connector n = EVSE n)" in text
    assert "    4  CP-1 connector 1  (OCPP 1.6J, merged: EVSE 4 of the 2.0.1 station, Basic auth)" in text
    assert "    5  CP-1 connector 2  (OCPP 1.6J, merged: EVSE 5 of the 2.0.1 station, Basic auth)" in text
    assert "    6  CP-P connector 1  (OCPP 1.6J, passthrough: its own OCPP 1.6 link to the CSMS as CP-P" in text
