"""The MQTT wire schema (docs/mqtt.md) as pure functions: topics, payloads, change detection."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest

from adapters.mqtt.payloads import Topics, encode, fault_event, same_state, topic_segment
from gateway.domain.battery import SocSource, SocValue
from gateway.domain.model import (
    Connector,
    ConnectorStatus,
    DeviceFailed,
    Fault,
    FaultKind,
    Meter,
    Reading,
    SessionInfo,
    VehicleState,
)
from gateway.domain.phase_limits import ConnectorShare, PhaseLimit, Reason, SiteLoad
from gateway.services.site import Site
from gateway.services.state_payloads import (
    READING_FIELDS,
    SOC_SOURCE,
    connector_state,
    device_state,
    load_state,
    meter_state,
    upstream_state,
)

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def charging_connector() -> Connector:
    return Connector(
        connector_id=2,
        device="wallbox-a",
        socket=1,
        vehicle_state=VehicleState.C,
        device_faults=(Fault(FaultKind.OVER_TEMPERATURE, vendor_code="E42", info="derating"),),
        faults=(Fault(FaultKind.OVER_TEMPERATURE, vendor_code="E42", info="derating"),),
        device_online=True,
        reading=Reading(
            measured_at=T0,
            energy_wh=123_456,
            session_energy_wh=7_890,
            power_w=11_040.0,
            current_a=(16.0, 16.0, 16.1),
            voltage_v=(230.1, 229.8, 231.0),
            frequency_hz=50.0,
            temperature_c=41.5,
            soc_percent=None,
            offered_current_a=16.0,
        ),
        status=ConnectorStatus.FAULTED,
        status_since=T0 - timedelta(minutes=5),
    )


def test_topics_under_prefix() -> None:
    topics = Topics("ocpp-gateway/demo-site")
    assert topics.availability == "ocpp-gateway/demo-site/availability"
    assert topics.connector(1) == "ocpp-gateway/demo-site/connector/1/state"
    assert topics.meter("grid") == "ocpp-gateway/demo-site/meter/grid/state"
    assert topics.upstream == "ocpp-gateway/demo-site/upstream/state"
    assert topics.device("wb 1/left") == "ocpp-gateway/demo-site/device/wb_1_left/state"


@pytest.mark.parametrize("prefix", ["", "site/", "site/+", "site/#", "a/+/b"])
def test_topics_reject_bad_prefix(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        Topics(prefix)


@pytest.mark.parametrize(
    ("name", "segment"), [("grid", "grid"), ("a/b", "a_b"), ("x+#y", "x_y"), ("two  words", "two_words"), ("", "_")]
)
def test_topic_segment_is_one_safe_level(name: str, segment: str) -> None:
    assert topic_segment(name) == segment


def test_connector_payload_carries_all_fields_with_units() -> None:
    connector = charging_connector()
    connector.session = SessionInfo("c2-1", "RFID-00042137", 115_566, T0 - timedelta(hours=1), transaction_id=77)
    connector.session_active = True
    connector.current_ceiling_a = 16.0
    share = ConnectorShare(13.5, Reason.FUSE, priority=1, drawn_a=13.2)
    payload = connector_state(connector, billing_wh=123_456, share=share)
    assert payload == {
        "connector_id": 2,
        "device": "wallbox-a",
        "status": "faulted",
        "status_since": "2025-03-01T11:55:00.123Z",
        "vehicle_state": "C",
        "device_online": True,
        "faults": [{"kind": "over_temperature", "vendor_code": "E42", "info": "derating"}],
        "energy_wh": 123_456,
        "energy_export_wh": None,
        "power_w": 11_040.0,
        "current_a": [16.0, 16.0, 16.1],
        "voltage_v": [230.1, 229.8, 231.0],
        "frequency_hz": 50.0,
        "temperature_c": 41.5,
        "soc_percent": None,
        "offered_current_a": 16.0,
        "measured_at": "2025-03-01T12:00:00.123Z",
        "soc_source": None,
        "soc_measured_at": None,
        "soc_estimated": False,
        "soc_target_percent": None,
        "session_active": True,
        "ocpp_status": "Faulted",
        "ocpp_error_code": "HighTemperature",
        "transaction_id": 77,
        "id_tag": "****2137",
        "session_started_at": "2025-03-01T11:00:00.123Z",
        "session_energy_wh": 7_890,  # 123,456 now - 115,566 at meterStart
        "current_limit_a": 16.0,
        "available": True,
        "share_a": 13.5,
        "share_reason": "fuse",
    }


def test_connector_before_first_poll_has_nulls_not_zeros() -> None:
    payload = connector_state(Connector(connector_id=1, device="wb", status_since=T0))
    assert payload["status"] == "unavailable"
    assert payload["device_online"] is None
    assert payload["vehicle_state"] is None
    assert payload["faults"] == []
    assert payload["energy_wh"] is None
    assert payload["current_a"] == []
    assert payload["measured_at"] is None


def test_connector_offline_device_shows_communication_fault() -> None:
    site = Site([Connector(connector_id=1, device="wb", status_since=T0)], [])
    site.apply(DeviceFailed("wb", "timeout", T0))
    payload = connector_state(site.connectors[1])
    assert payload["status"] == "faulted"
    assert payload["faults"] == [
        {"kind": "communication_lost", "vendor_code": "CommLost", "info": "the gateway gets no answer"}
    ]


def test_meter_payload() -> None:
    meter = Meter(
        name="grid",
        connector_id=0,
        device_online=True,
        reading=Reading(measured_at=T0, energy_wh=1_000, energy_export_wh=20, power_w=-350.5, current_a=(1.5,)),
    )
    payload = meter_state(meter)
    assert payload["meter"] == "grid"
    assert payload["connector_id"] == 0
    assert payload["device_online"] is True
    assert payload["energy_wh"] == 1_000
    assert payload["energy_export_wh"] == 20
    assert payload["power_w"] == -350.5
    assert payload["current_a"] == [1.5]
    assert payload["voltage_v"] == []
    assert payload["measured_at"] == "2025-03-01T12:00:00.123Z"


def test_every_reading_field_is_published() -> None:
    """A new Reading field must be added to the wire schema (and docs/mqtt.md) on purpose."""
    domain_fields = {f.name for f in dataclasses.fields(Reading)} - {"measured_at"}
    assert set(READING_FIELDS) == domain_fields


def test_non_finite_numbers_become_null() -> None:
    meter = Meter(name="m", reading=Reading(measured_at=T0, power_w=float("nan"), voltage_v=(float("inf"), 230.0)))
    payload = meter_state(meter)
    assert payload["power_w"] is None
    assert payload["voltage_v"] == [None, 230.0]
    json.loads(encode(payload))  # strict JSON, no NaN token


def test_upstream_and_device_payloads() -> None:
    assert upstream_state(True, "Accepted", T0) == {
        "connected": True,
        "registration": "Accepted",
        "changed_at": "2025-03-01T12:00:00.123Z",
        "reason": None,
    }
    assert upstream_state(False, "none", None)["changed_at"] is None
    assert upstream_state(False, "none", None, "CSMS refused the connection: HTTP 401")["reason"] == (
        "CSMS refused the connection: HTTP 401"
    )
    assert device_state("wb", False, "timeout", T0) == {
        "device": "wb",
        "online": False,
        "reason": "timeout",
        "changed_at": "2025-03-01T12:00:00.123Z",
    }
    assert device_state("wb", True, "", T0)["reason"] is None
    assert device_state("wb", None, None, None) == {"device": "wb", "online": None, "reason": None, "changed_at": None}


def test_encode_is_compact_utf8_json() -> None:
    assert encode({"device": "Zähler", "online": True}) == '{"device":"Zähler","online":true}'.encode()


def test_same_state_ignores_only_measured_at() -> None:
    first = connector_state(charging_connector())
    later_poll = dict(first, measured_at="2025-03-01T12:00:01.000Z")
    assert same_state(first, later_poll)
    assert not same_state(first, dict(later_poll, power_w=11_000.0))
    assert not same_state(None, first)


def test_fault_events_name_their_connector_or_meter() -> None:
    hot = Fault(FaultKind.OVER_TEMPERATURE, vendor_code="13", info="derating")
    assert fault_event(3, hot, raised=True, at=T0) == {
        "connector_id": 3,
        "event": "raised",
        "kind": "over_temperature",
        "vendor_code": "13",
        "info": "derating",
        "at": "2025-03-01T12:00:00.123Z",
    }
    cleared = fault_event(None, hot, raised=False, at=T0, meter="grid")
    assert cleared["meter"] == "grid" and cleared["event"] == "cleared" and "connector_id" not in cleared
    assert Topics("p").meter_fault("grid") == "p/meter/grid/fault"


def test_soc_carries_its_source_and_measurement_time() -> None:
    connector = Connector(
        connector_id=1,
        device="wb",
        reading=Reading(measured_at=T0, soc_percent=64.0),
        soc=SocValue(64.0, SocSource.CHARGER, T0),
    )
    payload = connector_state(connector)
    assert (payload["soc_percent"], payload["soc_source"], payload["soc_estimated"]) == (64.0, "charger", False)
    assert payload["soc_measured_at"] == "2025-03-01T12:00:00.123Z"


def test_soc_shows_the_best_value_known_its_source_and_the_target() -> None:
    later = T0 + timedelta(minutes=3)
    connector = Connector(
        connector_id=1,
        device="wb",
        reading=Reading(measured_at=later, soc_percent=None),
        soc=SocValue(71.5, SocSource.ESTIMATE, later),
        soc_target_percent=80.0,
    )
    payload = connector_state(connector)
    assert (payload["soc_percent"], payload["soc_source"], payload["soc_estimated"]) == (71.5, "estimate", True)
    assert payload["soc_measured_at"] == "2025-03-01T12:03:00.123Z"
    assert payload["soc_target_percent"] == 80.0
    connector.soc = SocValue(40.0, SocSource.REPORT, T0)
    assert connector_state(connector)["soc_source"] == "mqtt"
    assert set(SOC_SOURCE) == set(SocSource)


def sharing_decision() -> SiteLoad:
    """Two connectors under a 40 A fuse: L1 is full (the building draws there), L3 bound by the CSMS."""
    return SiteLoad(
        decided_at=T0,
        limits=(PhaseLimit(12.0, Reason.FUSE), PhaseLimit(20.0, Reason.FUSE), PhaseLimit(16.0, Reason.CSMS)),
        grid_a=(27.04, 18.0, 16.5),
        offered_a=(12.0, 12.0, 12.0),
        shares={
            2: ConnectorShare(0.0, Reason.ROTATION, priority=0, drawn_a=None),
            1: ConnectorShare(12.0, Reason.FUSE, priority=1, drawn_a=11.8),
        },
        fuse_a=40.0,
        site_limit_a=None,
    )


def test_the_load_section_names_each_limit_and_why_and_every_share() -> None:
    assert load_state(sharing_decision(), site_limit_a=25.0) == {
        "decided_at": "2025-03-01T12:00:00.123Z",
        "limit_a": 12.0,
        "limit_reason": "fuse",
        "phase_limits_a": [12.0, 20.0, 16.0],
        "phase_limit_reasons": ["fuse", "fuse", "csms"],
        "grid_a": [27.04, 18.0, 16.5],
        "offered_a": [12.0, 12.0, 12.0],
        "fuse_a": 40.0,
        "site_limit_a": 25.0,  # the limit set now, even before a decision took it in
        "shares": [  # by connector
            {"connector_id": 1, "current_a": 12.0, "reason": "fuse", "priority": 1, "drawn_a": 11.8},
            {"connector_id": 2, "current_a": 0.0, "reason": "rotation", "priority": 0, "drawn_a": None},
        ],
    }
    json.dumps(load_state(sharing_decision(), None), allow_nan=False)


def test_before_any_decision_and_with_nothing_shared_the_load_section_is_null_not_zero() -> None:
    before = load_state(None, site_limit_a=None)
    assert before["decided_at"] is None and before["shares"] == []
    assert all(before[key] is None for key in ("limit_a", "limit_reason", "phase_limits_a", "grid_a", "offered_a"))
    unshared = SiteLoad(T0, None, None, (16.0, 16.0, 16.0), {1: ConnectorShare(16.0, Reason.OWN_LIMIT)})
    payload = load_state(unshared, site_limit_a=None)
    assert (payload["limit_a"], payload["limit_reason"], payload["phase_limits_a"]) == (None, None, None)
    assert payload["offered_a"] == [16.0, 16.0, 16.0]
    assert payload["shares"][0]["reason"] == "own_limit"


def test_a_connector_in_no_session_has_no_share() -> None:
    payload = connector_state(charging_connector())
    assert (payload["share_a"], payload["share_reason"]) == (None, None)
