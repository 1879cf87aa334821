"""``[mqtt]`` connection keys: QoS, protocol, reconnect bound and the ``[mqtt.tls]`` table."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from gateway.config import parse_config
from tests.unit.test_config import base, problems


def with_mqtt(**mqtt: Any) -> dict[str, Any]:
    return {**base(), "mqtt": mqtt}


def test_defaults_qos_1_mqtt_3_1_1_plain_tcp() -> None:
    mqtt = parse_config(base()).mqtt
    assert (mqtt.qos, mqtt.protocol, mqtt.reconnect_max_s, mqtt.tls) == (1, "3.1.1", 30.0, None)


def test_qos_protocol_and_reconnect_are_checked_by_key() -> None:
    assert problems(with_mqtt(qos=3, protocol=5, reconnect_max_s=0)) == [
        ("mqtt.qos", "Input should be 0, 1 or 2"),
        ("mqtt.protocol", "Input should be '3.1.1' or '5'"),
        ("mqtt.reconnect_max_s", "Input should be greater than 0"),
    ]
    mqtt = parse_config(with_mqtt(qos=0, protocol="5", reconnect_max_s=5)).mqtt
    assert (mqtt.qos, mqtt.protocol, mqtt.reconnect_max_s) == (0, "5", 5.0)


def test_an_empty_tls_table_turns_tls_on_with_the_system_cas() -> None:
    text = '[site]\nid = "s1"\n[upstream]\nurl = "ws://csms/ocpp"\ncharge_point_id = "GW1"\n[mqtt.tls]\n'
    tls = parse_config(tomllib.loads(text)).mqtt.tls
    assert tls is not None
    assert (tls.ca_file, tls.cert_file, tls.key_file, tls.insecure) == (None, None, None, False)


def test_tls_files_must_exist_and_are_named_by_key(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    missing = str(tmp_path / "client.pem")
    assert problems(with_mqtt(tls={"ca_file": str(ca), "cert_file": missing, "insecure": True})) == [
        ("mqtt.tls.cert_file", f"no such file: {missing!r}")
    ]
    tls = parse_config(with_mqtt(tls={"ca_file": str(ca), "insecure": True})).mqtt.tls
    assert tls is not None and (tls.ca_file, tls.insecure) == (str(ca), True)


def test_a_client_key_needs_its_certificate(tmp_path: Path) -> None:
    key = tmp_path / "client.key"
    key.write_text("key")
    assert problems(with_mqtt(tls={"key_file": str(key)})) == [
        ("mqtt.tls.key_file", "a client key needs its certificate: set cert_file too")
    ]


def test_a_typo_in_the_tls_table_is_named() -> None:
    assert problems(with_mqtt(tls={"ca_flie": "x"})) == [("mqtt.tls.ca_flie", "unknown key (check the spelling)")]
