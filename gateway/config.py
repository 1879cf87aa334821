"""The gateway's configuration: pydantic models for config.toml.

Every error names the TOML key path and the reason (``chargers[1].port: ...``), because the
person reading it is an installer with a text editor, not a Python developer. Unknown keys are
errors: a typo must not pass silently.
"""

from __future__ import annotations

import os
import re
import ssl
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.config_devices import ChargerConfig, DeviceConfig, MeterConfig
from gateway.config_ocpp_server import OcppChargerConfig, OcppServerConfig, ocpp_charger_problems
from gateway.config_sharing import LoadManagementConfig, load_management_problems
from gateway.config_strict import Name, Port, Strict
from gateway.domain.errors import ConfigError

# Measurands the gateway can fill from a device Reading (OCPP 1.6 names, as configured by a CSMS).
SUPPORTED_MEASURANDS = (
    "Energy.Active.Import.Register",
    "Power.Active.Import",
    "Current.Import",
    "Voltage",
    "Current.Offered",
    "Frequency",
    "Temperature",
    "SoC",
)
DEFAULT_MEASURANDS = ("Energy.Active.Import.Register", "Power.Active.Import", "Current.Import", "Voltage")


class SiteConfig(Strict):
    id: Name
    name: str = ""
    # Where settings the CSMS changes (configuration keys, availability, local list, charging
    # profiles) are kept across restarts; relative paths are relative to the working directory.
    state_dir: str = "state"


class TlsFiles(Strict):
    """The PEM files of a TLS client: relative paths are relative to the working directory, and
    each is checked to exist and be readable when the config is loaded."""

    ca_file: str | None = None  # the CA that signed the server's certificate (None: the system's CAs)
    cert_file: str | None = None  # client certificate, for servers that require one
    key_file: str | None = None  # its private key (not needed if cert_file holds it too)

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _readable_file(cls, path: str | None) -> str | None:
        if path is not None and not Path(path).is_file():
            raise ValueError(f"no such file: {path!r}")
        if path is not None and not os.access(path, os.R_OK):
            raise ValueError(f"cannot read the file {path!r} (permissions)")
        return path

    @field_validator("key_file")
    @classmethod
    def _key_with_cert(cls, path: str | None, info: ValidationInfo) -> str | None:
        if path is not None and info.data.get("cert_file") is None:
            raise ValueError("a client key needs its certificate: set cert_file too")
        return path


class MqttTlsConfig(TlsFiles):
    """``[mqtt.tls]``: connect to the broker over TLS; on as soon as the table is present.
    Without ``ca_file`` the system's trusted CAs verify the broker."""

    insecure: bool = False  # skip the check that the broker's certificate names `host` (logged as a warning)


class UpstreamTlsConfig(TlsFiles):
    """``[upstream.tls]``: OCPP security profile 2 (the CSMS's certificate checked against
    ``ca_file``, else the system's CAs) and, with ``cert_file``, profile 3 (the gateway shows its
    own client certificate). Needs a ``wss://`` url. There is no switch to skip the check: a
    security profile that does not check the CSMS is none."""

    @model_validator(mode="after")
    def _loads(self) -> UpstreamTlsConfig:
        try:  # a certificate and key that do not match should fail check-config, not every connection
            context = ssl.create_default_context(cafile=self.ca_file)
            if self.cert_file is not None:
                context.load_cert_chain(self.cert_file, self.key_file)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"cannot load the certificates: {exc}") from None
        return self


class UpstreamConfig(Strict):
    """The CSMS the whole site reports to as one charge point."""

    url: str
    charge_point_id: Name
    password: SecretStr | None = None  # HTTP Basic auth (security profile 1), user = charge_point_id
    vendor: Annotated[str, Field(max_length=20)] = "ocpp-gateway"
    model: Annotated[str, Field(max_length=20)] = "site-gateway"
    heartbeat_interval_s: Annotated[int, Field(gt=0)] = 300
    meter_value_sample_interval_s: Annotated[int, Field(ge=0)] = 60
    meter_values_sampled_data: tuple[str, ...] = DEFAULT_MEASURANDS
    response_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    reconnect_max_s: Annotated[float, Field(gt=0)] = 60.0
    transaction_message_attempts: Annotated[int, Field(gt=0)] = 3
    transaction_message_retry_interval_s: Annotated[int, Field(gt=0)] = 30
    # a backlog's MeterValues of one connector and transaction per request (1: one by one, as live)
    meter_values_per_request: Annotated[int, Field(ge=1, le=1000)] = 50
    # "1.6": one OCPP 1.6J charge point; "2.0.1": one OCPP 2.0.1 charging station, connectors as EVSEs
    ocpp_version: Literal["1.6", "2.0.1"] = "1.6"
    tls: UpstreamTlsConfig | None = None  # security profiles 2 and 3 (wss:// only)

    @field_validator("url")
    @classmethod
    def _websocket_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"must be a ws:// or wss:// URL, got {url!r}")
        return url.rstrip("/")

    @field_validator("ocpp_version", mode="before")
    @classmethod
    def _version_in_quotes(cls, version: object) -> object:
        if isinstance(version, int | float) and not isinstance(version, bool):  # TOML's 1.6 is a number
            raise ValueError(f'write it in quotes, "1.6" or "2.0.1" (got the number {version!r})')
        return version

    @field_validator("meter_values_sampled_data")
    @classmethod
    def _known_measurands(cls, measurands: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [m for m in measurands if m not in SUPPORTED_MEASURANDS]
        if unknown:
            raise ValueError(f"unsupported measurand(s) {unknown}; supported: {', '.join(SUPPORTED_MEASURANDS)}")
        return measurands

    @model_validator(mode="after")
    def _tls_needs_wss(self) -> UpstreamConfig:
        if self.tls is not None and not self.url.startswith("wss://"):
            raise ValueError("[upstream.tls] needs a wss:// url (TLS is what wss means)")
        return self

    @property
    def endpoint(self) -> str:
        """The websocket URL with the charge point identity appended, as OCPP-J requires."""
        return f"{self.url}/{self.charge_point_id}"


class OutboxConfig(Strict):
    """Bounds of the durable queue of messages waiting for the CSMS (see README "While the CSMS is away")."""

    max_size_mb: Annotated[float, Field(gt=0)] = 256
    thin_after_records: Annotated[int, Field(gt=0)] = 100_000
    thin_window_s: Annotated[int, Field(gt=0)] = 900


class HistoryConfig(Strict):
    """``[history]``: the operator's history on the box (docs/history.md): sessions and the event
    log, kept ``retention_days`` (default 400: more than 13 months, this month against last
    year's); the one-minute series always 7 days."""

    enabled: bool = True
    retention_days: Annotated[int, Field(ge=1, le=36_500)] = 400


class MqttCommandsConfig(Strict):
    """Which MQTT command topics the gateway acts on (``[mqtt.commands]``); all off by default,
    because anyone who may publish on the broker may then steer the chargers."""

    soc_input: bool = False  # <prefix>/connector/<n>/set/soc: a car integration's SoC and capacity
    soc_target: bool = False  # <prefix>/connector/<n>/set/soc_target: the SoC at which charging pauses
    current_limit: bool = False  # <prefix>/connector/<n>/set/current_limit: a ceiling in A (or none)
    availability: bool = False  # <prefix>/connector/<n>/set/available: take out of service / back
    session: bool = False  # <prefix>/connector/<n>/set/session: start/stop where the policy allows it
    site_limit: bool = False  # <prefix>/site/set/limit: what all chargers together may draw per phase, A (or none)

    @property
    def enabled(self) -> frozenset[str]:
        """The names of the commands that are on."""
        return frozenset(name for name, on in self.model_dump().items() if on)


class MqttConfig(Strict):
    host: str = "127.0.0.1"
    port: Port = 1883
    username: str | None = None
    password: SecretStr | None = None
    topic_prefix: str | None = None  # default: ocpp-gateway/<site.id>
    client_id: str | None = None  # default: ocpp-gateway-<site.id>
    qos: Literal[0, 1, 2] = 1  # of the state topics; availability always uses 1
    # 3.1.1 by default: every broker speaks it, the embedded one (amqtt) speaks nothing else, and
    # nothing the gateway publishes needs an MQTT 5 feature.
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    reconnect_max_s: Annotated[float, Field(gt=0, le=3600)] = 30.0  # upper bound of the reconnect backoff
    tls: MqttTlsConfig | None = None  # [mqtt.tls]
    commands: MqttCommandsConfig = MqttCommandsConfig()
    discovery_prefix: Annotated[str, Field(pattern=r"^([^/+#]+(/[^/+#]+)*)?$")] = "homeassistant"  # "": no HA discovery

    @field_validator("topic_prefix")
    @classmethod
    def _no_wildcards(cls, prefix: str | None) -> str | None:
        if prefix is not None and (not prefix or any(ch in prefix for ch in "#+") or prefix.endswith("/")):
            raise ValueError("must be a non-empty topic without wildcards (+, #) or a trailing '/'")
        return prefix


class ConnectorConfig(Strict):
    """How sessions on one connector are authorised (connectors not listed: ``free``)."""

    id: Annotated[int, Field(ge=1)]
    # free: every car charges, recorded under id_tag; remote: the CSMS starts sessions
    # (RemoteStartTransaction); local_list: an RFID card read by the charger.
    policy: Literal["free", "remote", "local_list"] = "free"
    id_tag: Annotated[str, Field(min_length=1, max_length=20)] | None = None  # free only; default "ocpp-gateway"
    # Pause charging (SuspendedEVSE) once the car's state of charge reaches this, where a source has
    # it; an MQTT soc_target command replaces it at runtime (until this value is changed).
    soc_target_percent: Annotated[float, Field(gt=0, le=100)] | None = None
    # The most the connector can deliver, in kW (default 44: any AC charger). Its billing register
    # may not rise faster than this (x 1.5, + 1 kWh): a faster rise is a meter glitch, never billed.
    max_power_kw: Annotated[float, Field(gt=0, le=10_000)] | None = None
    # Site power sharing: a higher priority is served first (docs/load-management.md).
    priority: Annotated[int, Field(ge=-100, le=100)] = 0

    @model_validator(mode="after")
    def _tag_for_free_only(self) -> ConnectorConfig:
        if self.id_tag is not None and self.policy != "free":
            raise ValueError(f"id_tag is only used by the free policy, not {self.policy!r}")
        return self


class StatusPageConfig(Strict):
    """``[status_page]``: the local status page, ``/api/status``, ``/healthz`` and ``/metrics``."""

    enabled: bool = True
    host: str = "127.0.0.1"  # this box only; "0.0.0.0" to reach it from the network (set a password then)
    port: Port = 8080
    username: str | None = None  # HTTP Basic auth for everything but /healthz, with ``password``
    password: SecretStr | None = None
    # Stop sessions and take connectors out of service from the page: only with a password,
    # because whoever can reach the page could otherwise switch the chargers.
    commands: bool = False

    @model_validator(mode="after")
    def _auth_complete(self) -> StatusPageConfig:
        problems = []  # raised as ConfigError: pydantic would only name ``status_page``, not the key
        if self.password is not None and not self.username:
            problems.append(("status_page.username", "a password needs a user name (HTTP Basic auth)"))
        if self.username and self.password is None:
            problems.append(("status_page.password", "a user name needs a password (HTTP Basic auth)"))
        if self.password is not None and not self.password.get_secret_value():
            problems.append(("status_page.password", "must not be empty"))
        if self.commands and self.password is None:
            reason = "the page can switch chargers only behind a password: set username and password"
            problems.append(("status_page.commands", reason))
        if problems:
            raise ConfigError(problems)
        return self


class GatewayConfig(Strict):
    site: SiteConfig
    upstream: UpstreamConfig
    outbox: OutboxConfig = OutboxConfig()
    mqtt: MqttConfig = MqttConfig()
    chargers: list[ChargerConfig] = []
    meters: list[MeterConfig] = []
    connectors: list[ConnectorConfig] = []
    ocpp_server: OcppServerConfig = OcppServerConfig()
    ocpp_chargers: list[OcppChargerConfig] = []
    status_page: StatusPageConfig = StatusPageConfig()
    load_management: LoadManagementConfig | None = None
    history: HistoryConfig = HistoryConfig()

    @model_validator(mode="after")
    def _consistent(self) -> GatewayConfig:
        problems: list[tuple[str, str]] = []
        names: dict[str, str] = {}
        folded_names: dict[str, tuple[str, str]] = {}
        devices: list[tuple[str, DeviceConfig]] = [(f"chargers[{i}]", c) for i, c in enumerate(self.chargers)]
        devices += [(f"meters[{i}]", m) for i, m in enumerate(self.meters)]
        for path, device in devices:
            problems += [(f"{path}.{key}" if key else path, reason) for key, reason in device.transport_problems()]
            if device.name in names:
                problems.append((f"{path}.name", f"duplicate device name {device.name!r} (also {names[device.name]})"))
            names.setdefault(device.name, path)
            # Home Assistant entity ids keep only lowercase letters, digits and '_': 'wb.1' and
            # 'WB_1' would become one device there.
            folded = re.sub(r"[^a-z0-9]+", "_", device.name.lower())
            twin = folded_names.setdefault(folded, (device.name, path))
            if twin[0] != device.name:
                reason = f"device name {device.name!r} reads the same as {twin[0]!r} ({twin[1]}) in Home Assistant"
                problems.append((f"{path}.name", reason))
        seen: dict[int, str] = {}
        for i, charger in enumerate(self.chargers):
            for j, number in enumerate(charger.connectors):
                path = f"chargers[{i}].connectors[{j}]"
                if number in seen:
                    problems.append((path, f"duplicate connector number {number} (also {seen[number]})"))
                seen.setdefault(number, path)
        problems += ocpp_charger_problems(self.ocpp_chargers, seen)
        site_identity = self.upstream.charge_point_id.casefold()
        for i, charger in enumerate(self.ocpp_chargers):  # the CSMS would take one connection for the other
            if charger.mode == "passthrough" and charger.identity.casefold() == site_identity:
                reason = f"{charger.identity!r} is upstream.charge_point_id, the site's own identity at the CSMS"
                problems.append((f"ocpp_chargers[{i}].identity", reason))
        missing = sorted(set(range(1, len(seen) + 1)) - set(seen))
        if missing:
            key = "chargers + ocpp_chargers" if self.ocpp_chargers else "chargers"
            problems.append((key, f"connector numbers must run 1..N without gaps; missing {missing}"))
        own = [n for c in self.chargers for n in c.connectors]
        own += [n for c in self.ocpp_chargers if c.mode == "merged" for n in c.connectors]
        for i, charger in enumerate(self.ocpp_chargers):
            for j, number in enumerate(charger.connectors if charger.mode == "passthrough" else []):
                if own and number < max(own):
                    reason = (
                        f"a passthrough charger's connectors come after the site's own (1..{len(own)}): "
                        "they are not part of the site's charge point"
                    )
                    problems.append((f"ocpp_chargers[{i}].connectors[{j}]", reason))
        metered: dict[int, str] = {}
        for i, meter in enumerate(self.meters):
            path = f"meters[{i}].connector"
            if meter.connector is None:
                continue
            if meter.connector and meter.connector not in seen:
                problems.append((path, f"no connector {meter.connector} (connectors: {sorted(seen)})"))
            if meter.connector in metered:
                problems.append((path, f"connector {meter.connector} already has meter {metered[meter.connector]}"))
            metered.setdefault(meter.connector, path)
        configured: dict[int, str] = {}
        for i, connector in enumerate(self.connectors):
            path = f"connectors[{i}].id"
            if connector.id not in seen:
                problems.append((path, f"no connector {connector.id} (connectors: {sorted(seen)})"))
            if connector.id in configured:
                problems.append((path, f"connector {connector.id} is already configured by {configured[connector.id]}"))
            configured.setdefault(connector.id, f"connectors[{i}]")
        problems += load_management_problems(self)
        if problems:
            raise ConfigError(problems)
        return self

    @property
    def topic_prefix(self) -> str:
        return self.mqtt.topic_prefix or f"ocpp-gateway/{self.site.id}"

    @property
    def connector_count(self) -> int:
        """Connectors of the site's one charge point (a passthrough charger's are its own)."""
        merged = [c for c in self.ocpp_chargers if c.mode == "merged"]
        return sum(len(c.connectors) for c in [*self.chargers, *merged])


def _key_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def _reason(error: dict[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key (check the spelling)"
    if error["type"] == "missing":
        return "required key is missing"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def parse_config(data: dict[str, Any]) -> GatewayConfig:
    """Validate already-parsed TOML; raises ConfigError listing every problem with its key path."""
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        problems: list[tuple[str, str]] = []
        for error in exc.errors():
            cause = error.get("ctx", {}).get("error")
            if isinstance(cause, ConfigError):
                problems.extend(cause.problems)
            else:
                problems.append((_key_path(error["loc"]), _reason(error)))
        raise ConfigError(problems) from None


def config_text(path: Path) -> str:
    """The file's text. TOML is UTF-8; a leading byte order mark (Windows Notepad writes one) is
    dropped, since it says nothing but "UTF-8". Anything else that is not UTF-8 (an editor that
    saved Latin-1) is a ConfigError naming the first bad byte's line and column: decoding it some
    other way would turn a charge point id or an id tag into something the CSMS does not know."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([(str(path), f"cannot read the file: {exc.strerror or exc}")]) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            reason = "the file is saved as UTF-16; save it as UTF-8 (TOML files are UTF-8)"
        else:
            before = raw[: exc.start]  # valid UTF-8: this is the first bad byte
            line, column = before.count(b"\n") + 1, len(before.rsplit(b"\n", 1)[-1].decode("utf-8-sig")) + 1
            reason = (
                f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at line {line}, column {column}; "
                "save the file as UTF-8 (TOML files are UTF-8)"
            )
        raise ConfigError([(str(path), reason)]) from None


def load_config(path: Path) -> GatewayConfig:
    """Read and validate a config file; raises ConfigError (never a traceback for a user's mistake)."""
    text = config_text(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([(str(path), f"not valid TOML: {exc}")]) from None
    except RecursionError:
        raise ConfigError([(str(path), "not valid TOML: nested too deep")]) from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise ConfigError([(str(path), f"not valid TOML: {exc}")]) from None
    return parse_config(data)
