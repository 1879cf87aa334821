"""Readiness that tells the truth: what keeps the site from ready, on the page, in the API, in
``ocpp-gateway status`` and in /metrics, without a server (a Site fed as the adapters feed it)."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client.parser import text_string_to_metric_families

from adapters.web.metrics import render_metrics
from adapters.web.page import render_page
from gateway.domain.events import UpstreamStateChanged
from gateway.domain.model import ChargerSnapshot, Connector, DeviceFailed, Meter, MeterSnapshot, Reading, VehicleState
from gateway.services.readiness import STARTUP_GRACE_S, readiness
from gateway.services.site import Site
from gateway.services.site_picture import SiteLabels, site_picture
from gateway.services.telemetry import Telemetry
from gateway.status_text import render
from tests.fixtures.memory_outbox import full_disk_outbox
from tests.fixtures.modbus import StepClock

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
LABELS = SiteLabels("site-1", "Depot", "ws://csms.example/ocpp/GW", "broker:1883")
DEVICES = ["wb-1", "wb-2", "grid"]


def a_site(offline_after: int = 1) -> tuple[Site, Telemetry, StepClock]:
    clock = StepClock(T0)
    connectors = [Connector(1, "wb-1"), Connector(2, "wb-2")]
    site = Site(
        connectors, [Meter("grid", 0)], clock=clock, offline_after_failures=dict.fromkeys(DEVICES, offline_after)
    )
    return site, Telemetry(DEVICES, clock), clock


def answer_all(site: Site, telemetry: Telemetry) -> None:
    for device in ("wb-1", "wb-2"):
        site.apply(ChargerSnapshot(device, 1, Reading(T0, energy_wh=1_000), VehicleState.A))
        telemetry.poll_finished(device, 0.01, ok=True)
    site.apply(MeterSnapshot("grid", Reading(T0, energy_wh=5_000, power_w=100.0)))
    telemetry.poll_finished("grid", 0.01, ok=True)


def fail_all(site: Site, telemetry: Telemetry, times: int = 1) -> None:
    for _ in range(times):
        for device in DEVICES:
            site.apply(DeviceFailed(device, "no answer within 0.3 s", T0))
            telemetry.poll_finished(device, 0.3, ok=False)


def test_everything_working_is_ready_everywhere() -> None:
    site, telemetry, _ = a_site()
    answer_all(site, telemetry)
    site.set_upstream(True, "Accepted")
    telemetry.mqtt_changed(True)
    picture = site_picture(site, telemetry, LABELS)
    assert (picture["ready"], picture["state"], picture["problems"], picture["waiting_for"]) == (True, "ready", [], [])
    assert render(picture).splitlines()[0] == "site site-1 (Depot): ready"
    assert "<span class='badge ok'>ready</span>" in render_page(picture)
    assert gauges(telemetry, picture)["ocpp_gateway_ready"] == 1


def test_with_every_device_the_csms_the_broker_and_the_disk_down_nothing_says_ready() -> None:
    """The case of the issue: it all looked green. Now each reason is on the page, in the API, in
    the terminal and in /metrics."""
    site, telemetry, _ = a_site()
    answer_all(site, telemetry)
    site.set_upstream(True, "Accepted")
    telemetry.mqtt_changed(True)
    fail_all(site, telemetry)
    site.set_upstream(False, "Accepted", "connection lost or unreachable: [Errno 111] Connect call failed")
    telemetry.mqtt_changed(False, "[Errno 111] Connection refused")
    full_disk_outbox(site, T0.isoformat())

    picture = site_picture(site, telemetry, LABELS)
    assert (picture["ready"], picture["state"]) == (False, "degraded")
    messages = [(p["part"], p["message"]) for p in picture["problems"]]
    assert messages[:5] == [
        ("csms", "CSMS not connected: connection lost or unreachable: [Errno 111] Connect call failed"),
        ("device", "device grid not answering: no answer within 0.3 s"),
        ("device", "device wb-1 not answering: no answer within 0.3 s"),
        ("device", "device wb-2 not answering: no answer within 0.3 s"),
        ("mqtt", "MQTT broker not connected: [Errno 111] Connection refused"),
    ]
    assert messages[5][0] == "disk" and "refuses to store billing messages" in messages[5][1]
    assert picture["upstream"]["reason"] == "connection lost or unreachable: [Errno 111] Connect call failed"

    text = render(picture)
    assert text.splitlines()[0] == "site site-1 (Depot): DEGRADED: 6 problem(s)"
    assert "  ! CSMS not connected: connection lost or unreachable: [Errno 111] Connect call failed" in text
    assert "NOT connected (connection lost or unreachable: [Errno 111] Connect call failed), boot Accepted" in text
    html = render_page(picture)
    assert "<span class='badge bad'>degraded</span>" in html
    assert "<p class=fault>device wb-1 not answering: no answer within 0.3 s</p>" in html
    assert html.count("refuses to store billing messages") == 1  # the disk, once: readiness and outbox agree
    samples = gauges(telemetry, picture)
    assert samples["ocpp_gateway_ready"] == 0
    assert (samples["problems/csms"], samples["problems/device"], samples["problems/mqtt"]) == (1, 3, 1)


def test_links_not_heard_from_are_waited_for_in_the_first_minute_then_are_problems() -> None:
    site, telemetry, clock = a_site()
    native = Site([Connector(1, "native-1")], [], clock=clock)  # an OCPP charger: connects, is not polled
    answer_all(site, telemetry)
    health = readiness(site, telemetry, site.backlog, clock.now())
    assert (health.state, health.problems, health.waiting_for) == ("starting", (), ("CSMS", "MQTT broker"))
    assert readiness(native, telemetry, site.backlog, clock.now()).waiting_for == ("CSMS", "native-1", "MQTT broker")

    clock.advance(STARTUP_GRACE_S + 1)
    health = readiness(site, telemetry, site.backlog, clock.now())
    assert health.state == "degraded" and health.waiting_for == ()
    assert [p.message for p in health.problems] == ["CSMS not connected", "MQTT broker not connected"]
    late = readiness(native, telemetry, site.backlog, clock.now())
    assert "charger native-1 has not connected since the gateway started" in [p.message for p in late.problems]


def test_a_csms_that_answers_but_has_not_accepted_the_gateway_is_a_problem() -> None:
    site, telemetry, _ = a_site()
    answer_all(site, telemetry)
    telemetry.mqtt_changed(True)
    site.set_upstream(True, "Pending")
    health = readiness(site, telemetry, site.backlog, T0)
    assert [p.message for p in health.problems] == ["the CSMS has not accepted the gateway (BootNotification Pending)"]


def test_a_device_whose_first_polls_fail_is_not_answering_yet_not_unpolled() -> None:
    """Before ``offline_after_failures`` failed polls a device is not yet lost, but it was polled."""
    site, telemetry, _ = a_site(offline_after=3)
    fail_all(site, telemetry, times=2)
    picture = site_picture(site, telemetry, LABELS)
    wb1 = next(d for d in picture["devices"] if d["device"] == "wb-1")
    assert (wb1["online"], wb1["polls"], wb1["poll_errors"]) == (None, 2, 2)
    assert "wb-1             modbus  NOT answering yet  (2 polls, 2 failed)" in render(picture)
    assert "not polled yet" not in render(picture) and "not polled yet" not in render_page(picture)
    assert "<span class='badge bad'>not answering yet</span>" in render_page(picture)
    assert {"part": "device", "message": "device wb-1 not answering yet (its first 2 polls failed)"} in picture[
        "problems"
    ]
    assert "wb-1" not in picture["waiting_for"]


def test_the_csms_failure_reason_is_kept_while_the_link_is_down() -> None:
    site, _, clock = a_site()
    events = site.subscribe()
    site.set_upstream(False, "none", "refused the connection: HTTP 401 (check upstream.password)")
    assert site.upstream.reason == "refused the connection: HTTP 401 (check upstream.password)"
    assert site.upstream.changed_at is None  # nothing changed but the reason: no new time
    reason = "refused the connection: HTTP 401 (check upstream.password)"
    assert events.get_nowait() == UpstreamStateChanged(False, "none", None, reason)  # told, for MQTT's retained state
    site.set_upstream(False, "none", "connection lost or unreachable: timed out")
    assert events.get_nowait() == UpstreamStateChanged(False, "none", None, "connection lost or unreachable: timed out")
    site.set_upstream(False, "none")  # no reason given: the last one stays, nothing to tell
    site.set_upstream(False, "none", "connection lost or unreachable: timed out")  # the same again: quiet
    assert site.upstream.reason == "connection lost or unreachable: timed out"
    assert events.get_nowait() is None
    clock.advance(5)
    site.set_upstream(True, "none", "ignored while connected")
    assert (site.upstream.connected, site.upstream.reason) == (True, "")
    assert events.get_nowait() == UpstreamStateChanged(True, "none", clock.now())


def test_the_terminal_table_stays_aligned_whatever_a_status_says() -> None:
    site, telemetry, _ = a_site()
    long_name = Site(
        [Connector(1, "carport-left-wallbox-2"), Connector(2, "wb-2")], [Meter("grid", 0)], clock=site.clock
    )
    long_name.apply(
        ChargerSnapshot("carport-left-wallbox-2", 1, Reading(T0, energy_wh=10, power_w=3_680.0), VehicleState.C)
    )
    long_name.apply(DeviceFailed("wb-2", "no answer", T0))  # Faulted: No communication
    long_name.apply(MeterSnapshot("grid", Reading(T0, energy_wh=5_000, power_w=100.0)))
    text = render(site_picture(long_name, telemetry, LABELS))
    table = [line for line in text.splitlines() if line.startswith(("  conn", "     1", "     2", "     -"))]
    assert len(table) == 4 and "Faulted: No communication" in table[2]
    assert "carport-left-wallbox-2" in table[1]
    # every row's columns start where the header's do
    header = table[0]
    power_end = header.index("power") + len("power")
    register_end = header.index("energy register") + len("energy register")
    for row in table[1:]:
        assert row[power_end - 1] in "W-", (row, header)
        assert row[register_end - 2 : register_end] in ("Wh", " -"), (row, header)
    status_at = header.index("status")
    assert table[2][status_at:].startswith("Faulted: No communication  ")
    assert table[3][status_at:].startswith("site meter ")


def gauges(telemetry: Telemetry, picture: dict) -> dict[str, float]:
    """``ocpp_gateway_ready`` and ``ocpp_gateway_problems`` (as ``problems/<part>``) as Prometheus reads them."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(render_metrics(telemetry, picture)):
        for sample in family.samples:
            if sample.name == "ocpp_gateway_ready":
                out[sample.name] = sample.value
            elif sample.name == "ocpp_gateway_problems":
                out[f"problems/{sample.labels['part']}"] = sample.value
    return out
