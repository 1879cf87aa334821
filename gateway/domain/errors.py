"""One exception tree for the whole gateway.

Adapters translate library errors into these with ``raise ... from exc`` so that callers only
ever need to know this tree (as httpx does with its ``map_exceptions``).
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration or a profile is invalid; ``problems`` lists ``(key path, reason)``."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{key}: {reason}" for key, reason in problems))


class DeviceError(GatewayError):
    """A field device (charger, meter) failed; the device is marked, never the gateway."""


class DeviceUnavailable(DeviceError):
    """The device cannot be reached (connection refused, reset, no route)."""


class DeviceTimeout(DeviceError):
    """The device did not answer in time."""


class DecodeError(DeviceError):
    """The device answered with something we cannot decode (exception response, bad length)."""


class UpstreamError(GatewayError):
    """The CSMS connection failed or the CSMS answered with an error."""


class CommandRejected(GatewayError):
    """A command (from the CSMS or MQTT) cannot be carried out; the message says why."""
