"""The 2.0.1 station's device model: GetVariables and SetVariables, kept across restarts.

Components and variables are looked up without regard to case (2.0.1 says their names are case
insensitive) and answered as the CSMS spelled them. What a CSMS sets is saved in the Site's
settings store (its own section) and taken back at the next start; a saved value that is unknown,
read-only or invalid falls back to the configuration's, with one WARNING for all of them. A loop
that depends on a variable waits with ``wait_changed`` so a new interval applies at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from adapters.ocpp201_upstream.variables import (
    REQUEST_ITEMS_PER_MESSAGE,
    Variable,
    evse_variables,
    smart_charging_variables,
    station_variables,
)
from gateway.config import UpstreamConfig
from gateway.domain.authorizer import AuthSettings
from gateway.domain.ports import SettingsStore
from gateway.services.site import Site

log = logging.getLogger(__name__)

SECTION = "ocpp201_device_model"  # settings section: {"Component.Variable[instance]": value} the CSMS set
MAX_LOGGED = 60

ComponentKey = tuple[str, int | None, int | None]  # (name casefolded, evse id, connector id)
VariableKey = tuple[str, str]  # (name casefolded, instance casefolded or "")


def _short(text: object) -> str:
    text = str(text)
    return text if len(text) <= MAX_LOGGED else text[: MAX_LOGGED - 3] + "..."


def _status(status: str, reason: str | None = None, info: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"attribute_status": status}
    if reason is not None:
        result["attribute_status_info"] = {"reason_code": reason, **({"additional_info": info} if info else {})}
    return result


def _too_many() -> dict[str, Any]:
    """An entry beyond DeviceDataCtrlr.ItemsPerMessage: answered, not carried out (a CALLERROR from a
    handler would cost a traceback in the log, and 2.0.1 only says the station MAY send one)."""
    return _status("Rejected", "TooManyElements", f"at most {REQUEST_ITEMS_PER_MESSAGE} per request")


def _normalized(variable: Variable, text: str) -> str:
    if variable.data_type == "boolean":
        return text.lower()
    if variable.data_type == "MemberList":
        return ",".join(item.strip() for item in text.split(",") if item.strip())
    return text


class DeviceModel201:
    """The station's components and variables, with the values a CSMS set."""

    def __init__(self, site: Site, settings: UpstreamConfig, store: SettingsStore) -> None:
        self.site = site
        self._store = store
        self.variables = (
            station_variables(settings) + smart_charging_variables(site.charging_profiles) + evse_variables(site)
        )
        self._components: dict[ComponentKey, dict[VariableKey, Variable]] = {}
        self._by_key: dict[str, Variable] = {}
        for variable in self.variables:
            component = (variable.component.casefold(), variable.evse_id, variable.connector_id)
            name = (variable.name.casefold(), (variable.instance or "").casefold())
            self._components.setdefault(component, {})[name] = variable
            if variable.evse_id is None:
                self._by_key[variable.key] = variable
        self._names = {name for name, _, _ in self._components}
        self._set_by_csms: dict[str, str] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._listeners: list[Callable[[set[str]], None]] = []
        self._restore()

    # -- reading values in the gateway -------------------------------------------------------------
    def value(self, key: str) -> str:
        return self._by_key[key].actual()

    def integer(self, key: str) -> int:
        return int(self.value(key))

    def boolean(self, key: str) -> bool:
        return self.value(key) == "true"

    def measurands(self, key: str) -> list[str]:
        return [item for item in self.value(key).split(",") if item]

    def auth_settings(self) -> AuthSettings:
        """The authorisation variables as the domain's settings (read at each decision, so changes apply)."""
        return AuthSettings(
            local_auth_list_enabled=self.boolean("LocalAuthListCtrlr.Enabled"),
            authorization_cache_enabled=self.boolean("AuthCacheCtrlr.Enabled"),
            local_authorize_offline=self.boolean("AuthCtrlr.LocalAuthorizeOffline"),
            local_pre_authorize=self.boolean("AuthCtrlr.LocalPreAuthorize"),
            allow_offline_tx_for_unknown_id=self.boolean("AuthCtrlr.OfflineTxForUnknownIdEnabled"),
        )

    def provide(self, key: str, read: Callable[[], str]) -> None:
        """Let a live value answer for a read-only variable (e.g. ``LocalAuthListCtrlr.Entries``)."""
        self._by_key[key].read = read

    def set_by_gateway(self, key: str, value: str) -> None:
        """A value the gateway itself decides (the heartbeat interval of a BootNotification answer): not saved."""
        self._by_key[key].value = value
        self._notify({key})

    def on_change(self, listener: Callable[[set[str]], None]) -> None:
        """Call ``listener`` with the keys that changed, after every change."""
        self._listeners.append(listener)

    async def wait_changed(self, component: str, timeout_s: float | None) -> bool:
        """Wait until a variable of ``component`` changes (True) or ``timeout_s`` passes (False; None: forever)."""
        event = self._changed.setdefault(component, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout=timeout_s)
        except TimeoutError:
            return False
        return True

    def _notify(self, keys: set[str]) -> None:
        for component in {key.split(".")[0] for key in keys}:
            if (event := self._changed.pop(component, None)) is not None:
                event.set()  # every waiter wakes; the next wait takes a fresh event
        for listener in self._listeners:
            listener(keys)
        self.site.connection_timeout_s = float(self.integer("TxCtrlr.EVConnectionTimeOut"))

    # -- what the CSMS asks ------------------------------------------------------------------------
    def find(self, component: dict[str, Any], variable: dict[str, Any]) -> Variable | dict[str, Any]:
        """The variable a request names, or the status that says why there is none."""
        evse = component.get("evse") or {}
        evse_id = evse.get("id")
        connector_id = evse.get("connector_id", 1 if str(component["name"]).casefold() == "connector" else None)
        found = self._components.get((str(component["name"]).casefold(), evse_id, connector_id))
        if found is None or component.get("instance"):
            known = str(component["name"]).casefold() in self._names
            return _status(
                "UnknownComponent", "NotFound" if known else None, "no such EVSE or connector" if known else None
            )
        name = (str(variable["name"]).casefold(), str(variable.get("instance") or "").casefold())
        return found.get(name) or _status("UnknownVariable")

    def get_variables(self, data: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """GetVariableResult per getVariableData, in the request's order."""
        results = []
        for n, item in enumerate(data):
            found = self.find(item["component"], item["variable"])
            if n >= REQUEST_ITEMS_PER_MESSAGE:
                answer = _too_many()
            elif not isinstance(found, Variable):
                answer = found
            elif item.get("attribute_type", "Actual") != "Actual":
                answer = _status("NotSupportedAttributeType")
            else:
                answer = {"attribute_status": "Accepted", "attribute_value": found.actual()}
            results.append(self._echo(item, answer))
        return results

    def set_variables(self, data: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """SetVariableResult per setVariableData; what was accepted applies at once and is saved."""
        results, changed = [], set()
        for n, item in enumerate(data):
            found = self.find(item["component"], item["variable"])
            text = str(item["attribute_value"]).strip()
            if n >= REQUEST_ITEMS_PER_MESSAGE:
                answer = _too_many()
            elif not isinstance(found, Variable):
                answer = found
            elif item.get("attribute_type", "Actual") != "Actual":
                answer = _status("NotSupportedAttributeType")
            elif found.check is None:
                answer = _status("Rejected", "ReadOnly", f"{found.key} is read-only")
            elif (problem := found.check(text)) is not None:
                answer = _status("Rejected", problem, f"not a valid {found.data_type} for {found.key}")
            else:
                found.value = self._set_by_csms[found.key] = _normalized(found, text)
                changed.add(found.key)
                answer = _status("Accepted")
            results.append(self._echo(item, answer))
        if changed:
            log.info("CSMS set %s", ", ".join(f"{key}={self.value(key)}" for key in sorted(changed)))
            if not self._store.save(SECTION, dict(self._set_by_csms)):
                log.warning("device model not saved (the disk refused): the change holds until a restart")
            self._notify(changed)
        return results

    @staticmethod
    def _echo(item: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
        echoed = {"component": item["component"], "variable": item["variable"], **answer}
        if "attribute_type" in item:
            echoed["attribute_type"] = item["attribute_type"]
        return echoed

    # -- persistence -------------------------------------------------------------------------------
    def _restore(self) -> None:
        stored = self._store.load(SECTION)
        if stored is None:
            return
        if not isinstance(stored, dict):
            log.warning("saved device model ignored (not a table): the configuration's values apply")
            return
        skipped = []
        for key, value in stored.items():
            variable = self._by_key.get(key) if isinstance(key, str) else None
            if variable is None or variable.check is None or not isinstance(value, str) or variable.check(value):
                skipped.append(_short(key))
                continue
            variable.value = self._set_by_csms[key] = value
        if skipped:
            log.warning("saved device model values ignored, the configuration's apply: %s", ", ".join(skipped))
        self.site.connection_timeout_s = float(self.integer("TxCtrlr.EVConnectionTimeOut"))
