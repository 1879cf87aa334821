"""TxStartPoint / TxStopPoint without a link: a real Site, the session feed, the ledger and an
outbox in memory; every queued TransactionEvent checked against the 2.0.1 schema."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.ocpp201_upstream.ledger import Ledger201
from adapters.ocpp201_upstream.session_effects import SessionFeed
from adapters.ocpp201_upstream.transaction_events import call_problem
from adapters.ocpp201_upstream.tx_points import START_POINTS, STOP_POINTS, TxPoints, point_list
from adapters.storage.settings import JsonSettingsStore
from gateway.domain.events import SessionStoppedAtRestart, VehicleConnectionChanged
from gateway.domain.model import ChargerSnapshot, Connector, Reading, VehicleState
from gateway.domain.transactions import AuthPolicy, AuthStatus, StopReason
from gateway.services.outbox import Outbox
from gateway.services.sessions import ConnectorPolicy
from gateway.services.site import Site
from tests.fixtures.memory_outbox import memory_outbox

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
CARD = "CARD-0001"


@pytest.mark.parametrize(
    ("value", "start", "stop"),
    [
        ("EVConnected", None, None),
        ("EVConnected,Authorized", None, None),
        ("Authorized,EVConnected,PowerPathClosed", None, None),
        ("EnergyTransfer", None, "UnsupportedParam"),
        ("ParkingBayOccupancy", "UnsupportedParam", "UnsupportedParam"),
        ("EVConnected,DataSigned", "UnsupportedParam", "UnsupportedParam"),
        ("EVConnected,EVConnected", "InvalidValue", "InvalidValue"),
        ("EVConnected,", "InvalidValue", "InvalidValue"),
        ("evconnected", "InvalidValue", "InvalidValue"),  # enumeration values are spelled as 2.0.1 does
        ("", "InvalidValue", "InvalidValue"),
    ],
)
def test_the_point_lists_a_csms_may_set(value: str, start: str | None, stop: str | None) -> None:
    assert point_list(START_POINTS)(value) == start
    assert point_list(STOP_POINTS)(value) == stop


class Harness:
    """A one-connector site (cards, or free charging) and the station's transaction feed, fed in order."""

    def __init__(self, start: str, stop: str = "EVConnected,Authorized", *, free: bool = False, store: Any = None):
        policy = ConnectorPolicy(AuthPolicy.FREE, "CARPORT") if free else ConnectorPolicy(AuthPolicy.LOCAL_LIST)
        self.site = Site([Connector(1, "left")], [], policies={1: policy})
        if store is not None:
            self.site.settings = store
        self.events = self.site.subscribe()
        self.outbox: Outbox = memory_outbox()
        self.ledger = Ledger201(self.site.settings)
        self.feed = SessionFeed(self.site, self.ledger, self.outbox, lambda: True)
        self.points = (frozenset(start.split(",")), frozenset(stop.split(",")))
        self.tx = TxPoints(self.site, self.feed, lambda: self.points)
        self.poll(0, VehicleState.A, 1_000)

    def poll(self, minute: int, state: VehicleState, energy_wh: int, card: str | None = None) -> None:
        reading = Reading(T0 + timedelta(minutes=minute), energy_wh=energy_wh)
        self.site.apply(ChargerSnapshot("left", 1, reading, vehicle_state=state, id_tag=card))
        self.drain()

    def card(self, minute: int, energy_wh: int, state: VehicleState = VehicleState.B) -> None:
        """A card shown and accepted (as the local list or the CSMS would answer)."""
        self.poll(minute, state, energy_wh, CARD)
        self.site.authorization_result(1, CARD, AuthStatus.ACCEPTED)
        self.drain()

    def drain(self) -> None:
        while (event := self.events.get_nowait()) is not None:
            if hasattr(event, "connector_id") and type(event).__name__ == "Authorize":
                self.feed.card_tags[event.connector_id] = event.id_tag  # as the station notes a card
            self.tx.take(event)

    def sent(self) -> list[dict[str, Any]]:
        records = [self.outbox.store.record(info.seq) for info in self.outbox.store.index()]
        return [r.payload for r in records if r is not None and r.action == "TransactionEvent"]

    def steps(self) -> list[tuple[str, str]]:
        return [
            (p["event_type"], p["trigger_reason"]) for p in self.sent() if p["trigger_reason"] != "ChargingStateChanged"
        ]

    async def all_valid(self) -> bool:
        records = [self.outbox.store.record(info.seq) for info in self.outbox.store.index()]
        return all([(await call_problem(r, n))[1] is None for n, r in enumerate(records) if r is not None])


def registers(payload: dict[str, Any]) -> list[int]:
    return [s["value"] for v in payload.get("meter_value", []) for s in v["sampled_value"]]


async def test_the_default_is_the_domains_session() -> None:
    h = Harness("PowerPathClosed")
    h.poll(1, VehicleState.B, 1_000)
    assert h.sent() == []  # plugged: no transaction yet
    h.card(2, 1_000)
    h.poll(3, VehicleState.A, 1_400)
    assert h.steps() == [("Started", "Authorized"), ("Ended", "EVCommunicationLost")]
    refs = {p["transaction_info"]["transaction_id"] for p in h.sent()}
    assert refs == {h.ledger.sessions[next(iter(h.ledger.sessions))].local_ref}
    assert await h.all_valid()


async def test_ev_connected_starts_at_the_plug_in_with_its_register() -> None:
    h = Harness("EVConnected")
    h.poll(1, VehicleState.B, 1_005)
    started = h.sent()[0]
    assert (started["event_type"], started["trigger_reason"], registers(started)) == (
        "Started",
        "CablePluggedIn",
        [1_005],
    )
    assert "id_token" not in started
    session = h.ledger.sessions[started["transaction_info"]["transaction_id"]]
    assert session.window and session.domain_ref is None and h.ledger.running[1] == session.local_ref
    h.card(2, 1_005)
    updated = h.sent()[1]
    assert (updated["event_type"], updated["trigger_reason"]) == ("Updated", "Authorized")
    assert updated["id_token"] == {"id_token": CARD, "type": "ISO14443"}
    assert session.domain_ref == h.site.sessions.machines[1].transaction.local_ref  # type: ignore[union-attr]
    assert h.tx.domain_ref(session.local_ref) == session.domain_ref  # what a RequestStopTransaction stops
    h.poll(3, VehicleState.A, 1_900)
    ended = h.sent()[-1]
    assert (ended["event_type"], registers(ended)) == ("Ended", [1_900])
    assert ended["transaction_info"]["stopped_reason"] == "EVDisconnected"
    assert len({p["transaction_info"]["transaction_id"] for p in h.sent()}) == 1
    assert h.tx.windows == {} and 1 not in h.ledger.running
    assert await h.all_valid()


def test_no_transaction_at_a_plug_in_on_an_evse_out_of_service() -> None:
    h = Harness("EVConnected")
    h.site.sessions.out_of_service.add(1)  # ChangeAvailability Inoperative
    h.poll(1, VehicleState.B, 1_000)
    assert h.sent() == [] and h.tx.windows == {}


async def test_a_stop_point_without_ev_connected_ends_at_the_card_stop() -> None:
    h = Harness("EVConnected", "Authorized")
    h.poll(1, VehicleState.B, 1_000)
    h.card(2, 1_000)
    h.poll(3, VehicleState.C, 1_300)
    h.poll(4, VehicleState.C, 1_400, CARD)  # the card again
    assert h.steps()[-1] == ("Ended", "StopAuthorized")
    assert h.sent()[-1]["transaction_info"]["stopped_reason"] == "Local"


async def test_a_card_stop_under_stop_point_ev_connected_then_a_new_card_in_the_same_transaction() -> None:
    h = Harness("PowerPathClosed", "EVConnected")
    h.card(1, 1_000)
    h.poll(2, VehicleState.C, 1_300)
    h.poll(3, VehicleState.C, 1_400, CARD)  # the session ends; the transaction goes on
    h.poll(4, VehicleState.B, 1_400)
    assert h.steps() == [("Started", "Authorized"), ("Updated", "StopAuthorized")]
    assert not h.site.connectors[1].session_active
    h.card(5, 1_400)  # the same car, a card again: a new session inside the open transaction
    assert h.steps()[-1] == ("Updated", "Authorized")
    h.poll(6, VehicleState.A, 1_450)
    assert h.steps()[-1] == ("Ended", "EVCommunicationLost")
    assert len({p["transaction_info"]["transaction_id"] for p in h.sent()}) == 1
    assert await h.all_valid()


async def test_a_reset_ends_a_transaction_no_session_is_in() -> None:
    h = Harness("EVConnected")
    h.poll(1, VehicleState.B, 1_000)
    h.tx.end_without_session(StopReason.SOFT_RESET)
    ended = h.sent()[-1]
    assert (ended["event_type"], ended["transaction_info"]["stopped_reason"]) == ("Ended", "ImmediateReset")
    assert registers(ended) == [1_000] and h.tx.windows == {}


async def test_energy_transfer_begins_with_the_reading_that_charges() -> None:
    h = Harness("EnergyTransfer", free=True)
    h.poll(1, VehicleState.B, 1_000)
    assert h.sent() == []
    h.poll(2, VehicleState.C, 1_010)
    h.poll(3, VehicleState.C, 1_500)
    started = h.sent()[0]
    assert (started["trigger_reason"], started["timestamp"], registers(started)) == (
        "ChargingStateChanged",
        "2026-11-29T12:02:00.000Z",
        [1_010],
    )
    assert await h.all_valid()


def test_the_site_tells_a_plug_in_before_the_session_it_starts() -> None:
    site = Site([Connector(1, "left")], [], policies={1: ConnectorPolicy(AuthPolicy.FREE, "CARPORT")})
    events = site.subscribe()
    site.apply(ChargerSnapshot("left", 1, Reading(T0, energy_wh=7), vehicle_state=VehicleState.A))
    site.apply(
        ChargerSnapshot("left", 1, Reading(T0 + timedelta(minutes=1), energy_wh=8), vehicle_state=VehicleState.C)
    )
    seen = []
    while (event := events.get_nowait()) is not None:
        seen.append(type(event).__name__)
        if isinstance(event, VehicleConnectionChanged):
            assert (event.connected, event.energy_wh, event.at) == (True, 8, T0 + timedelta(minutes=1))
    assert seen.count("VehicleConnectionChanged") == 1  # not at the first poll of an empty connector
    assert seen.index("VehicleConnectionChanged") < seen.index("StartTransaction")


def test_a_window_open_at_a_kill_ends_power_loss_at_the_next_start(tmp_path: Path) -> None:
    store = JsonSettingsStore(tmp_path / "settings.json")
    first = Harness("EVConnected", store=store)
    first.poll(1, VehicleState.B, 1_000)
    ref = first.sent()[0]["transaction_info"]["transaction_id"]

    site = Site([Connector(1, "left")], [], policies={1: ConnectorPolicy(AuthPolicy.LOCAL_LIST)})
    site.settings = JsonSettingsStore(tmp_path / "settings.json")
    notices = site.subscribe()
    outbox = Outbox(first.outbox.store)  # the queue the kill left (its Started)
    feed = SessionFeed(site, Ledger201(site.settings), outbox, lambda: False)
    feed.stop_orphans(clean_shutdown=False)
    records = [outbox.store.record(info.seq) for info in outbox.store.index()]
    ended = records[-1].payload  # type: ignore[union-attr]
    assert (ended["event_type"], ended["transaction_info"]["transaction_id"]) == ("Ended", ref)
    assert ended["transaction_info"]["stopped_reason"] == "PowerLoss" and "id_token" not in ended
    assert registers(ended) == [1_000]
    told = []
    while (event := notices.get_nowait()) is not None:
        told.append(event)
    assert not any(isinstance(e, SessionStoppedAtRestart) for e in told)  # no domain session was in it
