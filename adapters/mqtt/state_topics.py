"""Which retained state topics an event makes stale, and what each topic says now.

The bridge keeps a set of stale topics rather than a queue of events, so an outage costs
O(entities), not O(events); this module maps events to topics and renders a topic from the
Site's current view (payload shapes: gateway.services.state_payloads).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from adapters.mqtt.payloads import Topics
from gateway.domain.events import (
    BacklogChanged,
    BatteryStateChanged,
    ConnectorReadingChanged,
    ConnectorStatusChanged,
    CurrentCeilingChanged,
    DeviceHealthChanged,
    Event,
    MeterReadingChanged,
    SiteLimitChanged,
    SiteLoadChanged,
    TransactionNumbered,
    UpstreamStateChanged,
)
from gateway.domain.transactions import StartTransaction, StopTransaction
from gateway.services.session_tally import SessionTally
from gateway.services.site import Site
from gateway.services.state_payloads import (
    Payload,
    connector_state,
    device_state,
    last_session_state,
    meter_state,
    outbox_state,
    sessions_today_state,
    site_state,
    upstream_state,
)

SITE_SUMMARY_EVENTS = (
    ConnectorStatusChanged,
    ConnectorReadingChanged,
    MeterReadingChanged,
    DeviceHealthChanged,
    UpstreamStateChanged,
    BacklogChanged,
    SiteLoadChanged,  # the sharing decided differently: limits, grid current, shares
    SiteLimitChanged,  # shown at once, before the next decision
)

# A topic the bridge publishes, named by what it describes: ("connector", 1), ("meter", "m1"),
# ("device", "wb1"), ("upstream",), ("last_session", 1) or ("sessions",). Kept instead of events so
# an outage costs O(entities).
StateKey = tuple[str] | tuple[str, int] | tuple[str, str]


class StateTopics:
    """The state topics of one Site under one prefix; ``tally``: the sessions' tally it shows (its
    own, unseeded, if none is given: whoever runs the topics runs it)."""

    def __init__(self, site: Site, topics: Topics, tally: SessionTally | None = None) -> None:
        self._site = site
        self.topics = topics
        self.tally = tally or SessionTally(site)

    def follow_tally(self, mark: Callable[[StateKey], None]) -> None:
        """``mark`` a tally topic stale when the tally changed it (a session ended, the count changed)."""
        self.tally.listen(lambda cid: mark(("sessions",) if cid is None else ("last_session", cid)))

    def keys_for(self, event: Event) -> Iterable[StateKey]:
        match event:
            case (
                ConnectorStatusChanged(connector_id=cid)
                | ConnectorReadingChanged(connector_id=cid)
                | BatteryStateChanged(connector_id=cid)
                | TransactionNumbered(connector_id=cid)
                | CurrentCeilingChanged(connector_id=cid)
                | StartTransaction(connector_id=cid)
                | StopTransaction(connector_id=cid)
            ):
                return [("connector", cid)]
            case MeterReadingChanged(meter=name, connector_id=cid):
                # a connector billed from this meter shows its session energy from it
                return [("meter", name)] + ([("connector", cid)] if cid else [])
            case DeviceHealthChanged(device=device):
                keys: list[StateKey] = [("device", device)]
                keys += [("connector", c.connector_id) for c in self._site.connectors.values() if c.device == device]
                if device in self._site.meters:
                    keys.append(("meter", device))
                return keys
            case UpstreamStateChanged():
                return [("upstream",)]
            case SiteLoadChanged():
                # each connector shows its share; the bridge sends only those that changed
                return [("connector", cid) for cid in sorted(self._site.connectors)]
        return []

    def all_keys(self) -> list[StateKey]:
        keys: list[StateKey] = [("connector", cid) for cid in sorted(self._site.connectors)]
        keys += [("meter", name) for name in sorted(self._site.meters)]
        keys += [("device", name) for name in self._site.devices()]
        keys += [("upstream",), ("outbox",), ("site",)]
        keys += [("last_session", cid) for cid in sorted(self._site.connectors)] + [("sessions",)]
        return keys

    def render(self, key: StateKey) -> tuple[str, Payload] | None:
        """The topic and payload for ``key`` from the Site's current view (None if it is unknown)."""
        match key:
            case ("connector", int(cid)):
                connector = self._site.connectors.get(cid)
                if connector is None:
                    return None
                share = self._site.load.share_of(cid)
                return self.topics.connector(cid), connector_state(connector, self._site.billing_energy_wh(cid), share)
            case ("meter", str(name)):
                meter = self._site.meters.get(name)
                return None if meter is None else (self.topics.meter(name), meter_state(meter))
            case ("device", str(name)):
                health = self._site.device_health(name)
                return self.topics.device(name), device_state(name, health.online, health.reason, health.since)
            case ("upstream",):
                up = self._site.upstream
                return self.topics.upstream, upstream_state(up.connected, up.registration, up.changed_at, up.reason)
            case ("site",):
                site = self._site
                grid = next((m for m in site.meters.values() if m.connector_id == 0), None)
                connected, now = site.upstream.connected, site.clock.now()
                load, limit = site.load.state, site.load.site_limit_a
                return self.topics.site, site_state(
                    site.connectors.values(), grid, connected, site.backlog, now, load, limit
                )
            case ("outbox",):
                return self.topics.outbox, outbox_state(self._site.backlog, self._site.clock.now())
            case ("last_session", int(cid)) if cid in self._site.connectors:
                return self.topics.last_session(cid), last_session_state(cid, self.tally.last_session(cid))
            case ("sessions",):
                tally = self.tally
                return self.topics.sessions, sessions_today_state(tally.sessions_today(), tally.day_started_at())
        return None
