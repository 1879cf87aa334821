"""Meter values of the 2.0.1 station from what the site measures now.

A session's values are TransactionEvent(Updated) through the durable outbox (periodic:
MeterValuePeriodic, kind SAMPLED, which the outbox may thin; clock-aligned: MeterValueClock,
kind ALIGNED, never thinned). The grid meter's clock-aligned values are MeterValues of EVSE 0,
queued too (they bill the site). Anything else goes live, or nowhere while the CSMS is away.
Only news is sent: nothing stamped before its session began, no periodic value twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from adapters.ocpp201_upstream.ledger import Ledger201
from adapters.ocpp201_upstream.mapping import ENERGY_REGISTER, meter_values
from adapters.ocpp201_upstream.transaction_events import updated_payload
from gateway.domain.model import iso_utc
from gateway.domain.outbox import NewRecord, RecordKind
from gateway.services.outbox import Outbox
from gateway.services.site import Site

SendLive = Callable[[int, list[dict[str, Any]]], Awaitable[None]]
TRIGGER_REASON = {"Sample.Periodic": "MeterValuePeriodic", "Sample.Clock": "MeterValueClock", "Trigger": "Trigger"}


def evse_meter_values(
    site: Site, measurands: list[str], context: str, stamp: datetime | None = None
) -> dict[int, list[dict[str, Any]]]:
    """MeterValueType entries per EVSE (0: the grid meter) from devices that are answering.

    A connector with an assigned meter takes its register from that meter, never the charger's;
    its SoC is the best the Site knows, stamped when it was measured."""
    at = iso_utc(stamp) if stamp is not None else None
    per_evse: dict[int, list[dict[str, Any]]] = {}
    metered = {m.connector_id for m in site.meters.values() if m.connector_id}
    for connector in site.upstream_connectors.values():
        wanted = [m for m in measurands if not (m == ENERGY_REGISTER and connector.connector_id in metered)]
        reading = connector.reading if connector.device_online else None
        entries = meter_values(reading, wanted, context=context, stamp=at, soc=connector.soc)
        if entries:
            per_evse.setdefault(connector.connector_id, []).extend(entries)
    for meter in site.meters.values():
        if meter.connector_id is None or meter.reading is None or not meter.device_online:
            continue
        location = "Inlet" if meter.connector_id == 0 else "Outlet"
        wanted = [m for m in measurands if m != "SoC"]
        entries = meter_values(meter.reading, wanted, context=context, location=location, stamp=at)
        if entries:
            per_evse.setdefault(meter.connector_id, []).extend(entries)
    return dict(sorted(per_evse.items()))


class Sampler201:
    """Takes samples for the station; ``online`` says whether an event now is sent live (not offline)."""

    def __init__(
        self,
        site: Site,
        ledger: Ledger201,
        outbox: Outbox,
        measurands: list[str],
        online: Callable[[], bool],
        send_live: SendLive,
    ) -> None:
        self.site = site
        self.ledger = ledger
        self.outbox = outbox
        self.measurands = measurands
        self.aligned_measurands = [ENERGY_REGISTER]
        self._online = online
        self._send_live = send_live
        self._sent_stamps: dict[int, set[str]] = {}  # per EVSE, the times of the last periodic sample

    async def take(
        self, context: str = "Sample.Periodic", stamp: datetime | None = None, only: int | None = None
    ) -> None:
        """One round of values: ``context`` Sample.Periodic, Sample.Clock (stamped ``stamp``) or Trigger."""
        aligned = context == "Sample.Clock"
        measurands = self.aligned_measurands if aligned else self.measurands
        queued: list[NewRecord] = []
        live: list[tuple[int, list[dict[str, Any]]]] = []
        for evse_id, entries in evse_meter_values(self.site, measurands, context, stamp).items():
            if only is not None and evse_id != only:
                continue
            ref = self.ledger.running.get(evse_id)
            entries = self._fresh(evse_id, ref, entries, periodic=context == "Sample.Periodic")
            if not entries:
                continue
            created_at = entries[0]["timestamp"]
            if ref is not None:
                status = self.site.connectors[evse_id].status
                payload = updated_payload(ref, TRIGGER_REASON[context], entries, status, offline=not self._online())
                kind = RecordKind.ALIGNED if aligned else RecordKind.SAMPLED
                queued.append(NewRecord(kind, "TransactionEvent", payload, created_at, ref))
                self._note(ref, entries)
            elif aligned and evse_id == 0:
                payload = {"evse_id": 0, "meter_value": entries}
                queued.append(NewRecord(RecordKind.ALIGNED, "MeterValues", payload, created_at, None))
            else:
                live.append((evse_id, entries))
        if queued:
            self.ledger.save()  # the registers sent are on disk before they are queued
        for record in queued:
            self.outbox.enqueue(record)
        for evse_id, entries in live:
            await self._send_live(evse_id, entries)

    def _note(self, ref: str, entries: list[dict[str, Any]]) -> None:
        """The session's highest register and latest time in these values (for a stop after a crash)."""
        for entry in entries:
            at = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00"))
            energies = [int(s["value"]) for s in entry["sampled_value"] if s.get("measurand") == ENERGY_REGISTER]
            self.ledger.register_seen(ref, max(energies, default=None), at)

    def note_registers(self) -> None:
        """The billing register of every running session (kept in memory; saved with the next sample)."""
        for evse_id, ref in list(self.ledger.running.items()):
            if (register := self.site.billing_register(evse_id)) is not None:
                self.ledger.register_seen(ref, *register)

    def _fresh(
        self, evse_id: int, ref: str | None, entries: list[dict[str, Any]], *, periodic: bool
    ) -> list[dict[str, Any]]:
        if ref is not None and (session := self.ledger.sessions.get(ref)) is not None:
            started_at = datetime.fromisoformat(session.started_at)
            entries = [e for e in entries if datetime.fromisoformat(e["timestamp"]) >= started_at]
        if periodic:
            sent = self._sent_stamps.get(evse_id, set())
            self._sent_stamps[evse_id] = {e["timestamp"] for e in entries}
            entries = [e for e in entries if e["timestamp"] not in sent]
        return entries
