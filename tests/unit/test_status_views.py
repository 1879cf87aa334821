"""The site picture and its three renderings (HTML page, Prometheus text, terminal), without a
server: a Site fed with snapshots, as the device adapters feed it."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.web.metrics import render_metrics
from adapters.web.page import render_page
from gateway.config import parse_config
from gateway.domain.errors import ConfigError
from gateway.domain.model import (
    ChargerSnapshot,
    Connector,
    DeviceFailed,
    Fault,
    FaultKind,
    Meter,
    MeterSnapshot,
    Reading,
    VehicleState,
)
from gateway.domain.outbox import NewRecord, RecordKind
from gateway.domain.phase_limits import ConnectorShare, PhaseLimit, Reason, SiteLoad
from gateway.domain.transactions import AuthPolicy
from gateway.services.sessions import ConnectorPolicy
from gateway.services.site import Site
from gateway.services.site_picture import FAULT_LABELS, REASON_LABELS, STATUS_LABELS, SiteLabels, site_picture
from gateway.services.telemetry import POLL_BUCKETS_S, Telemetry
from gateway.status_text import render
from tests.fixtures.memory_outbox import full_disk_outbox
from tests.fixtures.modbus import StepClock

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
HOSTILE = '<script>alert("x")</script>'


def a_site() -> tuple[Site, Telemetry]:
    clock = StepClock(T0)
    site = Site([Connector(1, "wb-1"), Connector(2, "wb-2")], [Meter("grid", 0)], clock=clock)
    telemetry = Telemetry(["wb-1", "wb-2", "grid"], clock)
    reading = Reading(T0, energy_wh=1_234_567, power_w=11_000.0, current_a=(16.0, 16.0, 16.0))
    site.apply(ChargerSnapshot("wb-1", 1, reading, VehicleState.C, charging_enabled=True))
    telemetry.poll_finished("wb-1", 0.004, ok=True)
    hot = Fault(FaultKind.OVER_TEMPERATURE, "E42", HOSTILE)
    site.apply(ChargerSnapshot("wb-2", 1, Reading(T0, energy_wh=10), VehicleState.A, faults=(hot,)))
    telemetry.poll_finished("wb-2", 0.02, ok=True)
    site.apply(DeviceFailed("grid", "no answer within 1 s", T0))
    telemetry.poll_finished("grid", 1.2, ok=False)
    return site, telemetry


LABELS = SiteLabels("site-1", HOSTILE, "ws://csms.example/ocpp/GW", "broker:1883")


def test_every_status_and_fault_kind_has_words_for_people() -> None:
    from gateway.domain.model import ConnectorStatus

    assert set(STATUS_LABELS) == set(ConnectorStatus)
    assert set(FAULT_LABELS) == set(FaultKind)


def test_poll_figures_fall_into_prometheus_buckets_and_readiness_waits_for_every_device() -> None:
    telemetry = Telemetry(["a", "b"])
    assert not telemetry.ready and telemetry.waiting_for() == ["a", "b"]
    for seconds in (0.001, 0.005, 0.03, 20.0):  # 0.005 belongs to le="0.005": bounds are inclusive
        telemetry.poll_finished("a", seconds, ok=seconds < 10)
    stats = telemetry.polls["a"]
    cumulative = dict(zip((*POLL_BUCKETS_S, float("inf")), stats.cumulative(), strict=True))
    assert (cumulative[0.005], cumulative[0.01], cumulative[0.05], cumulative[10.0], cumulative[float("inf")]) == (
        2,
        2,
        3,
        3,
        4,
    )
    assert (stats.polls, stats.errors, stats.last_s) == (4, 1, 20.0)
    assert telemetry.waiting_for() == ["b"]
    telemetry.poll_finished("b", 0.1, ok=False)  # polled counts, answered or not
    assert telemetry.ready


def test_the_mqtt_link_keeps_its_reason_only_while_down() -> None:
    clock = StepClock(T0)
    telemetry = Telemetry(clock=clock)
    telemetry.mqtt_changed(False, "not authorised")
    assert (telemetry.mqtt.connected, telemetry.mqtt.reason, telemetry.mqtt.since) == (False, "not authorised", T0)
    clock.advance(5)
    telemetry.mqtt_changed(True, "ignored")
    assert (telemetry.mqtt.connected, telemetry.mqtt.reason, telemetry.mqtt.since) == (True, "", clock.now())


def test_the_picture_is_plain_json_with_labels_and_health() -> None:
    site, telemetry = a_site()
    picture = site_picture(site, telemetry, LABELS)
    json.dumps(picture, allow_nan=False)  # what the API sends, as is
    one, two = picture["connectors"]
    assert (one["status"], one["status_label"], one["billing_energy_wh"], one["power_w"]) == (
        "charging",
        "Charging",
        1_234_567,
        11_000.0,
    )
    assert two["status"] == "faulted" and two["faults"][0]["label"] == "Overheating"
    devices = {d["device"]: d for d in picture["devices"]}
    assert devices["grid"]["online"] is False and devices["grid"]["reason"] == "no answer within 1 s"
    assert (devices["grid"]["polls"], devices["grid"]["poll_errors"], devices["grid"]["last_poll_ms"]) == (1, 1, 1200.0)
    # a lost device keeps the site from ready; the CSMS and the broker, in their first minute and not
    # failed yet, are waited for
    assert (picture["ready"], picture["state"]) == (False, "degraded")
    assert picture["problems"] == [{"part": "device", "message": "device grid not answering: no answer within 1 s"}]
    assert picture["waiting_for"] == ["CSMS", "MQTT broker"]
    assert picture["generated_at"] == "2026-11-29T12:00:00.000Z"


def test_the_page_escapes_whatever_a_device_or_the_config_says() -> None:
    site, telemetry = a_site()
    html = render_page(site_picture(site, telemetry, LABELS))
    assert HOSTILE not in html and "&lt;script&gt;" in html
    assert "<button" not in html and "<script>" not in html  # no commands: nothing to press
    assert 'id="connector-1"' in html and "Charging" in html and "Overheating" in html
    assert "1,234,567 Wh" in html and "11,000 W" in html


def test_the_page_offers_buttons_only_when_commands_are_on() -> None:
    site, telemetry = a_site()
    site.connectors[1].session_active = True
    with_commands = SiteLabels("site-1", commands=True)
    html = render_page(site_picture(site, telemetry, with_commands))
    assert "data-path='/api/connectors/1/stop'" in html
    assert "data-path='/api/connectors/2/availability'" in html and "Stop session" in html


def test_metrics_parse_as_prometheus_text_and_leave_out_what_is_unknown() -> None:
    site, telemetry = a_site()
    telemetry.message_sent("BootNotification")
    telemetry.message_failed("StatusNotification", "timeout")
    text = render_metrics(telemetry, site_picture(site, telemetry, LABELS))
    families = {family.name: family for family in text_string_to_metric_families(text)}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for family in families.values() for s in family.samples
    }
    assert families["ocpp_gateway_poll_duration_seconds"].type == "histogram"
    assert families["ocpp_gateway_upstream_messages_sent"].type == "counter"
    assert samples[("ocpp_gateway_poll_duration_seconds_bucket", (("device", "grid"), ("le", "+Inf")))] == 1
    assert samples[("ocpp_gateway_poll_duration_seconds_bucket", (("device", "grid"), ("le", "1.0")))] == 0
    assert samples[("ocpp_gateway_poll_errors_total", (("device", "grid"),))] == 1
    failed = (("action", "StatusNotification"), ("reason", "timeout"))
    assert samples[("ocpp_gateway_upstream_messages_failed_total", failed)] == 1
    assert samples[("ocpp_gateway_connector_power_watts", (("connector", "1"),))] == 11_000
    assert samples[("ocpp_gateway_connector_energy_register_watt_hours", (("connector", "1"),))] == 1_234_567
    assert ("ocpp_gateway_connector_soc_percent", (("connector", "1"),)) not in samples  # unknown: no series
    assert samples[("ocpp_gateway_connector_status", (("connector", "2"), ("status", "faulted")))] == 1
    assert sum(v for (name, labels), v in samples.items() if name == "ocpp_gateway_connector_status") == 2


def test_a_disk_that_refuses_writes_is_a_problem_on_the_page_and_in_the_metrics() -> None:
    site, telemetry = a_site()
    outbox, store = full_disk_outbox(site, T0.isoformat())
    picture = site_picture(site, telemetry, LABELS)
    problem = picture["outbox"]["disk_problem"]
    assert "No space left on device" in problem and "1 billing message(s) held in memory only" in problem
    assert picture["outbox"]["problems"] == [problem] and picture["outbox"]["held_in_memory"] == 1
    html = render_page(picture)
    assert f"<p class=fault>{problem}</p>" in html and "1 message(s), oldest 0 s, 1 in memory only" in html
    assert disk_gauges(telemetry, picture) == (1, 1)
    assert f"DISK PROBLEM: {problem}" in render(picture)  # ocpp-gateway status says it too

    store.full = False  # the disk is back: the held record is written, the problem is gone
    outbox.enqueue(NewRecord(RecordKind.SAMPLED, "MeterValues", {}, T0.isoformat(), "tx"))
    picture = site_picture(site, telemetry, LABELS)
    assert picture["outbox"]["problems"] == [] and picture["outbox"]["disk_problem"] is None
    assert "refuses" not in render_page(picture) and "DISK PROBLEM" not in render(picture)
    assert disk_gauges(telemetry, picture) == (0, 0)


def disk_gauges(telemetry: Telemetry, picture: dict) -> tuple[float, float]:
    """``outbox_disk_failing`` and ``outbox_held_in_memory`` as Prometheus reads them."""
    families = text_string_to_metric_families(render_metrics(telemetry, picture))
    samples = {sample.name: sample.value for family in families for sample in family.samples}
    return samples["ocpp_gateway_outbox_disk_failing"], samples["ocpp_gateway_outbox_held_in_memory"]


def test_label_values_are_escaped() -> None:
    from adapters.web.metrics import _labels

    assert _labels({"device": 'a"b\\c\nd'}) == '{device="a\\"b\\\\c\\nd"}'


def test_the_terminal_shows_the_same_picture() -> None:
    site, telemetry = a_site()
    site.apply(MeterSnapshot("grid", Reading(T0, energy_wh=5_000, power_w=2_000.0)))
    text = render(site_picture(site, telemetry, LABELS), csms_note="built-in")
    assert "CSMS    ws://csms.example/ocpp/GW (built-in): NOT connected, boot none" in text
    lines = {line.split()[0]: line for line in text.splitlines() if line.strip()[:1].isdigit()}
    assert "Charging" in lines["1"] and "11,000 W" in lines["1"] and "1,234,567 Wh" in lines["1"]
    assert "Faulted: Overheating" in lines["2"]
    assert "grid             modbus  answering  (1 polls, 1 failed)" in text


@pytest.mark.parametrize(
    ("status_page", "key"),
    [
        ({"commands": True}, "status_page.commands"),
        ({"username": "a"}, "status_page.password"),
        ({"password": "x"}, "status_page.username"),
        ({"username": "a", "password": ""}, "status_page.password"),
        ({"port": 0}, "status_page.port"),
        ({"passwort": "x"}, "status_page.passwort"),
    ],
)
def test_status_page_config_mistakes_name_the_key(status_page: dict, key: str) -> None:
    base = {"site": {"id": "x"}, "upstream": {"url": "ws://a/b", "charge_point_id": "c"}}
    with pytest.raises(ConfigError) as caught:
        parse_config({**base, "status_page": status_page})
    assert [k for k, _ in caught.value.problems] == [key]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("wss://user:secret@csms.example:8443/ocpp/GW?token=abc", "wss://csms.example:8443/ocpp/GW"),
        ("ws://127.0.0.1:9000/ocpp/GW-1", "ws://127.0.0.1:9000/ocpp/GW-1"),
        ("ws://[::1]:9000/ocpp/GW", "ws://[::1]:9000/ocpp/GW"),
    ],
)
def test_the_csms_address_is_shown_without_credentials_or_query(url: str, shown: str) -> None:
    from gateway.app import shown_url

    assert shown_url(url) == shown


def test_a_start_that_waits_for_its_car_says_so() -> None:
    """OCPP calls both Preparing; the page tells a remote start waiting for a car from a car plugged in."""
    clock = StepClock(T0)
    site = Site([Connector(1, "wb-1")], [], clock=clock, policies={1: ConnectorPolicy(AuthPolicy.REMOTE)})
    telemetry = Telemetry(["wb-1"], clock)
    site.apply(ChargerSnapshot("wb-1", 1, Reading(T0, energy_wh=10), VehicleState.A))
    assert site.commands.remote_start(1, "APP-1")
    assert site_picture(site, telemetry, LABELS)["connectors"][0]["status_label"] == "Waiting for the car"
    site.apply(ChargerSnapshot("wb-1", 1, Reading(T0, energy_wh=10), VehicleState.B))
    assert site_picture(site, telemetry, LABELS)["connectors"][0]["status_label"] != "Waiting for the car"


# -- site power sharing -------------------------------------------------------------------------------
def a_shared_site() -> tuple[Site, Telemetry]:
    """Connector 1 charges at 12 A, bound by the fuse (L1 full); connector 2 waits for its turn."""
    site, telemetry = a_site()
    limits = (PhaseLimit(12.0, Reason.FUSE), PhaseLimit(22.5, Reason.FUSE), PhaseLimit(18.0, Reason.SITE_LIMIT))
    shares = {1: ConnectorShare(12.0, Reason.FUSE, drawn_a=11.9), 2: ConnectorShare(0.0, Reason.ROTATION)}
    site.load.set_site_limit(18.0)
    site.load.report(SiteLoad(T0, limits, (33.0, 19.5, 20.0), (12.0, 12.0, 12.0), shares, 40.0, 18.0))
    return site, telemetry


def test_the_picture_carries_the_sharing_with_reasons_in_words() -> None:
    site, telemetry = a_shared_site()
    picture = site_picture(site, telemetry, LABELS)
    json.dumps(picture, allow_nan=False)
    load = picture["site"]["load"]
    assert (load["limit_a"], load["limit_reason"], load["limit_label"]) == (
        12.0,
        "fuse",
        "fuse: the grid connection is full",
    )
    assert load["phase_limit_reasons"] == ["fuse", "fuse", "site_limit"] and load["grid_a"] == [33.0, 19.5, 20.0]
    assert (load["fuse_a"], load["site_limit_a"]) == (40.0, 18.0)
    one, two = picture["connectors"]
    assert (one["share_a"], one["share_reason"], one["share_label"]) == (12.0, "fuse", REASON_LABELS["fuse"])
    assert (two["share_a"], two["share_label"]) == (0.0, "waiting for its turn")


def test_every_reason_has_words_for_people() -> None:
    assert set(REASON_LABELS) == {reason.value for reason in Reason}


def test_the_page_shows_the_limit_its_reason_the_phases_and_each_share() -> None:
    site, telemetry = a_shared_site()
    html = render_page(site_picture(site, telemetry, LABELS))
    assert "id=load" in html and "Power sharing" in html
    assert "12.0 A per phase · fuse: the grid connection is full" in html
    assert "<dt>Main fuse</dt><dd>40.0 A</dd>" in html and "<dt>Site limit (MQTT)</dt><dd>18.0 A</dd>" in html
    assert "<tr><td>L1</td><td>33.0 A</td><td>12.0 A</td><td>12.0 A</td><td class=detail>fuse</td></tr>" in html
    assert "<dt>Share</dt><dd>12.0 A · fuse: the grid connection is full</dd>" in html
    assert "<dt>Share</dt><dd>paused (0 A) · waiting for its turn</dd>" in html


def test_without_sharing_the_page_has_no_sharing_section() -> None:
    site, telemetry = a_site()
    html = render_page(site_picture(site, telemetry, LABELS))
    assert "Power sharing" not in html and "<dt>Share</dt>" not in html
    assert "sharing" not in render(site_picture(site, telemetry, LABELS))  # nor the terminal


def test_the_terminal_shows_the_sharing_as_the_page_does() -> None:
    """``ocpp-gateway status`` and the demo's live table: the limit, why, the fuse and each share."""
    site, telemetry = a_shared_site()
    lines = render(site_picture(site, telemetry, LABELS)).splitlines()
    at = lines.index(
        "  sharing chargers may draw 12.0 A per phase: fuse: the grid connection is full "
        "(main fuse 40 A, site limit 18.0 A)"
    )
    assert lines[at + 1 : at + 3] == [
        "       1   12.0 A  fuse: the grid connection is full",
        "       2   paused  waiting for its turn",
    ]


def test_metrics_of_the_sharing_keep_labels_bounded() -> None:
    site, telemetry = a_shared_site()
    text = render_metrics(telemetry, site_picture(site, telemetry, LABELS))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("ocpp_gateway_site_charging_limit_amperes", (("phase", "L2"),))] == 22.5
    assert samples[("ocpp_gateway_site_charging_limit_source", (("phase", "L3"), ("source", "site_limit")))] == 1
    assert samples[("ocpp_gateway_site_charging_limit_source", (("phase", "L3"), ("source", "fuse")))] == 0
    assert samples[("ocpp_gateway_site_grid_current_amperes", (("phase", "L1"),))] == 33.0
    assert samples[("ocpp_gateway_site_offered_amperes", (("phase", "L3"),))] == 12.0
    assert samples[("ocpp_gateway_site_fuse_amperes", ())] == 40.0
    assert samples[("ocpp_gateway_site_limit_amperes", ())] == 18.0
    assert samples[("ocpp_gateway_connector_share_amperes", (("connector", "2"),))] == 0.0
    assert samples[("ocpp_gateway_connector_share_reason", (("connector", "2"), ("reason", "rotation")))] == 1
    reasons = [k for k in samples if k[0] == "ocpp_gateway_connector_share_reason"]
    assert len(reasons) == 2 * len(Reason)  # a fixed vocabulary per connector
    assert len([k for k in samples if k[0] == "ocpp_gateway_site_charging_limit_source"]) == 3 * 4


def test_without_sharing_no_sharing_series_are_made_up() -> None:
    site, telemetry = a_site()
    text = render_metrics(telemetry, site_picture(site, telemetry, LABELS))
    names = {s.name for family in text_string_to_metric_families(text) for s in family.samples}
    assert not {n for n in names if "_site_" in n or "share" in n}
