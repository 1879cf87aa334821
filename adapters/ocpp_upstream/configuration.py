"""The charge point's OCPP configuration keys (GetConfiguration / ChangeConfiguration).

Holds typed values and validates changes; a loop that depends on a key waits with ``wait_changed``.
Keys are CiString50 in OCPP 1.6, so a CSMS may spell them in any case: they are looked up without
regard to case and answered with their canonical spelling. Every Core profile key the
specification requires is present; those the gateway cannot act on are read-only with the value
that describes what it does (see ``_fixed_core_keys``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from gateway.config import SUPPORTED_MEASURANDS, UpstreamConfig
from gateway.domain.authorizer import AuthSettings


@dataclass
class _Key:
    value: str
    readonly: bool
    check: Callable[[str], bool] | None = None


MAX_INTEGER = 2**31 - 1  # OCPP's integer: a larger value (or 400 nines) would overflow the loops it times


def _non_negative_int(text: str) -> bool:
    """ASCII digits of an integer OCPP can carry ("²" and "٣" are digits to str.isdigit, not to int)."""
    return text.isascii() and text.isdigit() and len(text) <= 10 and int(text) <= MAX_INTEGER


def _positive_int(text: str) -> bool:
    return _non_negative_int(text) and int(text) > 0


def _boolean(text: str) -> bool:
    return text.lower() in ("true", "false")


def _measurand_list(text: str) -> bool:
    items = [item.strip() for item in text.split(",")]
    return all(item in SUPPORTED_MEASURANDS for item in items) and len(items) <= len(SUPPORTED_MEASURANDS)


def _measurand_list_or_empty(text: str) -> bool:
    return text.strip() == "" or _measurand_list(text)


def _fixed_core_keys(connector_count: int) -> dict[str, _Key]:
    """Required Core keys (OCPP 1.6, 9.1) whose behaviour the gateway cannot change: read-only, with
    the value that says what it does (a CSMS that tries to change them gets Rejected).

    ConnectorPhaseRotation: how each connector is wired is not known to the gateway (Unknown).
    ResetRetries: a reset here is a reconnect and a new boot, never retried as a failed one (0).
    StopTransactionOnEVSideDisconnect: a session always ends when the car leaves (true).
    UnlockConnectorOnEVSideDisconnect: the gateway never unlocks a connector (no shipped profile
    has an unlock register; what a charger does by itself is its own setting): false.
    """
    rotation = ",".join(f"{cid}.Unknown" for cid in range(connector_count + 1))
    return {
        "ConnectorPhaseRotation": _Key(rotation if len(rotation) <= 500 else "0.Unknown", True),
        "ResetRetries": _Key("0", True),
        "StopTransactionOnEVSideDisconnect": _Key("true", True),
        "UnlockConnectorOnEVSideDisconnect": _Key("false", True),
    }


class OcppConfiguration:
    """Configuration keys of the virtual charge point, with their OCPP string values."""

    def __init__(self, upstream: UpstreamConfig, connector_count: int) -> None:
        self._keys: dict[str, _Key] = {
            "HeartbeatInterval": _Key(str(upstream.heartbeat_interval_s), False, _positive_int),
            "MeterValueSampleInterval": _Key(str(upstream.meter_value_sample_interval_s), False, _non_negative_int),
            "MeterValuesSampledData": _Key(",".join(upstream.meter_values_sampled_data), False, _measurand_list),
            "StopTransactionOnInvalidId": _Key("true", False, _boolean),
            "AuthorizeRemoteTxRequests": _Key("false", False, _boolean),
            "AllowOfflineTxForUnknownId": _Key("false", False, _boolean),
            "LocalAuthListEnabled": _Key("true", False, _boolean),
            "AuthorizationCacheEnabled": _Key("true", False, _boolean),
            "LocalAuthorizeOffline": _Key("true", False, _boolean),
            "LocalPreAuthorize": _Key("false", False, _boolean),
            "LocalAuthListMaxLength": _Key("1000", True),
            "SendLocalListMaxLength": _Key("100", True),
            "ClockAlignedDataInterval": _Key("0", False, _non_negative_int),
            "ConnectionTimeOut": _Key("60", False, _positive_int),
            "MeterValuesAlignedData": _Key("Energy.Active.Import.Register", False, _measurand_list),
            "MeterValuesAlignedDataMaxLength": _Key(str(len(SUPPORTED_MEASURANDS)), True),
            "MeterValuesSampledDataMaxLength": _Key(str(len(SUPPORTED_MEASURANDS)), True),
            "StopTxnSampledData": _Key("", False, _measurand_list_or_empty),
            "StopTxnAlignedData": _Key("", False, _measurand_list_or_empty),
            "StopTxnSampledDataMaxLength": _Key(str(len(SUPPORTED_MEASURANDS)), True),
            "StopTxnAlignedDataMaxLength": _Key(str(len(SUPPORTED_MEASURANDS)), True),
            "TransactionMessageAttempts": _Key(str(upstream.transaction_message_attempts), False, _positive_int),
            "TransactionMessageRetryInterval": _Key(
                str(upstream.transaction_message_retry_interval_s), False, _positive_int
            ),
            "NumberOfConnectors": _Key(str(connector_count), True),
            "SupportedFeatureProfiles": _Key("Core,LocalAuthListManagement,SmartCharging,RemoteTrigger", True),
            "ChargeProfileMaxStackLevel": _Key("100", True),
            "ChargingScheduleAllowedChargingRateUnit": _Key("Current,Power", True),
            "ChargingScheduleMaxPeriods": _Key("100", True),
            "MaxChargingProfilesInstalled": _Key("50", True),
            "GetConfigurationMaxKeys": _Key("20", True),
            **_fixed_core_keys(connector_count),
        }
        self._canonical = {key.casefold(): key for key in self._keys}
        self._changed = {key: asyncio.Event() for key in self._keys}

    def canonical(self, key: str) -> str | None:
        """The key as the gateway spells it, for any spelling a CSMS sends; None if unknown."""
        return self._canonical.get(key.casefold())

    def to_dict(self) -> dict[str, str]:
        """The keys a CSMS can change, for storage."""
        return {key: entry.value for key, entry in self._keys.items() if not entry.readonly}

    def restore(self, stored: dict[str, str]) -> list[str]:
        """Take back stored values; returns the keys it had to skip (unknown, read-only or invalid)."""
        skipped = []
        for key, value in stored.items():
            entry = self._keys.get(self.canonical(key) or key)
            if entry is None or entry.readonly or (entry.check is not None and not entry.check(str(value))):
                skipped.append(key)
            else:
                entry.value = str(value)
        return skipped

    def get(self, keys: list[str] | None) -> tuple[list[dict[str, object]], list[str]]:
        """(configurationKey entries, unknownKey names) as GetConfiguration.conf wants them."""
        known: list[dict[str, object]] = []
        unknown: list[str] = []
        for asked in keys or list(self._keys):
            key = self.canonical(asked)
            if key is None:
                unknown.append(asked)
            else:
                known.append({"key": key, "readonly": self._keys[key].readonly, "value": self._keys[key].value})
        return known, unknown

    def change(self, key: str, value: str) -> str:
        """Apply a ChangeConfiguration; returns Accepted, Rejected or NotSupported."""
        key = self.canonical(key) or key
        entry = self._keys.get(key)
        if entry is None:
            return "NotSupported"
        if entry.readonly or (entry.check is not None and not entry.check(value.strip())):
            return "Rejected"
        entry.value = value.strip().lower() if entry.check is _boolean else value.strip()
        self._changed[key].set()
        return "Accepted"

    def set(self, key: str, value: str) -> None:
        """Set a key from the gateway itself (e.g. the heartbeat interval a CSMS sends in Boot)."""
        self._keys[key].value = value
        self._changed[key].set()

    async def wait_changed(self, key: str, timeout_s: float | None) -> bool:
        """Wait until ``key`` changes (True) or ``timeout_s`` passes (False; None = forever)."""
        event = self._changed[key]
        event.clear()
        try:
            await asyncio.wait_for(event.wait(), timeout=timeout_s)
        except TimeoutError:
            return False
        return True

    def boolean(self, key: str) -> bool:
        """The value of a boolean key."""
        return self._keys[key].value.lower() == "true"

    def auth_settings(self) -> AuthSettings:
        """The authorisation keys as the domain's settings (read at each decision, so changes apply)."""
        return AuthSettings(
            local_auth_list_enabled=self.boolean("LocalAuthListEnabled"),
            authorization_cache_enabled=self.boolean("AuthorizationCacheEnabled"),
            local_authorize_offline=self.boolean("LocalAuthorizeOffline"),
            local_pre_authorize=self.boolean("LocalPreAuthorize"),
            allow_offline_tx_for_unknown_id=self.boolean("AllowOfflineTxForUnknownId"),
        )

    def integer(self, key: str) -> int:
        """The value of an integer key (intervals in seconds)."""
        return int(self._keys[key].value)

    @property
    def heartbeat_interval_s(self) -> int:
        return self.integer("HeartbeatInterval")

    def measurands(self, key: str) -> list[str]:
        """A comma-separated measurand list (MeterValuesSampledData, MeterValuesAlignedData)."""
        return [m.strip() for m in self._keys[key].value.split(",") if m.strip()]

    @property
    def meter_values_sampled_data(self) -> list[str]:
        return self.measurands("MeterValuesSampledData")
