"""What native OCPP chargers (merged mode) tell the Site, and how back-office commands reach them.

A part of ``Site`` (a mixin): the local OCPP server's merged sessions call these with the
charger's messages already in site terms (connector numbers renumbered, kWh in Wh), and the
upstream adapter relays commands for a native connector through ``relay``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from gateway.domain.events import ConnectorReadingChanged, Event, RelayToCharger
from gateway.domain.model import Connector, ConnectorStatus, Fault, Reading, SessionInfo, iso_utc
from gateway.domain.transactions import (
    Authorize,
    AuthStatus,
    Effect,
    StartTransaction,
    StopReason,
    StopTransaction,
    new_local_ref,
)
from gateway.services.batteries import Batteries
from gateway.services.billing_registers import BillingRegisters

log = logging.getLogger(__name__)


class NativeChargers:
    """The Site's door for native OCPP chargers; the state it uses is the Site's own."""

    connectors: dict[int, Connector]
    batteries: Batteries
    _native_status: dict[int, ConnectorStatus]
    _native_connectors: set[int]
    _native_authorizations: dict[tuple[int, str], list[asyncio.Future[AuthStatus]]]
    _emit: Callable[[Event], None]
    _session_effect: Callable[[Effect], None]
    _set_online: Callable[[str, bool, str, datetime], None]
    _update_status: Callable[[Connector, datetime], None]
    _guard_register: Callable[..., tuple[Reading, Fault | None]]
    _running: Callable[[str], Connector | None]
    registers: BillingRegisters

    def native_status(
        self, connector_id: int, status: ConnectorStatus, faults: tuple[Fault, ...], at: datetime
    ) -> None:
        """A native charger's StatusNotification for one of its connectors (site numbering)."""
        connector = self.connectors[connector_id]
        car_left = status is ConnectorStatus.AVAILABLE and self._native_status.get(connector_id) is not status
        self._native_status[connector_id] = status
        connector.device_faults = faults
        if car_left:  # what was known of the last car's battery goes with it
            self.batteries.charger_polled(connector, car_left=True)
        self._set_online(connector.device, True, "", at)
        self._update_status(connector, at)

    def native_reading(self, connector_id: int, reading: Reading) -> Fault | None:
        """A native charger's register reading (MeterValues, or a transaction's meter start or
        stop) for one of its connectors: its registers, as read.

        Returns the register guard's fault when it refused the energy register: then nothing of
        the reading is used (its values were measured together) and the caller answers the
        charger; the connector keeps its reading. A reading stamped before the connector's
        current one or before its running session's start (a late or repeated message) is
        stale: ignored, no fault (it says nothing about the meter now)."""
        connector = self.connectors[connector_id]
        if self._stale(connector, reading.measured_at):
            log.debug(
                "connector %s: a reading of %s is older than what is known: ignored", connector_id, reading.measured_at
            )
            return None
        self._set_online(connector.device, True, "", reading.measured_at)  # it talks: before any status too
        checked, register_fault = self._guard_register(f"connector {connector_id}", reading, quiet=True)
        if register_fault is not None:
            return register_fault
        previous = connector.reading
        connector.reading = checked
        if previous is None or previous.values() != checked.values():
            self._emit(ConnectorReadingChanged(connector_id, checked))
        self.batteries.charger_polled(connector, car_left=False)  # its SoC, as a charger register's
        return None

    @staticmethod
    def _stale(connector: Connector, measured_at: datetime) -> bool:
        current = connector.reading
        if current is not None and measured_at < current.measured_at:
            return True
        return connector.session is not None and measured_at < connector.session.started_at

    def register_native(self, connector_ids: Iterable[int]) -> None:
        """These connectors belong to native OCPP chargers: back-office commands for them are
        relayed to the charger (``relay``) instead of being carried out here."""
        self._native_connectors.update(connector_ids)

    def is_native(self, connector_id: int) -> bool:
        return connector_id in self._native_connectors

    def one_connector_per_native_charger(self) -> list[int]:
        """A connector of each native charger: where a command for a whole charger is relayed."""
        first = {c.device: c.connector_id for c in self.connectors.values() if self.is_native(c.connector_id)}
        return sorted(first.values())

    def relay(self, connector_id: int, action: str, payload: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        """Hand a back-office command to the native charger of ``connector_id``; the future holds
        its answer (a dict of the charger's result)."""
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._emit(RelayToCharger(connector_id, action, payload, answer))
        return answer

    def native_offline(self, device: str, at: datetime) -> None:
        """A native charger's connection closed: its connectors lose communication."""
        self._set_online(device, False, "the charger's OCPP connection closed", at)

    def native_start(self, connector_id: int, id_tag: str, meter_start_wh: int, at: datetime) -> str:
        """A native charger started a transaction; returns the local reference it goes upstream under.

        A start equal to the running session's (same id tag, meter start and time) is that
        session's start again, resent by a charger that never saw the answer: its reference is
        returned and nothing new starts."""
        running = self.connectors[connector_id].session
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
            self._session_effect(
                StopTransaction(connector_id, running.local_ref, running.id_tag, ended, at, StopReason.OTHER)
            )
        local_ref = new_local_ref(connector_id, at)
        self._session_effect(StartTransaction(connector_id, local_ref, id_tag, meter_start_wh, at))
        return local_ref

    def native_resume(self, connector_id: int, local_ref: str, id_tag: str, meter_start_wh: int, at: datetime) -> None:
        """A native charger's session that was running when the gateway stopped goes on: the
        charger did not stop with the gateway, and its MeterValues and StopTransaction for it (by
        the transaction id it was given, kept across the restart) still come."""
        connector = self.connectors[connector_id]
        connector.session_active, connector.finishing = True, False
        connector.session = SessionInfo(local_ref, id_tag, meter_start_wh, at)

    def native_stop(self, local_ref: str, meter_stop_wh: int, at: datetime, reason: StopReason) -> bool:
        """A native charger stopped the transaction ``local_ref``; False if no such session runs.

        The stop register is a reading too. One below the session's start, or refused by the
        register guard, is not billed: the session stops with the highest good register value
        known for the connector (never below its start), and a WARNING names the value sent."""
        connector = self._running(local_ref)
        if connector is None or connector.session is None:
            return False
        session = connector.session
        refused = "below the session's start" if meter_stop_wh < session.meter_start_wh else None
        if refused is None:
            fault = self.native_reading(connector.connector_id, Reading(at, energy_wh=meter_stop_wh))
            # a stop stamped before the last reading is stale news, yet it is billed: check it anyway
            fault = fault or self.registers.plausible(f"connector {connector.connector_id}", meter_stop_wh, at)
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
        self._session_effect(stop)
        return True

    def _best_register(self, connector: Connector, meter_start_wh: int) -> int:
        """The highest good energy register value known for ``connector``, at least ``meter_start_wh``."""
        last = self.registers.last(f"connector {connector.connector_id}")
        known = [meter_start_wh, last.energy_wh if last is not None else None]
        if connector.reading is not None:
            known.append(connector.reading.energy_wh)
        return max(value for value in known if isinstance(value, int))

    def native_authorize(self, connector_id: int, id_tag: str) -> asyncio.Future[AuthStatus]:
        """Ask the gateway's authorisation (the CSMS, or the local list and cache while it is away)
        for a card shown at a native charger; the future holds the answer."""
        future: asyncio.Future[AuthStatus] = asyncio.get_running_loop().create_future()
        self._native_authorizations.setdefault((connector_id, id_tag), []).append(future)
        self._emit(Authorize(connector_id, id_tag))
        return future
