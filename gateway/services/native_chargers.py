"""What native OCPP chargers (merged mode) tell the Site, and how back-office commands reach them.

The Site's door for them (``site.native``): the local OCPP server's merged sessions call these
with the charger's messages already in site terms (connector numbers renumbered, kWh in Wh), and
the upstream adapter relays commands for a native connector through ``relay``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from gateway.domain.events import ConnectorReadingChanged, RelayToCharger
from gateway.domain.model import Connector, ConnectorStatus, Fault, Reading, SessionInfo, iso_utc
from gateway.domain.transactions import (
    Authorize,
    AuthStatus,
    StartTransaction,
    StopReason,
    StopTransaction,
    new_local_ref,
)
from gateway.services.site_core import SiteCore

log = logging.getLogger(__name__)


class NativeChargers:
    """Which connectors are native chargers', what they say, and the commands relayed to them;
    owns their own statuses and the authorisations they wait for."""

    def __init__(self, site: SiteCore) -> None:
        self._site = site
        self._statuses: dict[int, ConnectorStatus] = {}  # the chargers' own statuses, by connector
        self._connectors: set[int] = set()
        self._authorizations: dict[tuple[int, str], list[asyncio.Future[AuthStatus]]] = {}

    def status_of(self, connector_id: int) -> ConnectorStatus | None:
        """What the charger said of ``connector_id`` last (None: not a native charger's, or nothing yet)."""
        return self._statuses.get(connector_id)

    def authorization_answered(self, connector_id: int, id_tag: str, status: AuthStatus) -> bool:
        """Hand an authorisation answer to the native charger that asked for it; False if none did."""
        waiting = self._authorizations.pop((connector_id, id_tag), None)
        for future in waiting or []:
            if not future.done():
                future.set_result(status)
        return bool(waiting)

    def status(self, connector_id: int, status: ConnectorStatus, faults: tuple[Fault, ...], at: datetime) -> None:
        """A native charger's StatusNotification for one of its connectors (site numbering)."""
        connector = self._site.connectors[connector_id]
        car_left = status is ConnectorStatus.AVAILABLE and self._statuses.get(connector_id) is not status
        self._statuses[connector_id] = status
        connector.device_faults = faults
        if car_left:  # what was known of the last car's battery goes with it
            self._site.batteries.charger_polled(connector, car_left=True)
        self._site.set_online(connector.device, True, "", at)
        self._site.update_status(connector, at)

    def reading(self, connector_id: int, reading: Reading) -> Fault | None:
        """A native charger's register reading (MeterValues, or a transaction's meter start or
        stop) for one of its connectors: its registers, as read.

        Returns the register guard's fault when it refused the energy register: then nothing of
        the reading is used (its values were measured together) and the caller answers the
        charger; the connector keeps its reading. A reading stamped before the connector's
        current one or before its running session's start (a late or repeated message) is
        stale: ignored, no fault (it says nothing about the meter now)."""
        connector = self._site.connectors[connector_id]
        if self._stale(connector, reading.measured_at):
            log.debug(
                "connector %s: a reading of %s is older than what is known: ignored", connector_id, reading.measured_at
            )
            return None
        self._site.set_online(connector.device, True, "", reading.measured_at)  # it talks: before any status too
        checked, register_fault = self._site.guard_register(f"connector {connector_id}", reading, quiet=True)
        if register_fault is not None:
            return register_fault
        previous = connector.reading
        connector.reading = checked
        if previous is None or previous.values() != checked.values():
            self._site.emit(ConnectorReadingChanged(connector_id, checked))
        self._site.batteries.charger_polled(connector, car_left=False)  # its SoC, as a charger register's
        return None

    @staticmethod
    def _stale(connector: Connector, measured_at: datetime) -> bool:
        current = connector.reading
        if current is not None and measured_at < current.measured_at:
            return True
        return connector.session is not None and measured_at < connector.session.started_at

    def register(self, connector_ids: Iterable[int]) -> None:
        """These connectors belong to native OCPP chargers: back-office commands for them are
        relayed to the charger (``relay``) instead of being carried out here."""
        self._connectors.update(connector_ids)

    def owns(self, connector_id: int) -> bool:
        return connector_id in self._connectors

    def connectors_of(self, connector_id: int) -> list[int]:
        """Every connector of the charger ``connector_id`` belongs to (itself included)."""
        device = self._site.connectors[connector_id].device
        return [cid for cid, connector in self._site.connectors.items() if connector.device == device]

    def one_connector_per_charger(self) -> list[int]:
        """A connector of each native charger: where a command for a whole charger is relayed."""
        first = {c.device: c.connector_id for c in self._site.connectors.values() if self.owns(c.connector_id)}
        return sorted(first.values())

    def relay(self, connector_id: int, action: str, payload: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        """Hand a back-office command to the native charger of ``connector_id``; the future holds
        its answer (a dict of the charger's result)."""
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._site.emit(RelayToCharger(connector_id, action, payload, answer))
        return answer

    async def ask(
        self, connector_id: int, action: str, payload: dict[str, Any], timeout_s: float
    ) -> dict[str, Any] | None:
        """``relay``, waited for at most ``timeout_s``: the charger's whole answer, or None when it
        gave none (not connected, a CALLERROR, silence). A charger's failure is its own: the
        back office still gets an answer, and the gateway carries on."""
        try:
            async with asyncio.timeout(timeout_s):
                return await self.relay(connector_id, action, payload)
        except Exception as exc:
            log.warning("%s for connector %s not carried out by its native charger: %s", action, connector_id, exc)
            return None

    def offline(self, device: str, at: datetime) -> None:
        """A native charger's connection closed: its connectors lose communication."""
        self._site.set_online(device, False, "the charger's OCPP connection closed", at)

    def start(self, connector_id: int, id_tag: str, meter_start_wh: int, at: datetime) -> str:
        """A native charger started a transaction; returns the local reference it goes upstream under.

        A start equal to the running session's (same id tag, meter start and time) is that
        session's start again, resent by a charger that never saw the answer: its reference is
        returned and nothing new starts."""
        running = self._site.connectors[connector_id].session
        # (times compared as kept: to the millisecond, as the ledger holds a session taken up after a restart)
        same = running is not None and (running.id_tag, running.meter_start_wh, iso_utc(running.started_at)) == (
            id_tag,
            meter_start_wh,
            iso_utc(at),
        )
        if running is not None and same:
            log.info(
                "connector %s: the start of session %s came again: nothing new started", connector_id, running.local_ref
            )
            return running.local_ref
        if running is not None:  # the charger has moved on: its last session ended where this one begins
            log.warning(
                "connector %s: a new transaction started while session %s still ran; that one is stopped at %s Wh",
                connector_id,
                running.local_ref,
                max(running.meter_start_wh, meter_start_wh),
            )
            ended = max(running.meter_start_wh, meter_start_wh)
            self._site.session_effect(
                StopTransaction(connector_id, running.local_ref, running.id_tag, ended, at, StopReason.OTHER)
            )
        local_ref = new_local_ref(connector_id, at)
        self._site.session_effect(StartTransaction(connector_id, local_ref, id_tag, meter_start_wh, at))
        return local_ref

    def resume(self, connector_id: int, local_ref: str, id_tag: str, meter_start_wh: int, at: datetime) -> None:
        """A native charger's session that was running when the gateway stopped goes on: the
        charger did not stop with the gateway, and its MeterValues and StopTransaction for it (by
        the transaction id it was given, kept across the restart) still come."""
        connector = self._site.connectors[connector_id]
        connector.session_active, connector.finishing = True, False
        connector.session = SessionInfo(local_ref, id_tag, meter_start_wh, at)

    def stop(self, local_ref: str, meter_stop_wh: int, at: datetime, reason: StopReason) -> bool:
        """A native charger stopped the transaction ``local_ref``; False if no such session runs.

        The stop register is a reading too. One below the session's start, or refused by the
        register guard, is not billed: the session stops with the highest good register value
        known for the connector (never below its start), and a WARNING names the value sent."""
        connector = self._site.running_connector(local_ref)
        if connector is None or connector.session is None:
            return False
        session = connector.session
        refused = "below the session's start" if meter_stop_wh < session.meter_start_wh else None
        if refused is None:
            fault = self.reading(connector.connector_id, Reading(at, energy_wh=meter_stop_wh))
            # a stop stamped before the last reading is stale news, yet it is billed: check it anyway
            fault = fault or self._site.registers.plausible(f"connector {connector.connector_id}", meter_stop_wh, at)
            refused = f"refused: {fault.info}" if fault is not None else None
        if refused is not None:
            used = self._best_register(connector, session.meter_start_wh)
            log.warning(
                "connector %s: session %s ended with the register at %s Wh, %s; stopped with %s Wh",
                connector.connector_id,
                local_ref,
                meter_stop_wh,
                refused,
                used,
            )
            meter_stop_wh = used
        stop = StopTransaction(connector.connector_id, local_ref, session.id_tag, meter_stop_wh, at, reason)
        self._site.session_effect(stop)
        return True

    def _best_register(self, connector: Connector, meter_start_wh: int) -> int:
        """The highest good energy register value known for ``connector``, at least ``meter_start_wh``."""
        last = self._site.registers.last(f"connector {connector.connector_id}")
        known = [meter_start_wh, last.energy_wh if last is not None else None]
        if connector.reading is not None:
            known.append(connector.reading.energy_wh)
        return max(value for value in known if isinstance(value, int))

    def authorize(self, connector_id: int, id_tag: str) -> asyncio.Future[AuthStatus]:
        """Ask the gateway's authorisation (the CSMS, or the local list and cache while it is away)
        for a card shown at a native charger; the future holds the answer."""
        future: asyncio.Future[AuthStatus] = asyncio.get_running_loop().create_future()
        self._authorizations.setdefault((connector_id, id_tag), []).append(future)
        self._site.emit(Authorize(connector_id, id_tag))
        return future
