"""Config validation: every problem is named by its TOML key path, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_config, parse_config
from gateway.domain.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def base() -> dict:
    return {
        "site": {"id": "s1"},
        "upstream": {"url": "ws://csms.example/ocpp", "charge_point_id": "GW1"},
        "chargers": [
            {"name": "c1", "profile": "abb-terra-ac", "host": "10.0.0.2", "connectors": [1]},
            {"name": "c2", "profile": "phoenix-ev-eth", "host": "10.0.0.3", "connectors": [2, 3]},
        ],
        "meters": [{"name": "m1", "profile": "eastron-sdm630", "host": "10.0.0.4", "connector": 0}],
    }


def problems(data: dict) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return caught.value.problems


def test_shipped_config_is_valid() -> None:
    config = load_config(ROOT / "config.toml")
    assert config.connector_count == 2
    assert config.upstream.endpoint.endswith("/GW-DEMO-01")
    assert config.topic_prefix == "ocpp-gateway/demo-site"


def test_valid_config_defaults() -> None:
    config = parse_config(base())
    assert config.chargers[0].port == 502
    assert config.mqtt.port == 1883
    assert config.upstream.meter_values_sampled_data[0] == "Energy.Active.Import.Register"


def test_unknown_key_is_named() -> None:
    data = base()
    data["chargers"][1]["prot"] = 503
    assert problems(data) == [("chargers[1].prot", "unknown key (check the spelling)")]


def test_wrong_type_is_named() -> None:
    data = base()
    data["chargers"][0]["port"] = "five-oh-two"
    [(key, reason)] = problems(data)
    assert key == "chargers[0].port"
    assert "integer" in reason


def test_missing_key_is_named() -> None:
    data = base()
    del data["upstream"]["charge_point_id"]
    assert problems(data) == [("upstream.charge_point_id", "required key is missing")]


def test_duplicate_connector_is_named() -> None:
    data = base()
    data["chargers"][1]["connectors"] = [1, 2]
    found = problems(data)
    assert ("chargers[1].connectors[0]", "duplicate connector number 1 (also chargers[0].connectors[0])") in found


def test_gap_in_connector_numbers() -> None:
    data = base()
    data["chargers"][1]["connectors"] = [3]
    assert problems(data) == [("chargers", "connector numbers must run 1..N without gaps; missing [2]")]


def test_duplicate_device_name_and_bad_meter_connector() -> None:
    data = base()
    data["meters"][0]["name"] = "c1"
    data["meters"][0]["connector"] = 7
    found = dict(problems(data))
    assert "duplicate device name 'c1'" in found["meters[0].name"]
    assert "no connector 7" in found["meters[0].connector"]


def test_bad_url_and_measurand() -> None:
    data = base()
    data["upstream"]["url"] = "http://csms.example"
    data["upstream"]["meter_values_sampled_data"] = ["Energy.Active.Import.Register", "Bogus"]
    found = dict(problems(data))
    assert "ws:// or wss://" in found["upstream.url"]
    assert "Bogus" in found["upstream.meter_values_sampled_data"]


def test_toml_syntax_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[site\nid = 1\n")
    with pytest.raises(ConfigError) as caught:
        load_config(bad)
    assert "not valid TOML" in caught.value.problems[0][1]
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.toml")
    assert "cannot read the file" in caught.value.problems[0][1]


def test_password_is_never_printed() -> None:
    data = base()
    data["upstream"]["password"] = "hunter2"
    config = parse_config(data)
    assert "hunter2" not in repr(config)
    assert config.upstream.password is not None and config.upstream.password.get_secret_value() == "hunter2"


def test_connector_policies() -> None:
    data = base()
    data["connectors"] = [{"id": 1, "policy": "remote"}, {"id": 2, "id_tag": "CARPORT"}]
    config = parse_config(data)
    assert [(c.id, c.policy, c.id_tag) for c in config.connectors] == [(1, "remote", None), (2, "free", "CARPORT")]
    data["connectors"] = [{"id": 2, "policy": "remote", "id_tag": "X"}, {"id": 3, "policy": "sometimes"}]
    found = dict(problems(data))
    assert "id_tag is only used by the free policy" in found["connectors[0]"]
    assert "connectors[1].policy" in found
    data["connectors"] = [{"id": 9}, {"id": 3}, {"id": 3}]
    found = dict(problems(data))
    assert found["connectors[0].id"] == "no connector 9 (connectors: [1, 2, 3])"
    assert found["connectors[2].id"] == "connector 3 is already configured by connectors[1]"


def test_device_names_that_home_assistant_would_merge_are_refused() -> None:
    config = {
        "site": {"id": "s"},
        "upstream": {"url": "ws://127.0.0.1:9000/ocpp", "charge_point_id": "A"},
        "chargers": [
            {"name": "wb.1", "profile": "abb-terra-ac", "host": "127.0.0.1", "connectors": [1]},
            {"name": "WB_1", "profile": "abb-terra-ac", "host": "127.0.0.2", "connectors": [2]},
        ],
    }
    with pytest.raises(ConfigError, match=r"chargers\[1\]\.name: device name 'WB_1' reads the same as 'wb\.1'"):
        parse_config(config)


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("2.0.1", None),
        ("1.6", None),
        (1.6, 'write it in quotes, "1.6" or "2.0.1" (got the number 1.6)'),
        ("2.0", "Input should be '1.6' or '2.0.1'"),
        ("1.6J", "Input should be '1.6' or '2.0.1'"),
    ],
)
def test_the_ocpp_version_is_one_of_two_strings(version: object, expected: str | None) -> None:
    data = base()
    data["upstream"]["ocpp_version"] = version
    if expected is None:
        assert parse_config(data).upstream.ocpp_version == version
    else:
        assert problems(data) == [("upstream.ocpp_version", expected)]
    assert parse_config(base()).upstream.ocpp_version == "1.6"  # the default
