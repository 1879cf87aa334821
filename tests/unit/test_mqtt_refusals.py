"""Which connect failures are a refusal to fix in the config, and the key each names (no broker needed)."""

from __future__ import annotations

import ssl

import aiomqtt
import pytest
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from adapters.mqtt.refusals import refusal_reason


def connack(code: int) -> MqttConnectError:
    """What aiomqtt raises for a negative CONNACK: paho 2 hands over a ReasonCode, older an int."""
    return MqttConnectError(ReasonCode(PacketTypes.CONNACK, identifier=code) if code >= 0x80 else code)


def from_socket(error: OSError) -> aiomqtt.MqttError:
    """aiomqtt turns a socket error into ``MqttError(str(error)) from None`` (the cause stays the context)."""
    try:
        try:
            raise error
        except OSError as exc:
            raise aiomqtt.MqttError(str(exc)) from None
    except aiomqtt.MqttError as wrapped:
        return wrapped


@pytest.mark.parametrize("code", [4, 5, 0x86, 0x87])
def test_bad_credentials_name_the_user_and_the_keys_never_the_password(code: int) -> None:
    reason = refusal_reason(connack(code), "gw", "3.1.1")
    assert reason is not None
    assert "refused the credentials for user 'gw'" in reason
    assert reason.endswith("check [mqtt] username/password")
    anonymous = refusal_reason(connack(code), None, "3.1.1")
    assert anonymous is not None and "anonymous" in anonymous


@pytest.mark.parametrize(
    ("code", "key"), [(1, "[mqtt] protocol"), (0x84, "[mqtt] protocol"), (0x85, "[mqtt] client_id")]
)
def test_protocol_and_client_id_refusals_name_their_key(code: int, key: str) -> None:
    reason = refusal_reason(connack(code), "gw", "5")
    assert reason is not None and reason.endswith(f"check {key}")


def test_tls_failures_name_the_tls_table() -> None:
    untrusted = ssl.SSLCertVerificationError(1, "certificate verify failed")
    untrusted.verify_message = "self-signed certificate in certificate chain"
    reason = refusal_reason(from_socket(untrusted), None, "3.1.1")
    assert reason is not None and "self-signed certificate" in reason and "[mqtt.tls] ca_file" in reason
    handshake = refusal_reason(from_socket(ssl.SSLError(1, "wrong version number")), None, "3.1.1")
    assert handshake is not None and "TLS listener" in handshake


@pytest.mark.parametrize(
    "error",
    [
        from_socket(ConnectionRefusedError(111, "Connection refused")),
        aiomqtt.MqttError("Operation timed out"),
        connack(3),  # server unavailable: retrying is the cure
        connack(0x88),
    ],
)
def test_an_outage_is_not_a_refusal(error: aiomqtt.MqttError) -> None:
    assert refusal_reason(error, "gw", "3.1.1") is None
