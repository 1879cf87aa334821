"""MeterValues from what the site measures now: billing data through the outbox, the rest live.

A session's values (and every clock-aligned value of the site meter, connector 0) are billing
data: they are queued in the durable outbox under the session's local reference, after the
session's register and time are written down (``TransactionLog.before_sending``), so that a stop
after a crash is never below nor before anything sent. Values outside a session go live, or
nowhere while the CSMS is away. Only news is sent: nothing stamped before its session began,
and no periodic value again with the same time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import datetime
from typing import Any

from adapters.ocpp_upstream.configuration import OcppConfiguration
from adapters.ocpp_upstream.mapping import meter_value, with_soc
from adapters.ocpp_upstream.transactions import TransactionLog, newest_reading
from gateway.domain.outbox import NewRecord, RecordKind
from gateway.services.outbox import Outbox
from gateway.services.site import Site

SendLive = Callable[[int, list[Any]], Awaitable[None]]


class MeterSampler:
    """Takes samples for the virtual charge point; ``send_live`` sends values outside a session."""

    def __init__(
        self,
        site: Site,
        configuration: OcppConfiguration,
        transactions: TransactionLog,
        outbox: Outbox,
        send_live: SendLive,
    ) -> None:
        self.site = site
        self.configuration = configuration
        self.transactions = transactions
        self.outbox = outbox
        self._send_live = send_live
        self._sent_stamps: dict[int, set[str]] = {}  # per connector, the times of the last periodic sample

    async def take_samples(self, only: int | None = None, context: str = "Sample.Periodic") -> None:
        """Periodic (or triggered) MeterValues, with the MeterValuesSampledData measurands."""
        measurands = self.configuration.meter_values_sampled_data
        stop_measurands = self.configuration.measurands("StopTxnSampledData")
        await self._meter_values(measurands, stop_measurands, context, None, only)

    async def take_aligned(self, boundary: datetime) -> None:
        """Clock-aligned MeterValues (Sample.Clock) stamped with the interval ``boundary``."""
        measurands = self.configuration.measurands("MeterValuesAlignedData")
        stop_measurands = self.configuration.measurands("StopTxnAlignedData")
        await self._meter_values(measurands, stop_measurands, "Sample.Clock", boundary, None)

    async def _meter_values(
        self,
        measurands: list[str],
        stop_measurands: list[str],
        context: str,
        stamp: datetime | None,
        only: int | None,
    ) -> None:
        """MeterValues per connector from the latest readings.

        A session's values (and every clock-aligned value of the site meter) are billing data and
        go through the outbox; the rest is sent live, or not at all while the CSMS is away. Values
        asked for by StopTxnSampledData / StopTxnAlignedData are kept for the session's stop.
        Before a session's values are queued, their register and time are written down (see
        ``TransactionLog.before_sending``), all in one write and with no wait in between.
        """
        aligned = context == "Sample.Clock"
        queued: list[tuple[RecordKind, dict[str, Any], str, str | None]] = []
        live: list[tuple[int, list[Any]]] = []
        readings: dict[str, tuple[int | None, datetime]] = {}
        for connector_id, values in site_meter_values(self.site, measurands, context, stamp):
            if only is not None and connector_id != only:
                continue
            ref = self.transactions.running.get(connector_id)
            values = self._fresh(connector_id, ref, values, periodic=context == "Sample.Periodic")
            if not values:
                continue
            if ref is not None or (aligned and connector_id == 0):
                kind = RecordKind.ALIGNED if aligned else RecordKind.SAMPLED
                payload = {"connector_id": connector_id, "meter_value": [asdict(v) for v in values]}
                queued.append((kind, payload, values[0].timestamp, ref))
                if ref is not None and (newest := newest_reading(values)) is not None:
                    readings[ref] = newest
            else:
                live.append((connector_id, values))
        self.transactions.before_sending(readings)
        for kind, payload, created_at, ref in queued:
            self.outbox.enqueue(NewRecord(kind, "MeterValues", payload, created_at, ref))
        for connector_id, values in live:
            await self._send_live(connector_id, values)
        self._keep_session_registers(stop_measurands, context, stamp)

    def _fresh(self, connector_id: int, ref: str | None, values: list[Any], *, periodic: bool) -> list[Any]:
        """The values that are news: never one stamped before the running session began (a native
        charger's reading of an earlier session), and no periodic value sent again with the same
        time (a reading that has not changed since the last sample, e.g. of an idle native charger)."""
        if ref is not None and (opened := self.transactions.open.get(ref)) is not None:
            started_at = datetime.fromisoformat(opened.started_at)
            values = [v for v in values if datetime.fromisoformat(v.timestamp) >= started_at]
        if periodic:
            sent = self._sent_stamps.get(connector_id, set())
            self._sent_stamps[connector_id] = {v.timestamp for v in values}
            values = [v for v in values if v.timestamp not in sent]
        return values

    def _keep_session_registers(self, stop_measurands: list[str], context: str, stamp: datetime | None) -> None:
        """Each open session's register (for a restart) and its StopTxn values (for its stop)."""
        if not self.transactions.running:
            return
        self.note_session_registers()
        stop_values = dict(site_meter_values(self.site, stop_measurands, context, stamp)) if stop_measurands else {}
        for connector_id, ref in list(self.transactions.running.items()):
            for value in stop_values.get(connector_id, []):
                self.transactions.add_stop_sample(ref, asdict(value))

    def note_session_registers(self) -> None:
        """The billing register of every running session, so a restart can stop it with a real
        meterStop whatever the sample intervals are (even 0)."""
        for connector_id, ref in list(self.transactions.running.items()):
            register = self.site.billing_register(connector_id)
            if register is not None:
                self.transactions.register_seen(ref, *register)


def site_meter_values(
    site: Site, measurands: list[str], context: str = "Sample.Periodic", stamp: datetime | None = None
) -> list[tuple[int, list[Any]]]:
    """MeterValue lists per connector from the latest readings of devices that are answering.

    A connector with an assigned meter takes its billing register from that meter, never from
    the charger; its SoC is the best one the Site knows (charger, car integration or estimate),
    with the time it was measured. ``stamp`` replaces the reading times for clock-aligned values.
    """
    per_connector: dict[int, list[Any]] = {}
    metered = {m.connector_id for m in site.meters.values() if m.connector_id}
    for connector in site.upstream_connectors.values():
        wanted = [m for m in measurands if m != "SoC"]
        if connector.connector_id in metered:
            wanted = [m for m in wanted if m != "Energy.Active.Import.Register"]
        value = None
        if connector.reading is not None and connector.device_online:
            value = meter_value(connector.reading, wanted, context=context, stamp=stamp)
        values = [] if value is None else [value]
        if "SoC" in measurands and connector.soc is not None:
            values = with_soc(value, connector.soc, context=context, stamp=stamp)
        if values:
            per_connector.setdefault(connector.connector_id, []).extend(values)
    for meter in site.meters.values():
        if meter.connector_id is None or meter.reading is None or not meter.device_online:
            continue
        location = "Inlet" if meter.connector_id == 0 else "Outlet"
        value = meter_value(meter.reading, measurands, context=context, location=location, stamp=stamp)
        if value is not None:
            per_connector.setdefault(meter.connector_id, []).append(value)
    return sorted(per_connector.items())
