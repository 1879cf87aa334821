"""MeterValues a CSMS triggers while it has the charge point Pending.

OCPP 1.6, 4.2: while Pending "the Charge Point SHALL NOT send request messages to the Central
System unless it has been instructed by the Central System to do so with a TriggerMessage.req".
So a triggered MeterValues is sent then, and nothing else: the latest readings of the connector
asked for (or of all), context Trigger, live. None of them carries a transactionId or enters the
durable outbox: a session's billing messages wait there, in order, until the boot is Accepted
(its StartTransaction has not been sent, so no CSMS id exists yet).
"""

from __future__ import annotations

from ocpp.v16 import call

from adapters.ocpp_upstream.sampling import site_meter_values
from gateway.services.site import Site


def pending_meter_values(site: Site, measurands: list[str], only: int | None) -> list[call.MeterValues]:
    """One MeterValues per connector (``only``: that one) with readings from answering devices."""
    return [
        call.MeterValues(connector_id=connector_id, meter_value=values)
        for connector_id, values in site_meter_values(site, measurands, context="Trigger")
        if only is None or connector_id == only
    ]
