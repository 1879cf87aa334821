"""NotifyEvent for faults and lost devices: the 2.0.1 way to tell the CSMS what is wrong, and when it is over.

A StatusNotification Faulted says that an EVSE cannot charge; a NotifyEvent says what broke. Each
fault the Site raises or clears, and each meter or other device that stops or starts answering,
becomes one eventData (OCPP 2.0.1 Part 2, the device model's Problem variable, as the spec does
for its own hardwired notifications): ``trigger`` Alerting, ``eventNotificationType``
HardWiredNotification, variable ``Problem`` with ``actualValue`` "true" (raised) or "false"
(``cleared: true``, ``cause`` = the eventId that raised it while this process knows it).

Components: a connector's fault is the ``Connector`` of its EVSE (connectorId 1); a meter's is
``FiscalMetering`` of the EVSE it bills (``ControlMetering`` for the grid meter), ``instance`` =
the meter's name; anything else (a device that is neither) is the ``ChargingStation``. A charger
that stops answering is already a fault of each of its connectors (CommLost), so only meters and
other devices are reported from ``DeviceHealthChanged``.

These are not billing data: they wait in a bounded queue in memory while the CSMS is away (the
oldest go first when it is full, with a WARNING) and are lost with the process. eventIds grow
across restarts (the last one is saved in the settings).
"""

from __future__ import annotations

import asyncio
import logging
import unicodedata
from collections import deque
from datetime import datetime
from typing import Any

from ocpp.v201 import call

from adapters.ocpp_link import send_call
from gateway.domain.events import DeviceHealthChanged, FaultCleared, FaultRaised
from gateway.domain.model import Fault, iso_utc
from gateway.services.ocpp_status import DEFAULT_INFO, ERROR_CODE
from gateway.services.site import Site

log = logging.getLogger(__name__)

EVENT_ID = "ocpp201_event_id"  # settings section: the last eventId given
MAX_QUEUED = 200  # events kept while the CSMS is away
TECH_CODE_MAX = 50  # EventDataType.techCode
TECH_INFO_MAX = 500  # EventDataType.techInfo
NAME_MAX = 50  # ComponentType.instance
COMM_LOST = "CommLost"

ProblemEvent = FaultRaised | FaultCleared | DeviceHealthChanged


def clean_text(text: str, limit: int) -> str:
    """``text`` fit for a CSMS: control characters become spaces, lone surrogates "?", at most ``limit``."""
    text = text.encode("utf-8", "replace").decode("utf-8")
    shown = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in text[: limit * 2])
    shown = " ".join(shown.split())
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def tech_info(fault: Fault) -> str:
    """``<1.6 error code>: <the device's text>``: the kind in the words a 1.6 CSMS already knows."""
    text = fault.info or DEFAULT_INFO.get(fault.kind) or fault.kind.value
    return clean_text(f"{ERROR_CODE[fault.kind]}: {text}", TECH_INFO_MAX)


def tech_code(fault: Fault) -> str:
    """The device's own code, else the kind's 1.6 error code."""
    return clean_text(fault.vendor_code or ERROR_CODE[fault.kind], TECH_CODE_MAX) or ERROR_CODE[fault.kind]


class ProblemEvents:
    """Turns the Site's fault and health events into eventData, queued until a linked station sends them."""

    def __init__(self, site: Site, max_queued: int = MAX_QUEUED) -> None:
        self.site = site
        self._queue: deque[dict[str, Any]] = deque(maxlen=max_queued)
        self._ready = asyncio.Event()
        self._raised: dict[tuple[Any, ...], int] = {}  # what is active -> the eventId that raised it
        self._last_id = self._stored_id()

    def _stored_id(self) -> int:
        stored = self.site.settings.load(EVENT_ID)
        last = stored.get("last") if isinstance(stored, dict) else None
        return last if isinstance(last, int) and not isinstance(last, bool) and 0 <= last < 2**31 - 1 else 0

    def _next_id(self) -> int:
        self._last_id = self._last_id + 1 if self._last_id < 2**31 - 1 else 1
        self.site.settings.save(EVENT_ID, {"last": self._last_id})
        return self._last_id

    def take(self, event: ProblemEvent) -> None:
        """One Site event: queue its eventData (or nothing, for an event that is not a problem here)."""
        if isinstance(event, DeviceHealthChanged):
            self._health(event)
            return
        component = self._fault_component(event)
        if component is None:
            return
        key = (repr(component), event.fault)
        raised = isinstance(event, FaultRaised)
        self._queue_event(key, raised, component, tech_code(event.fault), tech_info(event.fault), event.at)

    def _fault_component(self, event: FaultRaised | FaultCleared) -> dict[str, Any] | None:
        if event.meter is not None:
            return self._meter_component(event.meter)
        if event.connector_id is None:
            return {"name": "ChargingStation"}
        if event.connector_id not in self.site.upstream_connectors:
            return None  # not part of this station
        return {"name": "Connector", "evse": {"id": event.connector_id, "connector_id": 1}}

    def _meter_component(self, name: str) -> dict[str, Any]:
        meter = self.site.meters.get(name)  # a meter's device is its name
        evse_id = meter.connector_id if meter is not None else None
        instance = clean_text(name, NAME_MAX) or "meter"
        if evse_id and evse_id in self.site.upstream_connectors:
            return {"name": "FiscalMetering", "instance": instance, "evse": {"id": evse_id}}
        return {"name": "ControlMetering", "instance": instance}

    def _health(self, event: DeviceHealthChanged) -> None:
        if any(c.device == event.device for c in self.site.upstream_connectors.values()):
            return  # its connectors report CommLost as a fault
        if event.device in self.site.meters:
            component = self._meter_component(event.device)
        else:
            component = {"name": "ChargingStation", "instance": clean_text(event.device, NAME_MAX) or "device"}
        key = (repr(component), COMM_LOST)
        if event.online and key not in self._raised:
            return  # first answer of a device never lost: nothing to clear
        info = f"device {event.device}: " + ("answering again" if event.online else event.reason or "no answer")
        self._queue_event(
            key, not event.online, component, COMM_LOST, clean_text(info, TECH_INFO_MAX), event.changed_at
        )

    def _queue_event(
        self, key: tuple[Any, ...], raised: bool, component: dict[str, Any], code: str, info: str, at: datetime
    ) -> None:
        event_id = self._next_id()
        data: dict[str, Any] = {
            "event_id": event_id,
            "timestamp": iso_utc(at),
            "trigger": "Alerting",
            "actual_value": "true" if raised else "false",
            "tech_code": code,
            "tech_info": info,
            "event_notification_type": "HardWiredNotification",
            "component": component,
            "variable": {"name": "Problem"},
        }
        if raised:
            self._raised[key] = event_id
        else:
            data["cleared"] = True
            cause = self._raised.pop(key, None)
            if cause is not None:
                data["cause"] = cause
        if len(self._queue) == self._queue.maxlen:
            log.warning("NotifyEvent queue full (%d): the oldest event is dropped", self._queue.maxlen)
        self._queue.append(data)
        self._ready.set()

    def queued(self) -> int:
        return len(self._queue)

    async def deliver(self, peer: Any) -> None:
        """Send the queue, one NotifyEvent per eventData, while the link lasts (run after boot)."""
        while True:
            while not self._queue:
                self._ready.clear()
                await self._ready.wait()
            data = self._queue[0]
            request = call.NotifyEvent(generated_at=iso_utc(self.site.clock.now()), seq_no=0, event_data=[data])
            result = await send_call(peer, request)  # a cancel (the link went) leaves it at the head
            if self._queue and self._queue[0] is data:
                self._queue.popleft()
            if result is None:
                log.warning("NotifyEvent %s not accepted by the CSMS: dropped", data["event_id"])
