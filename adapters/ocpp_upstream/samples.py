"""What the site measures now, as OCPP MeterValue lists per connector (0 = the site meter)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from adapters.ocpp_upstream.mapping import meter_value
from gateway.services.site import Site


def site_meter_values(
    site: Site, measurands: list[str], context: str = "Sample.Periodic", stamp: datetime | None = None
) -> list[tuple[int, list[Any]]]:
    """MeterValue lists per connector from the latest readings of devices that are answering.

    A connector with an assigned meter takes its billing register from that meter, never from
    the charger; ``stamp`` replaces the reading times for clock-aligned values.
    """
    per_connector: dict[int, list[Any]] = {}
    metered = {m.connector_id for m in site.meters.values() if m.connector_id}
    for connector in site.connectors.values():
        if connector.reading is None or not connector.device_online:
            continue
        wanted = measurands
        if connector.connector_id in metered:
            wanted = [m for m in measurands if m != "Energy.Active.Import.Register"]
        value = meter_value(connector.reading, wanted, context=context, stamp=stamp)
        if value is not None:
            per_connector.setdefault(connector.connector_id, []).append(value)
    for meter in site.meters.values():
        if meter.connector_id is None or meter.reading is None or not meter.device_online:
            continue
        location = "Inlet" if meter.connector_id == 0 else "Outlet"
        value = meter_value(meter.reading, measurands, context=context, location=location, stamp=stamp)
        if value is not None:
            per_connector.setdefault(meter.connector_id, []).append(value)
    return sorted(per_connector.items())
