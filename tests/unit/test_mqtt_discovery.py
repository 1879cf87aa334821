"""Home Assistant discovery configs, field by field against HA's documented requirements.

Every ``value_template`` is rendered with Jinja (as HA does, in a sandbox) against the payloads
the bridge really publishes for a Site with readings, so a template that HA could not render, or
that renders something other than the value, fails here rather than in somebody's dashboard.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from jinja2 import StrictUndefined, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from adapters.mqtt.commands import COMMANDS, SITE_COMMANDS, CommandHandler, command_topic
from adapters.mqtt.discovery import (
    COMMAND_ENTITIES,
    OCPP_ERROR_CODES,
    OCPP_STATUSES,
    Discovery,
    topic_id,
)
from adapters.mqtt.discovery_load import SITE_COMMAND_ENTITIES
from adapters.mqtt.ha_entities import QUANTITIES, entity_slug
from adapters.mqtt.payloads import Payload, Topics
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
from gateway.domain.phase_limits import ConnectorShare, PhaseLimit, Reason, SiteLoad
from gateway.domain.transactions import AuthPolicy
from gateway.services.ocpp_status import ERROR_CODE, STATUS
from gateway.services.session_tally import LastSession
from gateway.services.sessions import ConnectorPolicy
from gateway.services.site import Site
from gateway.services.state_payloads import (
    connector_state,
    device_state,
    last_session_state,
    meter_state,
    outbox_state,
    sessions_today_state,
    site_state,
    upstream_state,
)

T0 = datetime(2025, 3, 1, 12, 0, 5, tzinfo=UTC)
PREFIX = "ocpp-gateway/demo-site"
ALL_SWITCHES = frozenset({"current_limit", "availability", "session", "soc_target", "soc_input", "site_limit"})
COMPONENTS = {"sensor", "binary_sensor", "number", "switch", "button"}

# What HA's sensor documentation allows per device class: state classes and units.
SENSOR_RULES: dict[str, tuple[set[str], set[str]]] = {
    "energy": ({"total", "total_increasing", None}, {"Wh", "kWh", "MWh"}),  # not "measurement"
    "power": ({"measurement"}, {"W", "kW"}),
    "current": ({"measurement"}, {"A", "mA"}),
    "voltage": ({"measurement"}, {"V", "mV"}),
    "battery": ({"measurement"}, {"%"}),
    "temperature": ({"measurement"}, {"°C", "°F", "K"}),
    "frequency": ({"measurement"}, {"Hz", "kHz"}),
    "duration": ({"measurement", "total", "total_increasing"}, {"s", "min", "h", "d"}),
}
# An HA entity id: domain.object_id, lower case, no leading/trailing/double underscore (cv.entity_id).
ENTITY_ID = re.compile(r"^(?!.+__)(?!_)[a-z0-9_]+(?<!_)\.(?!_)[a-z0-9_]+(?<!_)$")
CONFIG_TOPIC = re.compile(r"^homeassistant/(?P<component>[a-z_]+)/[A-Za-z0-9_-]+/[A-Za-z0-9_-]+/config$")


# -- a site with readings, and what the bridge publishes for it ---------------------------------------
def make_site() -> Site:
    """wb1: two connectors (1 charging three-phase, 2 faulted); garage: one single-phase connector
    that never answered; a grid meter."""
    site = Site(
        connectors=[Connector(1, "wb1", socket=1), Connector(2, "wb1", socket=2), Connector(3, "garage")],
        meters=[Meter("grid", connector_id=0)],
        policies={1: ConnectorPolicy(AuthPolicy.FREE)},
    )
    three_phase = Reading(
        measured_at=T0,
        energy_wh=1_523_456,
        power_w=11_040.0,
        current_a=(16.0, 16.0, 16.1),
        voltage_v=(230.1, 229.8, 231.0),
        frequency_hz=50.0,
        temperature_c=38.5,
        soc_percent=62.5,
        offered_current_a=16.0,
    )
    site.apply(ChargerSnapshot("wb1", 1, three_phase, VehicleState.C))
    ground_fault = (Fault(FaultKind.GROUND_FAULT, vendor_code="15", info="RCD tripped"),)
    site.apply(ChargerSnapshot("wb1", 2, Reading(T0, energy_wh=88_120), VehicleState.A, faults=ground_fault))
    site.apply(DeviceFailed("garage", "no answer from 192.168.1.31:502", T0))
    site.apply(MeterSnapshot("grid", Reading(T0, energy_wh=48_211_034, power_w=2_310.5, current_a=(3.1,))))
    site.commands.set_soc_target(1, 80.0)
    fuse, csms = PhaseLimit(14.0, Reason.FUSE), PhaseLimit(20.0, Reason.CSMS)
    shares = {1: ConnectorShare(14.0, Reason.FUSE, drawn_a=16.1)}
    site.load.report(SiteLoad(T0, (fuse, csms, csms), (24.5, 9.0, 8.0), (14.0, 14.0, 14.0), shares, 40.0))
    return site


def published(site: Site, topics: Topics) -> dict[str, Payload]:
    """topic -> payload of every state topic, as the bridge renders them."""
    states: dict[str, Payload] = {}
    for cid, connector in site.connectors.items():
        states[topics.connector(cid)] = connector_state(connector, site.billing_energy_wh(cid), site.load.share_of(cid))
    for name, meter in site.meters.items():
        states[topics.meter(name)] = meter_state(meter)
    for name in site.devices():
        health = site.device_health(name)
        states[topics.device(name)] = device_state(name, health.online, health.reason, health.since)
    states[topics.upstream] = upstream_state(True, "Accepted", T0)
    states[topics.outbox] = outbox_state(site.backlog, T0)
    grid = site.meters["grid"]
    load, limit = site.load.state, site.load.site_limit_a
    states[topics.site] = site_state(site.connectors.values(), grid, True, site.backlog, T0, load, limit)
    for cid in site.connectors:  # connector 1 had a session this morning, the others none yet
        states[topics.last_session(cid)] = last_session_state(cid, LAST_SESSION if cid == 1 else None)
    states[topics.sessions] = sessions_today_state(3, datetime(2025, 3, 1, tzinfo=UTC))
    return states


LAST_SESSION = LastSession(
    1, 23_456, datetime(2025, 3, 1, 7, tzinfo=UTC), datetime(2025, 3, 1, 9, tzinfo=UTC), "****5678"
)


@pytest.fixture
def site() -> Site:
    return make_site()


@pytest.fixture
def topics() -> Topics:
    return Topics(PREFIX)


def configs(site: Site, commands: frozenset[str] = frozenset()) -> list[tuple[str, Payload]]:
    return Discovery("homeassistant", Topics(PREFIX), commands, sw_version="1.2.3").configs(site)


def by_unique_id(messages: list[tuple[str, Payload]]) -> dict[str, Payload]:
    return {str(payload["unique_id"]): payload for _topic, payload in messages}


def entity(messages: list[tuple[str, Payload]], default_entity_id: str) -> Payload:
    found = [payload for _topic, payload in messages if payload["default_entity_id"] == default_entity_id]
    assert len(found) == 1, f"{default_entity_id}: {len(found)} configs"
    return found[0]


def availability(payload: Payload) -> list[dict[str, Any]]:
    entries = payload["availability"]
    assert isinstance(entries, list)
    return entries


def availability_topics(payload: Payload) -> list[str]:
    return [entry["topic"] for entry in availability(payload)]


def keys_anywhere(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield key
            yield from keys_anywhere(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from keys_anywhere(inner)


# -- rendering templates as HA does --------------------------------------------------------------------
STRICT = ImmutableSandboxedEnvironment(undefined=StrictUndefined)  # a typo in a key fails
LENIENT = ImmutableSandboxedEnvironment(undefined=Undefined)  # HA's behaviour for a missing key


def render(template: str, payload: Payload, env: ImmutableSandboxedEnvironment = STRICT) -> str:
    # HA passes the raw payload as ``value`` and, when it parses as JSON, ``value_json``.
    return env.from_string(template).render(value=json.dumps(payload), value_json=payload).strip()


def state_of(messages: list[tuple[str, Payload]], default_entity_id: str, states: dict[str, Payload]) -> str:
    config = entity(messages, default_entity_id)
    return render(str(config["value_template"]), states[str(config["state_topic"])])


# -- common fields --------------------------------------------------------------------------------------
def test_every_config_has_the_fields_ha_needs(site: Site) -> None:
    messages = configs(site, ALL_SWITCHES)
    assert len(by_unique_id(messages)) == len(messages), "unique_id must be unique"
    assert len({topic for topic, _ in messages}) == len(messages)
    for topic, payload in messages:
        match = CONFIG_TOPIC.match(topic)
        assert match is not None, topic
        component = match["component"]
        assert component in COMPONENTS
        assert isinstance(payload["name"], str) and payload["name"], topic
        assert payload["name"][0].isupper(), f"{topic}: HA names are sentence case"
        assert ENTITY_ID.match(str(payload["default_entity_id"])), payload["default_entity_id"]
        assert str(payload["default_entity_id"]).startswith(f"{component}."), topic
        assert "object_id" not in set(keys_anywhere(payload)), f"{topic}: object_id is deprecated"
        device = payload["device"]
        assert isinstance(device, dict) and device["identifiers"] and device["name"], topic
        assert payload["origin"] == {"name": "ocpp-gateway", "sw_version": "1.2.3"}
        assert payload["availability_mode"] == "all"
        assert availability(payload)[0] == {
            "topic": f"{PREFIX}/availability",
            "payload_available": "online",
            "payload_not_available": "offline",
        }
        for key in ("state_topic", "command_topic", "json_attributes_topic"):
            if key in payload:
                assert not set(str(payload[key])) & {"+", "#"}, f"{topic}: {key} has a wildcard"
        if component == "button":
            assert "state_topic" not in payload
        else:
            assert "state_topic" in payload and "value_template" in payload, topic
        if "entity_category" in payload:
            assert payload["entity_category"] == "diagnostic", topic
        json.dumps(payload, allow_nan=False)  # what the bridge will encode


def test_entities_read_only_topics_the_gateway_publishes(site: Site, topics: Topics) -> None:
    states = published(site, topics)
    for topic, payload in configs(site, ALL_SWITCHES):
        for key in ("state_topic", "json_attributes_topic"):
            if key in payload:
                assert payload[key] in states, f"{topic}: {key} {payload[key]} is never published"
        for availability_topic in availability_topics(payload):
            assert availability_topic == topics.availability or availability_topic in states, topic
        if "command_topic" in payload:
            parsed = command_topic(topics, str(payload["command_topic"]))
            assert parsed is not None, f"{topic}: no command topic"
            known = COMMANDS if parsed[0] is not None else SITE_COMMANDS
            assert parsed[1] in known, f"{topic}: no such command topic"
            assert payload["retain"] is False, "the gateway ignores retained commands"


def test_devices_one_per_charger_meter_and_the_gateway(site: Site) -> None:
    devices: dict[str, dict[str, Any]] = {}
    for _topic, payload in configs(site):
        device = payload["device"]
        assert isinstance(device, dict)
        devices.setdefault(device["identifiers"][0], device)
    gateway_id = topic_id(PREFIX)
    assert gateway_id == "ocpp-gateway_demo-site"
    assert set(devices) == {gateway_id, f"{gateway_id}_wb1", f"{gateway_id}_garage", f"{gateway_id}_grid"}
    assert devices[gateway_id]["name"] == "OCPP gateway demo-site"
    assert devices[gateway_id]["sw_version"] == "1.2.3"
    assert "via_device" not in devices[gateway_id]
    for name, model in [("wb1", "Charger"), ("garage", "Charger"), ("grid", "Energy meter")]:
        device = devices[f"{gateway_id}_{name}"]
        assert (device["name"], device["model"], device["via_device"]) == (name, model, gateway_id)


def test_two_gateways_on_one_broker_do_not_collide(site: Site) -> None:
    first = Discovery("homeassistant", Topics("ocpp-gateway/site-a")).configs(site)
    second = Discovery("homeassistant", Topics("ocpp-gateway/site-b")).configs(site)
    assert not set(by_unique_id(first)) & set(by_unique_id(second))
    assert not {t for t, _ in first} & {t for t, _ in second}


def test_ids_are_stable(site: Site) -> None:
    power = entity(configs(site), "sensor.demo_site_wb1_c1_power")
    assert power["unique_id"] == "ocpp-gateway_demo-site_wb1_c1_power"
    topic = next(t for t, p in configs(site) if p["unique_id"] == power["unique_id"])
    assert topic == "homeassistant/sensor/ocpp-gateway_demo-site/wb1_c1_power/config"


def test_devices_whose_ids_clash_are_refused() -> None:
    site = Site(connectors=[Connector(1, "wb.1"), Connector(2, "wb_1")], meters=[])
    with pytest.raises(ValueError, match="share the id"):
        Discovery("homeassistant", Topics(PREFIX)).configs(site)


@pytest.mark.parametrize("prefix", ["", "ha/", "ha/#", "ha/+/x"])
def test_bad_discovery_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="discovery prefix"):
        Discovery(prefix, Topics(PREFIX))


def test_slugs() -> None:
    assert entity_slug("Demo-Site_wb.1  Left") == "demo_site_wb_1_left"
    assert topic_id("ocpp-gateway/demo site/x") == "ocpp-gateway_demo_site_x"


# -- sensors ------------------------------------------------------------------------------------------
def test_sensor_device_class_state_class_and_unit_follow_ha_rules(site: Site) -> None:
    for topic, payload in configs(site, ALL_SWITCHES):
        if not topic.startswith("homeassistant/sensor/"):
            continue
        device_class = payload.get("device_class")
        if device_class == "enum":
            assert "state_class" not in payload and "unit_of_measurement" not in payload, topic
            assert isinstance(payload["options"], list) and payload["options"], topic
            continue
        assert "options" not in payload, topic
        if device_class is None:
            assert "unit_of_measurement" not in payload, f"{topic}: a unit without a device class"
            continue
        state_classes, units = SENSOR_RULES[str(device_class)]
        assert payload.get("state_class") in state_classes, topic
        assert payload["unit_of_measurement"] in units, topic


@pytest.mark.parametrize(
    ("default_entity_id", "device_class", "state_class", "unit"),
    [
        ("sensor.demo_site_wb1_c1_energy", "energy", "total_increasing", "Wh"),
        ("sensor.demo_site_wb1_c1_session_energy", "energy", "total_increasing", "Wh"),
        ("sensor.demo_site_grid_energy", "energy", "total_increasing", "Wh"),
        ("sensor.demo_site_grid_energy_export", "energy", "total_increasing", "Wh"),
        ("sensor.demo_site_gateway_grid_energy", "energy", "total_increasing", "Wh"),
        ("sensor.demo_site_wb1_c1_power", "power", "measurement", "W"),
        ("sensor.demo_site_grid_power", "power", "measurement", "W"),
        ("sensor.demo_site_gateway_total_power", "power", "measurement", "W"),
        ("sensor.demo_site_wb1_c1_current_l2", "current", "measurement", "A"),
        ("sensor.demo_site_wb1_c1_offered_current", "current", "measurement", "A"),
        ("sensor.demo_site_wb1_c1_voltage_l3", "voltage", "measurement", "V"),
        ("sensor.demo_site_wb1_c1_soc", "battery", "measurement", "%"),
        ("sensor.demo_site_wb1_c1_temperature", "temperature", "measurement", "°C"),
        ("sensor.demo_site_wb1_c1_frequency", "frequency", "measurement", "Hz"),
        ("sensor.demo_site_gateway_outbox_oldest_age", "duration", "measurement", "s"),
    ],
)
def test_measured_quantities(
    site: Site, default_entity_id: str, device_class: str, state_class: str, unit: str
) -> None:
    payload = entity(configs(site), default_entity_id)
    assert (payload["device_class"], payload["state_class"], payload["unit_of_measurement"]) == (
        device_class,
        state_class,
        unit,
    )


def test_quantity_table_matches_ha_rules() -> None:
    for name, quantity in QUANTITIES.items():
        if quantity.device_class is None:
            assert quantity.unit is None, name
            continue
        state_classes, units = SENSOR_RULES[quantity.device_class]
        assert quantity.state_class in state_classes and quantity.unit in units, name


def test_status_is_an_enum_of_the_connector_statuses(site: Site) -> None:
    status = entity(configs(site), "sensor.demo_site_wb1_c1_status")
    assert status["device_class"] == "enum"
    assert status["options"] == [s.value for s in ConnectorStatus]
    assert status["json_attributes_topic"] == status["state_topic"] == f"{PREFIX}/connector/1/state"
    assert "entity_category" not in status


def test_ocpp_enums_cover_what_the_gateway_reports(site: Site) -> None:
    assert set(STATUS.values()) <= set(OCPP_STATUSES)
    assert set(ERROR_CODE.values()) | {"NoError"} <= set(OCPP_ERROR_CODES)
    ocpp = entity(configs(site), "sensor.demo_site_wb1_c1_ocpp_status")
    assert (ocpp["device_class"], ocpp["entity_category"]) == ("enum", "diagnostic")


def test_diagnostics_are_categorised(site: Site) -> None:
    messages = configs(site)
    for default_entity_id in (
        "sensor.demo_site_wb1_c1_voltage_l1",
        "sensor.demo_site_wb1_c1_temperature",
        "sensor.demo_site_wb1_c1_id_tag",
        "binary_sensor.demo_site_wb1_online",
        "sensor.demo_site_gateway_outbox_dropped",
    ):
        assert entity(messages, default_entity_id)["entity_category"] == "diagnostic"
    for default_entity_id in ("sensor.demo_site_wb1_c1_power", "binary_sensor.demo_site_wb1_c1_problem"):
        assert "entity_category" not in entity(messages, default_entity_id)


# -- binary sensors -----------------------------------------------------------------------------------
def test_problem_binary_sensor_per_connector_with_the_faults_as_attributes(site: Site) -> None:
    messages = configs(site)
    for cid, device in [(1, "wb1"), (2, "wb1"), (3, "garage")]:
        problem = entity(messages, f"binary_sensor.demo_site_{device}_c{cid}_problem")
        assert problem["device_class"] == "problem"
        assert (problem["payload_on"], problem["payload_off"]) == ("ON", "OFF")
        assert problem["state_topic"] == problem["json_attributes_topic"] == f"{PREFIX}/connector/{cid}/state"
        assert "faults" in str(problem["json_attributes_template"])


def test_connectivity_sensors(site: Site) -> None:
    messages = configs(site)
    for name in ("wb1", "garage", "grid"):
        online = entity(messages, f"binary_sensor.demo_site_{name}_online")
        assert online["device_class"] == "connectivity"
        assert online["state_topic"] == f"{PREFIX}/device/{name}/state"
    csms = entity(messages, "binary_sensor.demo_site_gateway_csms_connected")
    assert (csms["device_class"], csms["state_topic"]) == ("connectivity", f"{PREFIX}/upstream/state")


# -- availability -------------------------------------------------------------------------------------
def test_availability_follows_the_gateway_and_the_device(site: Site, topics: Topics) -> None:
    messages = configs(site, ALL_SWITCHES)
    power = entity(messages, "sensor.demo_site_wb1_c2_power")
    assert availability_topics(power) == [topics.availability, topics.device("wb1")]
    grid = entity(messages, "sensor.demo_site_grid_power")
    assert availability_topics(grid) == [topics.availability, topics.device("grid")]
    limit = entity(messages, "number.demo_site_wb1_c1_current_limit")
    assert len(availability(limit)) == 2
    # What the gateway knows while a device is silent stays available, above all the problem.
    for default_entity_id in (
        "sensor.demo_site_wb1_c1_status",
        "binary_sensor.demo_site_wb1_c1_problem",
        "binary_sensor.demo_site_grid_problem",
        "binary_sensor.demo_site_wb1_online",
        "sensor.demo_site_wb1_c1_ocpp_status",
        "sensor.demo_site_gateway_outbox_records",
        "binary_sensor.demo_site_gateway_csms_connected",
    ):
        assert availability_topics(entity(messages, default_entity_id)) == [topics.availability]


def test_device_availability_template(site: Site, topics: Topics) -> None:
    states = published(site, topics)
    power = entity(configs(site), "sensor.demo_site_wb1_c1_power")
    template = str(availability(power)[1]["value_template"])
    assert render(template, states[topics.device("wb1")]) == "online"
    assert render(template, states[topics.device("garage")]) == "offline"
    assert render(template, device_state("wb9", None, None, None)) == "online"  # not polled yet: values unknown


# -- rendering against real payloads ------------------------------------------------------------------
def test_every_template_renders_against_the_published_state(site: Site, topics: Topics) -> None:
    states = published(site, topics)
    for topic, payload in configs(site, ALL_SWITCHES):
        state = states.get(str(payload.get("state_topic")))
        if "value_template" in payload:
            assert state is not None
            rendered = render(str(payload["value_template"]), state)
            if payload.get("device_class") == "enum":
                options = payload["options"]
                assert isinstance(options, list) and rendered in [*options, "None"], f"{topic}: {rendered!r}"
            elif topic.startswith(("homeassistant/binary_sensor/", "homeassistant/switch/")):
                assert rendered in ("ON", "OFF", "None"), f"{topic}: {rendered!r}"
            elif "state_class" in payload:
                assert rendered == "None" or float(rendered) == float(rendered), f"{topic}: {rendered!r}"
        if "json_attributes_template" in payload:
            assert state is not None
            assert isinstance(json.loads(render(str(payload["json_attributes_template"]), state)), dict)


@pytest.mark.parametrize(
    ("default_entity_id", "expected"),
    [
        ("sensor.demo_site_wb1_c1_status", "charging"),
        ("sensor.demo_site_wb1_c1_power", "11040.0"),
        ("sensor.demo_site_wb1_c1_energy", "1523456"),
        ("sensor.demo_site_wb1_c1_session_energy", "0"),
        ("sensor.demo_site_wb1_c1_current_l1", "16.0"),
        ("sensor.demo_site_wb1_c1_current_l3", "16.1"),
        ("sensor.demo_site_wb1_c1_voltage_l2", "229.8"),
        ("sensor.demo_site_wb1_c1_offered_current", "16.0"),
        ("sensor.demo_site_wb1_c1_frequency", "50.0"),
        ("sensor.demo_site_wb1_c1_temperature", "38.5"),
        ("sensor.demo_site_wb1_c1_soc", "62.5"),
        ("sensor.demo_site_wb1_c1_ocpp_status", "Charging"),
        ("sensor.demo_site_wb1_c1_ocpp_error_code", "NoError"),
        ("binary_sensor.demo_site_wb1_c1_problem", "OFF"),
        ("binary_sensor.demo_site_wb1_c1_plug", "ON"),
        ("binary_sensor.demo_site_wb1_c1_session_active", "ON"),
        ("sensor.demo_site_wb1_c2_status", "faulted"),
        ("sensor.demo_site_wb1_c2_ocpp_error_code", "GroundFailure"),
        ("binary_sensor.demo_site_wb1_c2_problem", "ON"),
        ("binary_sensor.demo_site_wb1_c2_plug", "OFF"),
        ("sensor.demo_site_wb1_c2_power", "None"),  # null: unknown, never an error or an empty string
        ("sensor.demo_site_wb1_c2_current_l1", "None"),  # [] : unknown
        ("sensor.demo_site_wb1_c2_session_energy", "None"),
        ("sensor.demo_site_wb1_c2_transaction_id", "None"),
        ("binary_sensor.demo_site_garage_c3_plug", "None"),
        ("binary_sensor.demo_site_garage_online", "OFF"),
        ("binary_sensor.demo_site_wb1_online", "ON"),
        ("sensor.demo_site_grid_current_l1", "3.1"),
        ("sensor.demo_site_grid_current_l2", "None"),  # a shorter list: unknown
        ("sensor.demo_site_grid_energy", "48211034"),
        ("sensor.demo_site_grid_energy_export", "None"),
        ("binary_sensor.demo_site_grid_problem", "OFF"),
        ("binary_sensor.demo_site_gateway_csms_connected", "ON"),
        ("sensor.demo_site_gateway_csms_registration", "Accepted"),
        ("sensor.demo_site_gateway_outbox_records", "0"),
        ("sensor.demo_site_gateway_outbox_oldest_age", "None"),
        ("sensor.demo_site_gateway_total_power", "11040.0"),
        ("sensor.demo_site_gateway_grid_power", "2310.5"),
        ("sensor.demo_site_gateway_connectors_charging", "1"),
        ("sensor.demo_site_gateway_charging_limit", "14.0"),
        ("sensor.demo_site_gateway_charging_limit_reason", "fuse"),
        ("sensor.demo_site_gateway_charging_limit_l2", "20.0"),
        ("sensor.demo_site_gateway_offered_current_l3", "14.0"),
        ("sensor.demo_site_wb1_c1_share", "14.0"),
        ("sensor.demo_site_wb1_c1_share_reason", "fuse"),
        ("sensor.demo_site_wb1_c2_share", "None"),  # in no session: no share
        ("sensor.demo_site_wb1_c2_share_reason", "None"),
        ("sensor.demo_site_wb1_c1_last_session_energy", "23456"),
        ("sensor.demo_site_wb1_c2_last_session_energy", "None"),  # none yet: unknown
        ("sensor.demo_site_gateway_sessions_today", "3"),
    ],
)
def test_rendered_values(site: Site, topics: Topics, default_entity_id: str, expected: str) -> None:
    assert state_of(configs(site), default_entity_id, published(site, topics)) == expected


def test_attributes_render_to_the_state_fields(site: Site, topics: Topics) -> None:
    states = published(site, topics)
    messages = configs(site)
    problem = entity(messages, "binary_sensor.demo_site_wb1_c2_problem")
    attributes = json.loads(render(str(problem["json_attributes_template"]), states[topics.connector(2)]))
    assert attributes == {"faults": [{"kind": "ground_fault", "vendor_code": "15", "info": "RCD tripped"}]}
    soc = entity(messages, "sensor.demo_site_wb1_c1_soc")
    attributes = json.loads(render(str(soc["json_attributes_template"]), states[topics.connector(1)]))
    assert attributes["soc_source"] == "charger" and attributes["soc_target_percent"] == 80.0
    garage = entity(messages, "binary_sensor.demo_site_garage_online")
    attributes = json.loads(render(str(garage["json_attributes_template"]), states[topics.device("garage")]))
    assert attributes["reason"] == "no answer from 192.168.1.31:502"
    limit = entity(messages, "sensor.demo_site_gateway_charging_limit")
    attributes = json.loads(render(str(limit["json_attributes_template"]), states[topics.site]))
    assert attributes["phase_limit_reasons"] == ["fuse", "csms", "csms"] and attributes["fuse_a"] == 40.0


def test_a_missing_key_renders_unknown_not_an_error(site: Site) -> None:
    """An older gateway (or a future one) may not send every key: HA must show unknown."""
    for topic, payload in configs(site, ALL_SWITCHES):
        if "value_template" in payload:
            rendered = render(str(payload["value_template"]), {}, LENIENT)
            allowed = {"None"} if topic.startswith("homeassistant/sensor/") else {"None", "ON", "OFF"}
            assert rendered in allowed, f"{topic}: {rendered!r}"
        if "json_attributes_template" in payload:
            json.loads(render(str(payload["json_attributes_template"]), {}, LENIENT))


# -- commands -----------------------------------------------------------------------------------------
def test_no_command_entities_unless_switched_on(site: Site) -> None:
    components = {topic.split("/")[1] for topic, _ in configs(site)}
    assert components == {"sensor", "binary_sensor"}
    only_soc_input = configs(site, frozenset({"soc_input"}))
    assert {topic.split("/")[1] for topic, _ in only_soc_input} == {"sensor", "binary_sensor"}


@pytest.mark.parametrize(
    ("switch", "expected"),
    [
        ("current_limit", {"number.demo_site_wb1_c1_current_limit"}),
        ("availability", {"switch.demo_site_wb1_c1_available"}),
        ("session", {"button.demo_site_wb1_c1_session_start", "button.demo_site_wb1_c1_session_stop"}),
        ("soc_target", {"number.demo_site_wb1_c1_soc_target"}),
    ],
)
def test_each_switch_adds_its_entities_per_connector(site: Site, switch: str, expected: set[str]) -> None:
    base = {str(p["default_entity_id"]) for _t, p in configs(site)}
    with_switch = {str(p["default_entity_id"]) for _t, p in configs(site, frozenset({switch}))}
    added = with_switch - base
    assert {e for e in added if "_wb1_c1_" in e} == expected
    assert len(added) == 3 * len(expected)  # every connector


def test_number_and_switch_schemas(site: Site, topics: Topics) -> None:
    messages = configs(site, ALL_SWITCHES)
    limit = entity(messages, "number.demo_site_wb1_c2_current_limit")
    assert limit["name"] == "Connector 2 current limit"
    assert (limit["min"], limit["max"], limit["step"], limit["mode"]) == (0, 32, 1, "box")
    assert (limit["unit_of_measurement"], limit["device_class"]) == ("A", "current")
    assert limit["command_topic"] == f"{PREFIX}/connector/2/set/current_limit"
    target = entity(messages, "number.demo_site_garage_c3_soc_target")
    assert target["name"] == "SoC target"  # garage has one connector: no "Connector 3"
    assert (target["min"], target["max"], target["unit_of_measurement"]) == (1, 100, "%")
    states = published(site, topics)
    assert render(str(target["value_template"]), states[topics.connector(3)]) == "None"
    assert state_of(messages, "number.demo_site_wb1_c1_soc_target", states) == "80.0"
    switch = entity(messages, "switch.demo_site_wb1_c1_available")
    assert (switch["state_on"], switch["state_off"]) == ("ON", "OFF")
    assert state_of(messages, "switch.demo_site_wb1_c1_available", states) == "ON"
    assert site.commands.change_availability(2, available=False) == "Accepted"
    assert state_of(messages, "switch.demo_site_wb1_c2_available", published(site, topics)) == "OFF"
    stop = entity(messages, "button.demo_site_wb1_c1_session_stop")
    assert json.loads(str(stop["payload_press"])) == {"action": "stop"}


def test_command_payloads_are_what_the_gateway_acts_on(site: Site, topics: Topics) -> None:
    """HA's rendered command goes through the real CommandHandler and changes the Site."""
    handler = CommandHandler(site, topics, ALL_SWITCHES)
    messages = configs(site, ALL_SWITCHES)

    def send(default_entity_id: str, payload: str) -> None:
        config = entity(messages, default_entity_id)
        error = handler.handle(str(config["command_topic"]), payload.encode(), retained=False)
        assert error is None, error

    def number(default_entity_id: str, value: int) -> str:
        return STRICT.from_string(str(entity(messages, default_entity_id)["command_template"])).render(value=value)

    send("number.demo_site_wb1_c1_current_limit", number("number.demo_site_wb1_c1_current_limit", 10))
    assert site.connectors[1].current_ceiling_a == 10
    send("number.demo_site_wb1_c1_soc_target", number("number.demo_site_wb1_c1_soc_target", 90))
    assert site.connectors[1].soc_target_percent == 90
    site.apply(ChargerSnapshot("wb1", 2, Reading(T0, energy_wh=88_120), VehicleState.A))  # fault gone
    assert state_of(messages, "switch.demo_site_wb1_c2_available", published(site, topics)) == "ON"
    send("switch.demo_site_wb1_c2_available", str(entity(messages, "switch.demo_site_wb1_c2_available")["payload_off"]))
    assert site.connectors[2].available is False
    assert state_of(messages, "switch.demo_site_wb1_c2_available", published(site, topics)) == "OFF"
    assert site.connectors[1].session_active
    send(
        "button.demo_site_wb1_c1_session_stop",
        str(entity(messages, "button.demo_site_wb1_c1_session_stop")["payload_press"]),
    )
    assert not site.connectors[1].session_active


def test_the_site_limit_number_sets_the_site_limit_and_shows_it(site: Site, topics: Topics) -> None:
    assert not [p for _t, p in configs(site) if p["default_entity_id"] == "number.demo_site_gateway_site_limit"]
    messages = configs(site, frozenset({"site_limit"}))
    added = {str(p["default_entity_id"]) for _t, p in messages} - {
        str(p["default_entity_id"]) for _t, p in configs(site)
    }
    assert added == {"number.demo_site_gateway_site_limit"}  # one for the site, none per connector
    number = entity(messages, "number.demo_site_gateway_site_limit")
    assert number["name"] == "Site limit" and number["command_topic"] == f"{PREFIX}/site/set/limit"
    assert (number["min"], number["max"], number["unit_of_measurement"], number["retain"]) == (0, 10_000, "A", False)
    assert state_of(messages, "number.demo_site_gateway_site_limit", published(site, topics)) == "None"
    command = STRICT.from_string(str(number["command_template"])).render(value=25)
    handler = CommandHandler(site, topics, frozenset({"site_limit"}))
    assert handler.handle(str(number["command_topic"]), command.encode(), retained=False) is None
    assert site.load.site_limit_a == 25.0
    assert state_of(messages, "number.demo_site_gateway_site_limit", published(site, topics)) == "25.0"


def test_switched_off_commands_are_cleared(site: Site) -> None:
    """Every config a switch would publish is in ``cleared`` while it is off (and only then)."""
    for switch in (*COMMAND_ENTITIES, *SITE_COMMAND_ENTITIES):
        off = Discovery("homeassistant", Topics(PREFIX), frozenset())
        on = Discovery("homeassistant", Topics(PREFIX), frozenset({switch}))
        added = {t for t, _ in on.configs(site)} - {t for t, _ in off.configs(site)}
        assert added and added <= set(off.cleared(site)), switch
        assert not added & set(on.cleared(site)), switch
    everything = Discovery("homeassistant", Topics(PREFIX), ALL_SWITCHES)
    assert everything.cleared(site) == []


def test_status_topic_and_node_id() -> None:
    discovery = Discovery("ha/test", Topics("home/garage"))
    assert discovery.status_topic == "ha/test/status"
    assert discovery.node_id == "home_garage"
    site = Site(connectors=[Connector(1, "wb1")], meters=[])
    topic, payload = next((t, p) for t, p in discovery.configs(site) if str(p["unique_id"]).endswith("_c1_power"))
    assert topic == "ha/test/sensor/home_garage/wb1_c1_power/config"
    assert payload["default_entity_id"] == "sensor.garage_wb1_c1_power"


def test_last_session_energy_and_sessions_today_say_what_ha_must_do_with_them(site: Site, topics: Topics) -> None:
    """The last session's energy: an energy in Wh with NO state class (one session's value, not a
    total HA may add up); sessions today: a count HA reads as a daily cycle (total_increasing)."""
    states, messages = published(site, topics), configs(site)
    last = entity(messages, "sensor.demo_site_wb1_c1_last_session_energy")
    assert (last["device_class"], last["unit_of_measurement"], "state_class" in last) == ("energy", "Wh", False)
    assert last["state_topic"] == last["json_attributes_topic"] == topics.last_session(1)
    assert len(availability(last)) == 1  # the gateway knows it while the charger is silent
    attributes = json.loads(render(str(last["json_attributes_template"]), states[topics.last_session(1)]))
    assert attributes == {
        "started_at": "2025-03-01T07:00:00.000Z",
        "stopped_at": "2025-03-01T09:00:00.000Z",
        "id_tag": "****5678",
    }
    today = entity(messages, "sensor.demo_site_gateway_sessions_today")
    assert today["state_class"] == "total_increasing" and "device_class" not in today
    assert today["state_topic"] == topics.sessions
    attributes = json.loads(render(str(today["json_attributes_template"]), states[topics.sessions]))
    assert attributes == {"day": "2025-03-01", "since": "2025-03-01T00:00:00.000Z"}
