"""Applies the back office's charging profiles to the chargers, exactly at period boundaries.

For every connector in a session the limit of the installed profiles (ChargePointMax, TxDefault,
Tx; see gateway.domain.charging_store) and its state-of-charge target (the Site's, reached by the
best SoC known: see gateway.domain.battery) becomes a ``CurrentLimitRequested`` event, which the
composition root turns into a register write. Below 6 A the charger is paused (limit 0), never
set to a current IEC 61851 does not allow. The keeper sleeps until the next period boundary or
until profiles or sessions change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from datetime import datetime

from gateway.domain.charging_schedule import charger_setpoint_a
from gateway.domain.charging_store import ChargingProfileStore
from gateway.domain.events import (
    BatteryStateChanged,
    ChargingProfilesChanged,
    CurrentCeilingChanged,
    CurrentLimitRequested,
)
from gateway.domain.transactions import StartTransaction, StopTransaction
from gateway.services.site import Site

log = logging.getLogger(__name__)

DEFAULT_MAX_A = 32.0


class LimitKeeper:
    """Keeps each charger at the limit the profiles say, for as long as the gateway runs."""

    def __init__(
        self,
        site: Site,
        store: ChargingProfileStore,
        max_a: Mapping[int, float] | None = None,
    ) -> None:
        """``max_a``: per connector, the highest current its charger can be set to (default 32 A).

        SoC targets are the Site's (``Connector.soc_target_percent``: the config's, or one set by
        ``Site.set_soc_target``): a connector whose car reaches its target is paused, so the
        battery information is used to charge efficiently, not only shown."""
        self.site = site
        self.store = store
        self._max_a = dict(max_a or {})
        self._applied: dict[int, float] = {}  # connector -> the limit last requested
        self._started_at: dict[int, datetime] = {}  # connector -> its session's start
        self._events = site.subscribe()
        self._wake = asyncio.Event()

    async def run(self) -> None:
        await asyncio.gather(self._watch(), self._keep())

    async def _keep(self) -> None:
        try:
            while True:
                next_change = self.apply(self.site.clock.now())
                self._wake.clear()
                timeout = (
                    None if next_change is None else max(0.0, (next_change - self.site.clock.now()).total_seconds())
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
        finally:
            self.site.unsubscribe(self._events)

    async def _watch(self) -> None:
        async for event in self._events:
            if isinstance(event, StartTransaction):
                self._started_at[event.connector_id] = event.started_at
            elif isinstance(event, StopTransaction):
                self._started_at.pop(event.connector_id, None)
                applied = self._applied.pop(event.connector_id, None)
                max_a = self._max_a.get(event.connector_id, DEFAULT_MAX_A)
                if applied is not None and applied != max_a:  # the next session starts unlimited
                    self.site.request(CurrentLimitRequested(event.connector_id, max_a))
                if self.store.end_transaction(event.connector_id):
                    log.info("connector %s: its transaction profiles ended with the session", event.connector_id)
                    self.site.request(ChargingProfilesChanged())
            elif not isinstance(event, ChargingProfilesChanged | BatteryStateChanged | CurrentCeilingChanged):
                continue
            self._wake.set()

    def apply(self, now: datetime) -> datetime | None:
        """Request the limit of every connector in a session; returns when the next one changes."""
        next_change: datetime | None = None
        for connector_id, started_at in self._started_at.items():
            limit = self.store.limit_at(connector_id, now, started_at)
            ceiling_a = self.site.connectors[connector_id].current_ceiling_a
            if ceiling_a is not None:
                limit = limit._replace(limit_a=ceiling_a if limit.limit_a is None else min(limit.limit_a, ceiling_a))
            if self._target_reached(connector_id):
                limit = limit._replace(limit_a=0.0)
            if limit.next_change_at is not None and (next_change is None or limit.next_change_at < next_change):
                next_change = limit.next_change_at
            if limit.limit_a is None and connector_id not in self._applied:
                continue  # no profile has ever limited it: leave the charger as it is
            max_a = self._max_a.get(connector_id, DEFAULT_MAX_A)
            setpoint = charger_setpoint_a(limit.limit_a, max_a=max_a)
            wanted = 0.0 if setpoint is None else setpoint
            if self._applied.get(connector_id) != wanted:
                self._applied[connector_id] = wanted
                log.info("connector %s: current limit %s", connector_id, f"{wanted:g} A" if wanted else "0 (paused)")
                self.site.request(CurrentLimitRequested(connector_id, wanted))
        return next_change

    def _target_reached(self, connector_id: int) -> bool:
        connector = self.site.connectors[connector_id]
        target, soc = connector.soc_target_percent, connector.soc
        return target is not None and soc is not None and soc.soc_percent >= target
