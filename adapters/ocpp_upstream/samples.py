"""What the site measures now, as OCPP MeterValue lists per connector (0 = the site meter)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from adapters.ocpp_upstream.mapping import meter_value, with_soc
from gateway.services.site import Site


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
