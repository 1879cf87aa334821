"""Domain events: what the Site tells the outside world after applying a snapshot.

Adapters subscribe to these; they never read device registers or each other's state.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.domain.battery import SocValue
from gateway.domain.commands import Command, CommandResult, CommandSource
from gateway.domain.model import ConnectorStatus, Fault, Reading
from gateway.domain.phase_limits import SiteLoad
from gateway.domain.security import SecurityEventKind
from gateway.domain.transactions import Effect, StopTransaction


@dataclass(frozen=True, slots=True)
class ConnectorStatusChanged:
    """A connector's status or its fault list changed at ``changed_at``."""

    connector_id: int
    status: ConnectorStatus
    faults: tuple[Fault, ...]
    changed_at: datetime


@dataclass(frozen=True, slots=True)
class VehicleConnectionChanged:
    """A car was plugged in (IEC 61851 state A -> B/C/D) or left (-> A) at ``at``, before the
    session it starts or ends is told. ``energy_wh`` is the connector's billing register read with
    that poll (None: it has none): an upstream whose transaction begins at the plug-in (OCPP
    2.0.1's TxStartPoint EVConnected) needs that reading, and a status alone cannot say whether a
    car is there (Occupied is also an authorised start waiting for its car)."""

    connector_id: int
    connected: bool
    energy_wh: int | None
    at: datetime


@dataclass(frozen=True, slots=True)
class FaultRaised:
    """A fault became active at ``at`` (when the poll that saw it was made).

    On a connector (``connector_id``) or, with ``connector_id`` None, on the meter ``meter``.
    """

    connector_id: int | None
    fault: Fault
    at: datetime
    meter: str | None = None


@dataclass(frozen=True, slots=True)
class FaultCleared:
    """A fault is no longer active (on a connector, or on the meter ``meter``)."""

    connector_id: int | None
    fault: Fault
    at: datetime
    meter: str | None = None


@dataclass(frozen=True, slots=True)
class ConnectorReadingChanged:
    """A connector's measured values changed (not emitted when a poll finds the same values)."""

    connector_id: int
    reading: Reading


@dataclass(frozen=True, slots=True)
class MeterReadingChanged:
    """A meter's measured values changed."""

    meter: str
    connector_id: int | None
    reading: Reading


@dataclass(frozen=True, slots=True)
class DeviceHealthChanged:
    """A device started or stopped answering; ``reason`` says why it stopped."""

    device: str
    online: bool
    reason: str
    changed_at: datetime


@dataclass(frozen=True, slots=True)
class UpstreamStateChanged:
    """The CSMS connection changed: ``connected`` (socket open) and ``registration`` (boot result),
    or the reason a link that stays down gives changed."""

    connected: bool
    registration: str
    changed_at: datetime
    reason: str = ""  # why the link is down (empty while connected, or not told yet)


@dataclass(frozen=True, slots=True)
class BatteryStateChanged:
    """The best state of charge known on a connector (its value or source), or its target, changed.

    Also emitted for every report from a car integration, so its new measurement time is shown;
    not for a charger poll or an estimate that only confirms the value.
    """

    connector_id: int
    soc: SocValue | None
    soc_target_percent: float | None


@dataclass(frozen=True, slots=True)
class CurrentLimitRequested:
    """Set a connector's charger to ``limit_a`` amperes per phase; 0 means pause (below 6 A)."""

    connector_id: int
    limit_a: float


@dataclass(frozen=True, slots=True)
class CurrentCeilingChanged:
    """The site owner set (or, with None, lifted) a connector's current ceiling."""

    connector_id: int
    current_a: float | None


@dataclass(frozen=True, slots=True)
class AvailabilityChanged:
    """The operator (the CSMS's ChangeAvailability, MQTT or the page) took a connector out of
    service or put it back, at ``at``; its status follows in a ConnectorStatusChanged."""

    connector_id: int
    available: bool
    at: datetime


@dataclass(frozen=True, slots=True)
class SiteLimitChanged:
    """The site owner set (or, with None, lifted) the limit of all chargers together (A per phase)."""

    current_a: float | None


@dataclass(frozen=True, slots=True)
class SiteLoadChanged:
    """The site's power sharing decided differently: new limits, shares or reasons (``Site.load``)."""

    load: SiteLoad


@dataclass(frozen=True, slots=True)
class TransactionNumbered:
    """The CSMS gave the session on a connector its transaction id."""

    connector_id: int
    transaction_id: int


@dataclass(frozen=True, slots=True)
class RelayToCharger:
    """A back-office command for a connector of a native charger, for that charger to carry out.

    ``payload`` names the site connector (``connector_id``) or session (``local_ref``); the
    relaying adapter renumbers them into the charger's terms and puts the charger's answer (or
    an exception) in ``answer``.
    """

    connector_id: int
    action: str
    payload: dict[str, Any]
    answer: asyncio.Future[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class ChargingProfilesChanged:
    """The back office installed or cleared charging profiles: limits must be worked out again."""


@dataclass(frozen=True, slots=True)
class CommandReceived:
    """A command that changes something on the site was received from ``source`` at ``at`` and
    ended with ``result``. ``connector_id``: the connector it names (0: all of them, None: the
    site or none); ``detail``: its key arguments, never a full id tag (masked) nor a secret."""

    at: datetime
    command: Command
    source: CommandSource
    connector_id: int | None
    result: CommandResult
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SessionStoppedAtRestart:
    """A session the last process left open was stopped upstream at this start (PowerLoss or
    Reboot), without passing through the Site: ``stop`` is the StopTransaction as queued for the
    CSMS (its meterStop, time and reason), for those who keep a record of the sessions."""

    stop: StopTransaction


@dataclass(frozen=True, slots=True)
class SecurityEventSeen:
    """Something an operator's security log wants happened at ``at`` (see gateway/domain/security.py);
    ``count``: how many events of its kind and source it stands for (those held back by the rate
    limit since the last one, and itself). ``detail`` never holds a secret or a full id tag."""

    kind: SecurityEventKind
    at: datetime
    detail: str
    count: int = 1


# The session effects of gateway.domain.transactions travel as events too: Authorize,
# StartTransaction, StopTransaction (for the upstream) and EnableCharging (for the device).
@dataclass(frozen=True, slots=True)
class BacklogChanged:
    """The outbox of messages waiting for the CSMS grew, shrank, or had to drop something; its
    figures are ``Site.backlog``, worked out when read (they cost O(backlog))."""


Event = (
    ConnectorStatusChanged
    | VehicleConnectionChanged
    | FaultRaised
    | FaultCleared
    | ConnectorReadingChanged
    | MeterReadingChanged
    | BatteryStateChanged
    | DeviceHealthChanged
    | UpstreamStateChanged
    | BacklogChanged
    | CurrentCeilingChanged
    | AvailabilityChanged
    | SiteLimitChanged
    | SiteLoadChanged
    | TransactionNumbered
    | RelayToCharger
    | CurrentLimitRequested
    | ChargingProfilesChanged
    | CommandReceived
    | SessionStoppedAtRestart
    | SecurityEventSeen
    | Effect
)
