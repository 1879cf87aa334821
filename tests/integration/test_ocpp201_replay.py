"""A 2.0.1 backlog replayed with several samples per TransactionEvent, against the real 2.0.1 CSMS
(the ``ocpp`` library, schemas validated both ways): fewer requests, every value once with its time
and context, seqNo gapless per transaction; a batch whose answer was lost (the link dropped, or a
kill) is sent again with the same seqNo and the same content, whatever was queued behind it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from ocpp.charge_point import snake_to_camel_case
from ocpp.routing import on
from ocpp.v201 import call_result
from ocpp.v201.enums import Action
from websockets.asyncio.server import ServerConnection

from adapters.demo_csms.csms import Received
from adapters.demo_csms.csms201 import DemoCsms201, _Session201
from adapters.ocpp201_upstream.station import CLEAN_SHUTDOWN, ChargingStation201
from adapters.storage.outbox_store import SegmentedOutboxStore
from adapters.storage.settings import JsonSettingsStore
from gateway.domain.model import ChargerSnapshot, Connector, Reading, VehicleState
from gateway.domain.transactions import AuthPolicy
from gateway.services.outbox import Outbox
from gateway.services.sessions import ConnectorPolicy
from gateway.services.site import Site
from tests.fixtures.memory_outbox import memory_outbox
from tests.fixtures.net import free_port
from tests.fixtures.status_site import until
from tests.integration.test_ocpp201_upstream import at_minute, running, short_status_grace, upstream_at

__all__ = ["running", "short_status_grace"]  # the fixtures, shared with test_ocpp201_upstream

FREE = {1: ConnectorPolicy(AuthPolicy.FREE, "CARPORT"), 2: ConnectorPolicy(AuthPolicy.FREE, "VAN")}
DEVICES = {1: "left", 2: "right"}


class _LosesAnAnswer(_Session201):
    """Takes one batched Updated, then drops the link without answering it."""

    @on(Action.transaction_event)
    async def on_transaction_event(self, **kwargs: Any) -> Any:
        csms = self.csms
        if isinstance(csms, LosingCsms) and csms.armed and len(kwargs.get("meter_value") or []) > 1:
            csms.armed = False
            csms.password = "away"  # no reconnect until the test lets it
            csms.record(Received(self.id, "TransactionEvent", snake_to_camel_case(kwargs)))
            await self._connection.close()
            csms.dropped.set()
            return call_result.TransactionEvent()  # never reaches the station: the link is gone
        return await super().on_transaction_event(**kwargs)


class LosingCsms(DemoCsms201):
    """The demo 2.0.1 CSMS whose answer to the first batched Updated is lost with the link."""

    def __init__(self, port: int) -> None:
        super().__init__("127.0.0.1", port)
        self.armed = True
        self.dropped = asyncio.Event()

    def _new_session(self, charge_point_id: str, connection: ServerConnection) -> Any:
        return _LosesAnAnswer(self, charge_point_id, connection)

    def back(self) -> None:
        self.password = None


def make_site(settings: Path | None = None) -> Site:
    site = Site([Connector(1, "left"), Connector(2, "right")], [], policies=FREE)
    if settings is not None:
        site.settings = JsonSettingsStore(settings)
    return site


def station_for(site: Site, port: int, outbox: Outbox) -> ChargingStation201:
    station = ChargingStation201(site, upstream_at(port), outbox)
    station.aligned_interval_s = 0  # clock-aligned values are taken by the test
    return station


def apply(site: Site, evse: int, minute: int, state: VehicleState, energy_wh: int) -> None:
    reading = Reading(at_minute(minute), energy_wh=energy_wh, power_w=7200.0)
    site.apply(ChargerSnapshot(DEVICES[evse], 1, reading, vehicle_state=state))


async def charge(site: Site, station: ChargingStation201, evses: list[int], minutes: range) -> None:
    """Charging on ``evses`` with a periodic sample each minute, a clock-aligned one at minute 5."""
    for minute in minutes:
        for evse in evses:
            apply(site, evse, minute, VehicleState.C, 1_000 * evse + 100 * minute)
        await station.take_samples()
        if minute == 5:
            await station.take_aligned(at_minute(5))


async def plug_in(site: Site, evses: list[int]) -> None:
    for evse in evses:
        apply(site, evse, 0, VehicleState.A, 1_000 * evse)
        apply(site, evse, 1, VehicleState.B, 1_000 * evse)


def values(payloads: list[dict[str, Any]]) -> list[tuple[str, str, str, float]]:
    """(transactionId, timestamp, context, energy) of every sampled value of ``payloads``."""
    return [
        (p["transactionInfo"]["transactionId"], v["timestamp"], s["context"], s["value"])
        for p in payloads
        for v in p.get("meterValue", [])
        for s in v["sampledValue"]
        if s.get("measurand") == "Energy.Active.Import.Register"
    ]


def queued_payloads(outbox: Outbox) -> list[dict[str, Any]]:
    """The TransactionEvents waiting in ``outbox``, as the CSMS would see them (camelCase)."""
    records = [outbox.store.record(info.seq) for info in outbox.store.index()]
    return [snake_to_camel_case(r.payload) for r in records if r is not None and r.action == "TransactionEvent"]


def by_transaction(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    per: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        per.setdefault(event["transactionInfo"]["transactionId"], []).append(event)
    return per


def numbers_once(events: list[dict[str, Any]]) -> list[int]:
    """The seqNos in the order received, a resend of the one before counted once."""
    numbers: list[int] = []
    for event in events:
        if not numbers or event["seqNo"] != numbers[-1]:
            numbers.append(event["seqNo"])
    return numbers


async def test_an_outage_backlog_of_two_sessions_drains_in_fewer_requests(running: list) -> None:
    port = free_port()
    site = make_site()
    station = station_for(site, port, memory_outbox())
    running.append(asyncio.create_task(station.run()))  # no CSMS yet: everything happens offline
    await plug_in(site, [1, 2])
    await charge(site, station, [1, 2], range(2, 8))
    for evse in (1, 2):
        apply(site, evse, 8, VehicleState.A, 1_000 * evse + 800)
    assert site.settle()
    queued = queued_payloads(station.outbox)
    assert len(queued) == 22  # per EVSE: Started, 2 chargingState changes, 6 periodic + 1 aligned, Ended
    csms = DemoCsms201("127.0.0.1", port)
    await csms.start()
    try:
        await asyncio.wait_for(station.outbox.wait_empty(), 15)
        received = csms.messages("TransactionEvent")
        assert len(received) == 10  # per EVSE: the seven samples in one Updated
        assert sorted(values(received)) == sorted(values(queued))  # each value once, its time and context
        assert len(set(values(received))) == len(values(received))
        contexts = {context for _, _, context, _ in values(received)}
        assert contexts == {"Transaction.Begin", "Sample.Periodic", "Sample.Clock", "Transaction.End"}
        assert all(p["offline"] for p in received)
        transactions = by_transaction(received)
        assert len(transactions) == 2
        for events in transactions.values():
            assert [p["seqNo"] for p in events] == list(range(len(events)))
            kinds = [p["eventType"] for p in events]
            assert kinds[0] == "Started" and kinds[-1] == "Ended" and set(kinds[1:-1]) == {"Updated"}
            batch = next(p for p in events if len(p.get("meterValue", [])) > 1)
            assert len(batch["meterValue"]) == 7
            assert batch["timestamp"] == batch["meterValue"][0]["timestamp"]  # the head's
            assert batch["triggerReason"] == "MeterValuePeriodic"
            assert batch["transactionInfo"]["chargingState"] == "Charging"
    finally:
        await csms.stop()


async def offline_backlog_then_a_lost_batch(site: Site, station: ChargingStation201, csms: LosingCsms) -> None:
    """EVSE 1 charges offline for 3 minutes; the CSMS comes, the batch's answer is lost with the link,
    and two more samples are queued (offline) behind it before the CSMS lets the station back in."""
    await plug_in(site, [1])
    await charge(site, station, [1], range(2, 5))
    await csms.start()
    await asyncio.wait_for(csms.dropped.wait(), 10)
    await until(site, lambda: not station.online())
    await charge(site, station, [1], range(6, 8))


def assert_resent_as_it_was(events: list[dict[str, Any]]) -> None:
    updated = [p for p in events if p.get("meterValue") and p["eventType"] == "Updated"]
    lost, again, rest = updated[0], updated[1], updated[2:]
    assert again == lost  # the same seqNo and the same content
    assert [v["timestamp"] for v in lost["meterValue"]] == [f"2026-11-29T12:0{m}:00.000Z" for m in (2, 3, 4)]
    assert [v["timestamp"] for p in rest for v in p["meterValue"]] == [f"2026-11-29T12:0{m}:00.000Z" for m in (6, 7)]
    assert rest[0]["seqNo"] == lost["seqNo"] + 1
    assert numbers_once(events) == list(range(len(numbers_once(events))))


async def test_a_batch_whose_answer_was_lost_goes_again_as_it_was(running: list) -> None:
    port = free_port()
    site = make_site()
    station = station_for(site, port, memory_outbox())
    running.append(asyncio.create_task(station.run()))
    csms = LosingCsms(port)
    try:
        await offline_backlog_then_a_lost_batch(site, station, csms)
        apply(site, 1, 8, VehicleState.A, 1_800)
        csms.back()
        await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Ended", timeout=10)
        assert_resent_as_it_was(csms.messages("TransactionEvent"))
    finally:
        await csms.stop()


async def test_a_batch_whose_answer_was_lost_goes_again_as_it_was_after_a_kill(tmp_path: Path) -> None:
    port = free_port()
    settings = tmp_path / "settings.json"

    def outbox() -> Outbox:
        return Outbox(SegmentedOutboxStore(tmp_path / "outbox"))

    site = make_site(settings)
    first = station_for(site, port, outbox())
    task = asyncio.create_task(first.run())
    csms = LosingCsms(port)
    tasks: list[asyncio.Task[None]] = []
    try:
        await offline_backlog_then_a_lost_batch(site, first, csms)
        assert site.settle()
        task.cancel()  # killed with the batch unanswered and more queued behind it
        await asyncio.gather(task, return_exceptions=True)
        JsonSettingsStore(settings).save(CLEAN_SHUTDOWN, False)
        second = station_for(make_site(settings), port, outbox())  # the stores as the kill left them
        tasks.append(asyncio.create_task(second.run()))
        csms.back()
        ended = await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Ended", timeout=10)
        assert ended["transactionInfo"]["stoppedReason"] == "PowerLoss"  # left open by the kill
        assert_resent_as_it_was(csms.messages("TransactionEvent"))
    finally:
        for each in tasks:
            each.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await csms.stop()
