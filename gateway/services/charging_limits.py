"""Keeps every charger at the current it may draw: its own limits, shared with the others.

For every connector in a session its own bound is the limit of its installed profiles (TxDefault,
Tx; see gateway.domain.charging_store), the site owner's MQTT ceiling, its state-of-charge target
(the Site's, reached by the best SoC known: see gateway.domain.battery) and the charger's maximum.
The chargers then share what the site may draw (gateway.services.load_management): the grid
connection's headroom with ``[load_management]``, the CSMS's ChargePointMaxProfile (the limit of
the whole charge point, shared by its connectors) and the MQTT site limit. Each share becomes a
``CurrentLimitRequested`` event, which the composition root turns into a register write (or, for a
native charger, a charging profile). Below 6 A the charger is paused (limit 0), never set to a
current IEC 61851 does not allow. Cuts are requested before raises, so that while the writes are
under way the chargers together stay under the limit.

The keeper decides again at period boundaries of the profiles, whenever a reading, a device's
health, a profile, a ceiling or the site limit changes, and every ``tick_s`` while it shares
(turns, settling and held raises run on time).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta

from gateway.domain.charging_schedule import charger_setpoint_a
from gateway.domain.charging_store import ChargingProfileStore
from gateway.domain.events import (
    BatteryStateChanged,
    ChargingProfilesChanged,
    ConnectorReadingChanged,
    CurrentCeilingChanged,
    CurrentLimitRequested,
    DeviceHealthChanged,
    MeterReadingChanged,
    SiteLimitChanged,
)
from gateway.domain.phase_limits import SiteLoad
from gateway.domain.transactions import StartTransaction, StopTransaction
from gateway.services.load_management import LoadManager, LoadSettings
from gateway.services.site import Site

log = logging.getLogger(__name__)

DEFAULT_MAX_A = 32.0
TICK_S = 5.0  # while sharing: decide at least this often (a turn or a held raise may be due)
_WAKE_ON = (
    StartTransaction,
    ChargingProfilesChanged,
    BatteryStateChanged,
    CurrentCeilingChanged,
    ConnectorReadingChanged,
    MeterReadingChanged,
    DeviceHealthChanged,
    SiteLimitChanged,
)


class LimitKeeper:
    """Keeps each charger at its share, for as long as the gateway runs."""

    def __init__(
        self,
        site: Site,
        store: ChargingProfileStore,
        max_a: Mapping[int, float] | None = None,
        load: LoadSettings | None = None,
        controllable: Collection[int] | None = None,
    ) -> None:
        """``max_a``: per connector, the highest current its charger can be set to (default 32 A).
        ``load``: how the connectors share (default: only the CSMS's and the MQTT site limits).
        ``controllable``: the connectors whose charger can be told a current (default: all); any
        other takes no share and what it draws counts as building load.

        SoC targets are the Site's (``Connector.soc_target_percent``: the config's, or one set by
        ``Site.commands.set_soc_target``): a connector whose car reaches its target is paused, so the
        battery information is used to charge efficiently, not only shown."""
        self.site = site
        self.store = store
        self._max_a = dict(max_a or {})
        self._controllable = frozenset(site.connectors if controllable is None else controllable)
        self.manager = LoadManager(site.connectors, load)
        self._applied: dict[int, float] = {}  # connector -> the limit last requested
        self._events = site.subscribe()
        self._wake = asyncio.Event()

    async def run(self) -> None:
        await asyncio.gather(self._watch(), self._keep())

    async def _keep(self) -> None:
        try:
            while True:
                now = self.site.clock.now()
                next_change = self.apply(now)
                load = self.site.load.state
                if load is not None and load.limits is not None and load.shares:
                    tick = now + timedelta(seconds=TICK_S)
                    next_change = tick if next_change is None else min(next_change, tick)
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
            if isinstance(event, StopTransaction):
                self._stopped(event.connector_id)
            elif not isinstance(event, _WAKE_ON):
                continue
            self._wake.set()

    def _stopped(self, connector_id: int) -> None:
        """A session ended: its TX profiles end, and the charger is left ready for the next one."""
        applied = self._applied.pop(connector_id, None)
        load = self.site.load.state
        if load is not None and load.limits is not None:
            # shared: the next session starts paused, until its share is decided (at once)
            if applied is None or applied > 0:
                self.site.request(CurrentLimitRequested(connector_id, 0.0))
        else:
            max_a = self._max_a.get(connector_id, DEFAULT_MAX_A)
            if applied is not None and applied != max_a:  # the next session starts unlimited
                self.site.request(CurrentLimitRequested(connector_id, max_a))
        if self.store.end_transaction(connector_id):
            log.info("connector %s: its transaction profiles ended with the session", connector_id)
            self.site.request(ChargingProfilesChanged())

    def apply(self, now: datetime) -> datetime | None:
        """Request the current of every connector in a session; returns when a profile next changes."""
        own_a, never_limited, next_change = self._own_bounds(now)
        csms = self.store.limit_at(0, now)
        if csms.next_change_at is not None and (next_change is None or csms.next_change_at < next_change):
            next_change = csms.next_change_at
        grid = self.manager.settings.grid
        meter = self.site.meters.get(grid.grid_meter) if grid is not None else None
        load = self.manager.decide(
            now,
            own_a,
            grid=(meter.reading, meter.device_online) if meter is not None else (None, None),
            csms_a=csms.limit_a,
            site_a=self.site.load.site_limit_a,
        )
        self.site.load.report(load)
        wanted = {cid: share.current_a for cid, share in load.shares.items()}
        if load.limits is None:  # nothing shared: a connector no profile ever limited is left alone
            wanted = {cid: a for cid, a in wanted.items() if cid not in never_limited or cid in self._applied}
        self._request(wanted, load)
        return next_change

    def _own_bounds(self, now: datetime) -> tuple[dict[int, float], set[int], datetime | None]:
        """Per connector in a session (that can be told a current): its own bound in A (0 = paused),
        which of them no profile, ceiling or target limits, and when a profile next changes."""
        own_a: dict[int, float] = {}
        never_limited: set[int] = set()
        next_change: datetime | None = None
        for connector_id, connector in self.site.connectors.items():
            if connector.session is None or connector_id not in self._controllable:
                continue
            limit = self.store.limit_at(connector_id, now, connector.session.started_at, charge_point_max=False)
            ceiling_a = connector.current_ceiling_a
            if ceiling_a is not None:
                limit = limit._replace(limit_a=ceiling_a if limit.limit_a is None else min(limit.limit_a, ceiling_a))
            if self._target_reached(connector_id):
                limit = limit._replace(limit_a=0.0)
            if limit.next_change_at is not None and (next_change is None or limit.next_change_at < next_change):
                next_change = limit.next_change_at
            if limit.limit_a is None:
                never_limited.add(connector_id)
            setpoint = charger_setpoint_a(limit.limit_a, max_a=self._max_a.get(connector_id, DEFAULT_MAX_A))
            own_a[connector_id] = 0.0 if setpoint is None else setpoint
        return own_a, never_limited, next_change

    def _request(self, wanted: Mapping[int, float], load: SiteLoad) -> None:
        """Request what changed: cuts (and chargers whose setting is not known) first, then raises."""
        changes = [(cid, a) for cid, a in wanted.items() if self._applied.get(cid) != a]
        changes.sort(key=lambda change: (self._applied.get(change[0], float("inf")) < change[1], change[0]))
        for connector_id, current_a in changes:
            self._applied[connector_id] = current_a
            share = load.shares.get(connector_id)
            why = f" ({share.reason})" if share is not None and load.limits is not None else ""
            shown = f"{current_a:g} A" if current_a else "0 (paused)"
            log.info("connector %s: current limit %s%s", connector_id, shown, why)
            self.site.request(CurrentLimitRequested(connector_id, current_a))

    def _target_reached(self, connector_id: int) -> bool:
        connector = self.site.connectors[connector_id]
        target, soc = connector.soc_target_percent, connector.soc
        return target is not None and soc is not None and soc.soc_percent >= target


def allowed_now_a(site: Site, connector_id: int) -> float | None:
    """What the site's power sharing allows now, in A per phase: connector 0 all connectors
    together (None: nothing is shared), a connector in a session its share (None: none).

    Both OCPP versions show it as the first period of a composite schedule, so a back office sees
    what a charger may draw now, not only what its profiles would allow."""
    load = site.load.state
    if load is None:
        return None
    if connector_id == 0:
        return load.limit_a
    share = load.shares.get(connector_id)
    connector = site.connectors.get(connector_id)
    if share is None or connector is None or connector.session is None:
        return None
    return share.current_a
