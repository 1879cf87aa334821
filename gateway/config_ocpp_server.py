"""``[ocpp_server]`` and ``[[ocpp_chargers]]``: the local OCPP 1.6J server and the chargers that
speak OCPP themselves (merged into the site, or relayed to the CSMS as they are).

Apart from ``gateway.config``, which composes the whole file, as the devices' and the sharing's
sections are: each section's rules live beside its model.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from gateway.config_sharing import GridPhases
from gateway.config_strict import Port, Strict


class OcppServerTlsConfig(Strict):
    """``[ocpp_server.tls]``: serve ``wss://`` (OCPP security profile 2); PEM files, checked when loaded."""

    cert_file: str  # the server certificate (the chain after it, if any)
    key_file: str | None = None  # its private key (not needed if cert_file holds it too)

    @field_validator("cert_file", "key_file")
    @classmethod
    def _file_exists(cls, path: str | None) -> str | None:
        if path is not None and not Path(path).is_file():
            raise ValueError(f"no such file: {path!r}")
        return path

    @model_validator(mode="after")
    def _loads(self) -> OcppServerTlsConfig:
        try:  # an unreadable file, a key that does not match or no PEM should fail check-config, not a charger
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(self.cert_file, self.key_file)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"cannot load the certificate and key: {exc}") from None
        return self


class OcppServerConfig(Strict):
    """``[ocpp_server]``: the local OCPP 1.6J server native chargers connect to (``ws://host:port/<identity>``)."""

    host: str = "127.0.0.1"  # "0.0.0.0" to accept chargers from the network
    port: Port = 9100
    tls: OcppServerTlsConfig | None = None
    max_frame_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 65536  # larger frames close the socket
    ping_interval_s: Annotated[float, Field(gt=0, le=3600)] = 30.0  # websocket keepalive pings
    ping_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0  # no pong (or close) by then: the charger is gone
    heartbeat_interval_s: Annotated[int, Field(gt=0)] = 300  # the interval BootNotification.conf gives chargers


class OcppChargerConfig(Strict):
    """``[[ocpp_chargers]]``: a charger that speaks OCPP 1.6J itself and connects to the local server."""

    identity: Annotated[str, Field(min_length=1, max_length=48)]  # CiString: compared case-insensitively
    password: SecretStr | None = None  # HTTP Basic auth (security profile 1); None: no auth (warned at start)
    # merged: the charger's connectors become site connectors (we are its CSMS); passthrough: relayed as is.
    mode: Literal["merged", "passthrough"] = "merged"
    connectors: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]  # site numbers, charger order
    # passthrough: Basic auth towards the CSMS as <identity> (``password`` is the charger's towards us).
    csms_password: SecretStr | None = None
    grid_phases: GridPhases | None = None  # how it is wired to the grid (see gateway.config_sharing)

    @model_validator(mode="after")
    def _csms_password_needs_passthrough(self) -> OcppChargerConfig:
        if self.csms_password is not None and self.mode != "passthrough":
            raise ValueError('csms_password is only used with mode = "passthrough"')
        return self

    @field_validator("identity")
    @classmethod
    def _fits_url_and_basic_auth(cls, identity: str) -> str:
        if not all("!" <= ch <= "~" for ch in identity):
            raise ValueError("must be printable ASCII without spaces")
        if bad := [ch for ch in "/?#%:" if ch in identity]:
            reason = "it is the last part of the charger's URL and the user name of its Basic auth"
            raise ValueError(f"may not contain {' '.join(bad)}: {reason}")
        return identity


def ocpp_charger_problems(chargers: list[OcppChargerConfig], seen: dict[int, str]) -> list[tuple[str, str]]:
    """Duplicate identities, and site connectors already taken (``seen``: number -> key path, extended here)."""
    problems: list[tuple[str, str]] = []
    identities: dict[str, str] = {}
    for i, charger in enumerate(chargers):
        other = identities.setdefault(charger.identity.casefold(), f"ocpp_chargers[{i}]")
        if other != f"ocpp_chargers[{i}]":
            reason = f"duplicate identity {charger.identity!r} (also {other}; identities ignore case)"
            problems.append((f"ocpp_chargers[{i}].identity", reason))
        for j, number in enumerate(charger.connectors):
            path = f"ocpp_chargers[{i}].connectors[{j}]"
            if number in seen:
                problems.append((path, f"connector {number} is already {seen[number]}"))
            seen.setdefault(number, path)
    return problems
