"""The Site: snapshots in, derived status and events out (no sockets)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.domain.events import (
    ConnectorReadingChanged,
    ConnectorStatusChanged,
    DeviceHealthChanged,
    FaultCleared,
    FaultRaised,
    MeterReadingChanged,
    UpstreamStateChanged,
)
from gateway.domain.metering import REGISTER_BACKWARDS
from gateway.domain.model import (
    ChargerSnapshot,
    Connector,
    ConnectorStatus,
    DeviceFailed,
    Fault,
    FaultKind,
    Meter,
    MeterSnapshot,
    Reading,
    VehicleState,
)
from gateway.domain.status import COMM_LOST
from gateway.domain.transactions import AuthPolicy, EnableCharging, StartTransaction, StopReason, StopTransaction
from gateway.services.event_stream import EventStream
from gateway.services.sessions import ConnectorPolicy
from gateway.services.site import Site

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class FixedClock:
    def __init__(self) -> None:
        self.moment = T0

    def now(self) -> datetime:
        return self.moment


def drain(stream: EventStream) -> list[object]:
    events = []
    while (event := stream.get_nowait()) is not None:
        events.append(event)
    return events


REMOTE = ConnectorPolicy(AuthPolicy.REMOTE)


def make() -> tuple[Site, EventStream]:
    """Three connectors whose sessions wait for a remote start, so plugging in alone starts nothing."""
    site = Site(
        [Connector(1, "a"), Connector(2, "b", socket=1), Connector(3, "b", socket=2)],
        [Meter("m", 0)],
        policies={1: REMOTE, 2: REMOTE, 3: REMOTE},
    )
    return site, site.subscribe()


def snap(
    device: str, state: VehicleState | None, socket: int = 1, at: datetime = T0, **values: object
) -> ChargerSnapshot:
    return ChargerSnapshot(device, socket, Reading(at, **values), vehicle_state=state)  # type: ignore[arg-type]


def test_connectors_start_unavailable_until_first_poll() -> None:
    site, _ = make()
    assert {c.status for c in site.connectors.values()} == {ConnectorStatus.UNAVAILABLE}
    assert site.connectors[1].faults == ()


def test_first_poll_makes_device_online_and_sets_status() -> None:
    site, events = make()
    site.apply(snap("a", VehicleState.A, energy_wh=10))
    got = drain(events)
    assert DeviceHealthChanged("a", True, "", T0) in got
    assert ConnectorStatusChanged(1, ConnectorStatus.AVAILABLE, (), T0) in got
    assert any(isinstance(e, ConnectorReadingChanged) and e.reading.energy_wh == 10 for e in got)


def test_vehicle_states_map_to_status() -> None:
    site, _ = make()
    expected = {
        VehicleState.A: ConnectorStatus.AVAILABLE,
        VehicleState.B: ConnectorStatus.OCCUPIED,
        VehicleState.C: ConnectorStatus.CHARGING,
        VehicleState.D: ConnectorStatus.CHARGING,
        VehicleState.E: ConnectorStatus.FAULTED,
        VehicleState.F: ConnectorStatus.FAULTED,
    }
    for state, status in expected.items():
        site.apply(snap("a", state))
        assert site.connectors[1].status is status, state


def test_same_values_emit_nothing_new() -> None:
    site, events = make()
    site.apply(snap("a", VehicleState.B, energy_wh=5, power_w=0.0))
    drain(events)
    site.apply(snap("a", VehicleState.B, at=T0 + timedelta(seconds=1), energy_wh=5, power_w=0.0))
    assert drain(events) == []
    site.apply(snap("a", VehicleState.B, at=T0 + timedelta(seconds=2), energy_wh=6, power_w=0.0))
    assert [type(e) for e in drain(events)] == [ConnectorReadingChanged]


def test_device_faults_fault_the_connector_and_clear_again() -> None:
    site, events = make()
    site.apply(snap("a", VehicleState.C))
    drain(events)
    hot = Fault(FaultKind.OVER_TEMPERATURE, vendor_code="13")
    later = T0 + timedelta(seconds=5)
    site.apply(ChargerSnapshot("a", 1, Reading(later), VehicleState.C, faults=(hot,)))
    assert [e for e in drain(events) if not isinstance(e, ConnectorReadingChanged)] == [
        FaultRaised(1, hot, later),
        ConnectorStatusChanged(1, ConnectorStatus.FAULTED, (hot,), later),
    ]
    cleared_at = T0 + timedelta(seconds=9)
    site.apply(snap("a", VehicleState.C, at=cleared_at))
    assert [e for e in drain(events) if not isinstance(e, ConnectorReadingChanged)] == [
        FaultCleared(1, hot, cleared_at),
        ConnectorStatusChanged(1, ConnectorStatus.CHARGING, (), cleared_at),
    ]


def test_device_failure_faults_every_socket_once_and_recovers() -> None:
    site, events = make()
    site.apply(snap("b", VehicleState.A, socket=1))
    site.apply(snap("b", VehicleState.B, socket=2))
    drain(events)
    site.apply(DeviceFailed("b", "timeout after 2 s", T0))
    site.apply(DeviceFailed("b", "timeout after 2 s", T0))  # still down: no second round of events
    got = drain(events)
    assert [e for e in got if isinstance(e, DeviceHealthChanged)] == [
        DeviceHealthChanged("b", False, "timeout after 2 s", T0)
    ]
    changed = [e for e in got if isinstance(e, ConnectorStatusChanged)]
    assert {e.connector_id for e in changed} == {2, 3}
    assert all(e.status is ConnectorStatus.FAULTED for e in changed)
    assert all(e.faults[0].kind is FaultKind.COMMUNICATION_LOST for e in changed)
    site.apply(snap("b", VehicleState.A, socket=1))
    assert site.connectors[2].status is ConnectorStatus.AVAILABLE
    assert site.device_online("b") is True


def test_meter_readings_are_published_with_their_connector() -> None:
    site, events = make()
    site.apply(MeterSnapshot("m", Reading(T0, energy_wh=1_000_000)))
    got = [e for e in drain(events) if isinstance(e, MeterReadingChanged)]
    assert got == [MeterReadingChanged("m", 0, Reading(T0, energy_wh=1_000_000))]
    assert site.meters["m"].device_online is True


def test_unknown_devices_and_sockets_are_ignored() -> None:
    site, events = make()
    site.apply(snap("nobody", VehicleState.C))
    site.apply(snap("a", VehicleState.C, socket=9))
    got = drain(events)
    assert [e for e in got if isinstance(e, ConnectorReadingChanged | ConnectorStatusChanged)] == []
    assert site.connectors[1].vehicle_state is None


def test_upstream_state_uses_the_injected_clock_and_deduplicates() -> None:
    clock = FixedClock()
    site = Site([], [], clock=clock)
    events = site.subscribe()
    clock.moment = T0 + timedelta(hours=1)
    site.set_upstream(True, "Accepted")
    site.set_upstream(True, "Accepted")
    assert drain(events) == [UpstreamStateChanged(True, "Accepted", T0 + timedelta(hours=1))]


def test_unsubscribed_streams_get_nothing() -> None:
    site, events = make()
    site.unsubscribe(events)
    site.apply(snap("a", VehicleState.A))
    assert drain(events) == []


def test_device_counts_as_lost_only_after_n_consecutive_failures() -> None:
    site = Site([Connector(1, "a")], [], offline_after_failures={"a": 3})
    events = site.subscribe()
    site.apply(snap("a", VehicleState.A))
    drain(events)
    site.apply(DeviceFailed("a", "timeout", T0))
    site.apply(DeviceFailed("a", "timeout", T0))
    assert site.connectors[1].status is ConnectorStatus.AVAILABLE  # two misses on a noisy bus: no alarm
    site.apply(snap("a", VehicleState.A))  # an answer resets the count
    site.apply(DeviceFailed("a", "timeout", T0))
    site.apply(DeviceFailed("a", "timeout", T0))
    assert drain(events) == []
    site.apply(DeviceFailed("a", "timeout", T0 + timedelta(seconds=3)))
    got = drain(events)
    assert FaultRaised(1, COMM_LOST, T0 + timedelta(seconds=3)) in got
    assert site.connectors[1].status is ConnectorStatus.FAULTED
    site.apply(snap("a", VehicleState.A, at=T0 + timedelta(seconds=4)))
    got = drain(events)
    assert FaultCleared(1, COMM_LOST, T0 + timedelta(seconds=4)) in got
    assert site.connectors[1].status is ConnectorStatus.AVAILABLE


def test_a_pause_in_a_session_is_suspended_not_preparing() -> None:
    site, _ = make()
    site.apply(snap("a", VehicleState.B))
    assert site.connectors[1].status is ConnectorStatus.OCCUPIED
    assert site.commands.remote_start(1, "APP")
    site.apply(snap("a", VehicleState.C))
    site.apply(snap("a", VehicleState.B, offered_current_a=16.0))
    assert site.connectors[1].status is ConnectorStatus.SUSPENDED_EV  # the car stopped drawing
    site.apply(snap("a", VehicleState.B, offered_current_a=0.0))
    assert site.connectors[1].status is ConnectorStatus.SUSPENDED_EVSE  # the charger stopped offering
    site.apply(snap("a", VehicleState.A))
    site.apply(snap("a", VehicleState.B))
    assert site.connectors[1].status is ConnectorStatus.OCCUPIED  # a new car, a new session


def test_ev_communication_fault_suspends_without_faulting() -> None:
    site, events = make()
    site.apply(snap("a", VehicleState.B))
    drain(events)
    diode = Fault(FaultKind.EV_COMMUNICATION, vendor_code="13", info="CP diode missing")
    site.apply(ChargerSnapshot("a", 1, Reading(T0), VehicleState.B, faults=(diode,)))
    assert site.connectors[1].status is ConnectorStatus.SUSPENDED_EVSE
    assert FaultRaised(1, diode, T0) in drain(events)


def test_meter_faults_are_events_and_part_of_the_meter() -> None:
    site, events = make()
    site.apply(MeterSnapshot("m", Reading(T0, energy_wh=5)))
    drain(events)
    over = Fault(FaultKind.OVER_CURRENT, vendor_code="evt-5")
    site.apply(MeterSnapshot("m", Reading(T0, energy_wh=5), faults=(over,)))
    got = drain(events)
    assert FaultRaised(None, over, T0, meter="m") in got
    assert any(isinstance(e, MeterReadingChanged) for e in got)  # the retained meter state shows it
    assert site.meters["m"].faults == (over,)
    site.apply(MeterSnapshot("m", Reading(T0, energy_wh=5)))
    assert FaultCleared(None, over, T0, meter="m") in drain(events)


def test_free_session_follows_the_car_with_the_billing_register() -> None:
    site = Site([Connector(1, "a")], [], policies={1: ConnectorPolicy(AuthPolicy.FREE, "CARPORT")})
    events = site.subscribe()
    site.apply(snap("a", VehicleState.A, energy_wh=1_000))
    site.apply(snap("a", VehicleState.B, at=T0 + timedelta(minutes=1), energy_wh=1_000))
    got = drain(events)
    start = next(e for e in got if isinstance(e, StartTransaction))
    assert (start.connector_id, start.id_tag, start.meter_start_wh) == (1, "CARPORT", 1_000)
    assert EnableCharging(1, True) in got
    assert site.connectors[1].status is ConnectorStatus.SUSPENDED_EV  # in a session, the car not drawing yet
    site.apply(snap("a", VehicleState.C, at=T0 + timedelta(minutes=2), energy_wh=1_500))
    assert site.connectors[1].status is ConnectorStatus.CHARGING
    site.apply(snap("a", VehicleState.A, at=T0 + timedelta(minutes=40), energy_wh=8_200))
    stop = next(e for e in drain(events) if isinstance(e, StopTransaction))
    assert (stop.local_ref, stop.meter_stop_wh, stop.reason) == (start.local_ref, 8_200, StopReason.EV_DISCONNECTED)
    assert site.connectors[1].status is ConnectorStatus.AVAILABLE


def test_an_assigned_meter_is_the_billing_register_and_a_remote_stop_leaves_finishing() -> None:
    site = Site([Connector(1, "a")], [Meter("m", 1)], policies={1: REMOTE})
    events = site.subscribe()
    site.apply(snap("a", VehicleState.B, session_energy_wh=5))
    assert EnableCharging(1, False) in drain(events)  # remote policy: no energy before a start
    site.apply(MeterSnapshot("m", Reading(T0, energy_wh=50_000)))
    assert site.commands.remote_start(1, "APP-7")
    start = next(e for e in drain(events) if isinstance(e, StartTransaction))
    assert start.meter_start_wh == 50_000  # the meter's register, never the session counter
    assert not site.commands.remote_start(1, "APP-8")  # one session at a time
    site.apply(MeterSnapshot("m", Reading(T0 + timedelta(hours=1), energy_wh=57_000)))
    assert site.commands.remote_stop(start.local_ref)
    stop = next(e for e in drain(events) if isinstance(e, StopTransaction))
    assert (stop.meter_stop_wh, stop.reason) == (57_000, StopReason.REMOTE)
    assert site.connectors[1].status is ConnectorStatus.FINISHING
    site.apply(snap("a", VehicleState.A))
    assert site.connectors[1].status is ConnectorStatus.AVAILABLE


def test_a_register_that_goes_backwards_is_a_meter_fault_and_never_a_billing_value() -> None:
    site, events = make()
    site.apply(MeterSnapshot("m", Reading(T0, energy_wh=10_000)))
    site.apply(snap("a", VehicleState.A, energy_wh=500))
    drain(events)
    site.apply(MeterSnapshot("m", Reading(T0, energy_wh=9_000)))  # swapped meter, rollover or garbage
    assert site.meters["m"].reading is not None and site.meters["m"].reading.energy_wh is None
    assert FaultRaised(None, REGISTER_BACKWARDS, T0, meter="m") in drain(events)
    site.apply(snap("a", VehicleState.A, energy_wh=400))
    assert site.connectors[1].status is ConnectorStatus.FAULTED
    assert site.connectors[1].faults[0].kind is FaultKind.POWER_METER
    assert site.billing_energy_wh(1) == 500  # the last good value, never the one that went backwards
    site.apply(snap("a", VehicleState.A, energy_wh=501))  # counting on from the last good value
    assert site.connectors[1].status is ConnectorStatus.AVAILABLE
    assert site.billing_energy_wh(1) == 501
    site.apply(MeterSnapshot("m", Reading(T0, energy_wh=10_001)))
    assert FaultCleared(None, REGISTER_BACKWARDS, T0, meter="m") in drain(events)


def test_billing_uses_the_last_good_register_while_the_meter_is_away() -> None:
    site = Site([Connector(1, "a")], [Meter("m", 1)], policies={1: REMOTE})
    site.apply(MeterSnapshot("m", Reading(T0, energy_wh=70_000)))
    site.apply(DeviceFailed("m", "timeout", T0))
    assert site.billing_energy_wh(1) == 70_000  # never 0: that would bill the whole lifetime counter
