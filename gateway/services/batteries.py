"""The battery of the car on every connector, and the SoC targets, for the Site.

The Site tells this service what each charger poll found and when the billing register moves;
a car integration's reports and target changes come in through the Site's command methods. It
keeps ``Connector.soc`` (the best SoC known, see gateway.domain.battery) and
``Connector.soc_target_percent`` current and tells the subscribers when either changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime

from gateway.domain.battery import Battery, SocTargets, SocValue
from gateway.domain.errors import CommandRejected
from gateway.domain.events import BatteryStateChanged
from gateway.domain.model import Connector, VehicleState
from gateway.domain.ports import SettingsStore

log = logging.getLogger(__name__)

SETTINGS_SECTION = "soc_targets"


def _shown(soc: SocValue | None) -> tuple[float, str] | None:
    """What a SoC says apart from its time: a poll that only confirms it is no change."""
    return None if soc is None else (soc.soc_percent, soc.source)


class Batteries:
    """Battery state and SoC target of every connector."""

    def __init__(
        self,
        connectors: Mapping[int, Connector],
        targets: Mapping[int, float] | None,
        billing_register: Callable[[int], tuple[int, datetime] | None],
        emit: Callable[[BatteryStateChanged], None],
        settings: SettingsStore,
    ) -> None:
        """``targets``: the config's SoC targets in percent; ``billing_register``: a connector's
        billing register in Wh and when it was read (None while unknown)."""
        self._connectors = connectors
        self._billing_register = billing_register
        self._emit = emit
        self._settings = settings
        self.targets = SocTargets(targets)
        self._batteries = {cid: Battery() for cid in connectors}
        for cid, connector in connectors.items():
            connector.soc_target_percent = self.targets.get(cid)

    def charger_polled(self, connector: Connector, car_left: bool) -> None:
        """Forget the battery when the car leaves; take the charger's SoC while one is plugged in."""
        cid = connector.connector_id
        if car_left:
            self._batteries[cid] = Battery()
        elif connector.reading is not None and connector.vehicle_state is not VehicleState.A:
            self._batteries[cid].charger_soc(connector.reading.soc_percent, connector.reading.measured_at)
        self.refresh(cid)

    def report(
        self, connector_id: int, soc_percent: float | None, capacity_wh: float | None, at: datetime, now: datetime
    ) -> None:
        """A car integration's report (see ``Site.report_battery``); raises CommandRejected."""
        battery = self._batteries.get(connector_id)
        if battery is None:
            raise CommandRejected(f"no connector {connector_id} (connectors: {sorted(self._connectors)})")
        battery.report(soc_percent, capacity_wh, at, now)
        self.refresh(connector_id, always=True)

    def set_target(self, connector_id: int, percent: float | None) -> None:
        """Replace a connector's target (see ``Site.commands.set_soc_target``); raises CommandRejected."""
        if connector_id not in self._connectors:
            raise CommandRejected(f"no connector {connector_id} (connectors: {sorted(self._connectors)})")
        self.targets.set(connector_id, percent)
        self._settings.save(SETTINGS_SECTION, self.targets.to_dict())
        log.info("connector %s: SoC target %s", connector_id, "none" if percent is None else f"{percent:g} %")
        self.refresh(connector_id)

    def refresh(self, connector_id: int, always: bool = False) -> None:
        """Work out the connector's best SoC again; tell the subscribers if it (or the target) changed."""
        connector, battery = self._connectors[connector_id], self._batteries[connector_id]
        register = self._billing_register(connector_id)
        if register is not None:
            battery.register(*register)
        before = (_shown(connector.soc), connector.soc_target_percent)
        connector.soc, connector.soc_target_percent = battery.best(), self.targets.get(connector_id)
        if always or before != (_shown(connector.soc), connector.soc_target_percent):
            self._emit(BatteryStateChanged(connector_id, connector.soc, connector.soc_target_percent))

    def restore(self) -> None:
        """Take back the runtime targets kept before a restart (unless the config changed since)."""
        notes = self.targets.load_dict(self._settings.load(SETTINGS_SECTION) or {}, set(self._connectors))
        for note in notes:
            log.info("stored SoC target dropped: %s", note)
        if notes:
            self._settings.save(SETTINGS_SECTION, self.targets.to_dict())
        for cid, connector in self._connectors.items():
            connector.soc_target_percent = self.targets.get(cid)
