"""Which broker failures are a refusal that needs a change of config, and which key to change.

A broker that is down or unreachable is an outage: retrying cures it, and the bridge says so once
as a WARNING. A broker that answers "no" (wrong password, unknown CA, MQTT version it does not
speak) will say no forever until someone edits the config: that is an ERROR naming the key.
"""

from __future__ import annotations

import ssl

import aiomqtt
from aiomqtt.exceptions import MqttConnectError  # not exported by the package in 2.x

#: ``[mqtt] protocol`` values and the MQTT versions they select.
PROTOCOLS = {"3.1.1": aiomqtt.ProtocolVersion.V311, "5": aiomqtt.ProtocolVersion.V5}

# CONNACK codes that retrying will not cure: MQTT 3.1.1 return codes and their MQTT 5 reason codes
# (paho 2 reports both as the MQTT 5 code; older versions handed over the 3.1.1 int).
REFUSED_CREDENTIALS = frozenset({4, 5, 0x86, 0x87})  # bad user name or password; not authorised
REFUSED_PROTOCOL = frozenset({1, 0x84})  # unacceptable / unsupported protocol version
REFUSED_CLIENT_ID = frozenset({2, 0x85})  # client identifier not valid


def refusal_reason(exc: aiomqtt.MqttError, username: str | None, protocol: str) -> str | None:
    """Why the broker turned us away, naming the config key to fix; None for an outage that
    retrying may cure by itself (broker down, network gone). The password is never part of it."""
    if isinstance(exc, MqttConnectError):
        code = getattr(exc.rc, "value", exc.rc)
        if code in REFUSED_CREDENTIALS:
            if username is None:
                return f"refused an anonymous connection ({exc}); set [mqtt] username/password"
            return f"refused the credentials for user {username!r} ({exc}); check [mqtt] username/password"
        if code in REFUSED_PROTOCOL:
            return f"refused MQTT {protocol} ({exc}); check [mqtt] protocol"
        if code in REFUSED_CLIENT_ID:
            return f"refused the client id ({exc}); check [mqtt] client_id"
    cause = exc.__context__  # aiomqtt re-raises socket errors as MqttError(str(error)) from None
    if isinstance(cause, ssl.SSLCertVerificationError):
        return (
            f"presented a TLS certificate we do not trust ({cause.verify_message}); "
            "check [mqtt.tls] ca_file (and that the certificate names [mqtt] host)"
        )
    if isinstance(cause, ssl.SSLError):
        reason = getattr(cause, "reason", None) or str(cause)
        return f"failed the TLS handshake ({reason}); check [mqtt.tls] and that the port is a TLS listener"
    return None
