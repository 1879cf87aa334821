"""The status page, its API, /healthz and /metrics on a whole running gateway.

Modbus simulators, the gateway, a CSMS on the ocpp library and Mosquitto, all real, on loopback;
the page is read over HTTP as a browser or a monitoring system would.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.demo_csms.csms import DemoCsms
from gateway.domain.model import FaultKind
from tests.fixtures.mosquitto import MosquittoBroker
from tests.fixtures.net import free_port
from tests.fixtures.status_site import PASSWORD, USER, Running, authorization, running_gateway, until

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def gateway(tmp_path: Path, csms: DemoCsms, mosquitto: MosquittoBroker) -> AsyncIterator[Running]:
    async with running_gateway(tmp_path, csms.url, mosquitto, {}) as running:
        telemetry = running.gateway.telemetry
        await until(
            running.site, lambda: telemetry.ready and running.site.upstream.connected and telemetry.mqtt.connected
        )
        # the statuses of connectors 0, 1 and 2 have been answered
        await until(running.site, lambda: telemetry.messages_sent["StatusNotification"] >= 3)
        yield running


async def get(url: str, auth: tuple[str, str] | None = None, **headers: str) -> tuple[int, dict[str, str], str]:
    basic = authorization(auth)
    async with aiohttp.ClientSession() as http, http.get(url, headers={**basic, **headers}) as answer:
        return answer.status, dict(answer.headers), await answer.text()


async def post(url: str, body: str, auth: tuple[str, str] | None, content_type: str = "application/json") -> int:
    basic = authorization(auth)
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=body, headers={**basic, "Content-Type": content_type}) as answer,
    ):
        return answer.status


async def picture(url: str, auth: tuple[str, str] | None = None) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        basic = authorization(auth)
        async with http.get(f"{url}/api/status", headers=basic) as answer:
            assert answer.status == 200
            return dict(await answer.json())


async def cli(*args: str) -> tuple[int, str, str]:
    """``ocpp-gateway ARGS`` in a subprocess, as a user runs it: exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "gateway.cli", *args),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page, parsed by Prometheus' own client library."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_the_api_shows_every_connector_device_and_link(gateway: Running, csms: DemoCsms) -> None:
    right = gateway.site.connectors[2]
    gateway.right.plug_in()
    gateway.meter.set("power_w", 9_100.0)
    await csms.wait_for("StartTransaction", lambda p: p["connectorId"] == 2, timeout=10)
    await until(gateway.site, lambda: right.session is not None and right.session.transaction_id is not None)
    gateway.right.start_charging(7_400)
    gateway.right.tick(360)  # six minutes of charging on the simulated register (one plausible step)
    await until(gateway.site, lambda: right.reading is not None and right.reading.energy_wh == 2_000_740)

    state = await picture(gateway.url)
    assert state["site"]["id"] == "page" and state["site"]["name"] == "Garage <Nord>"
    assert state["ready"] is True and state["waiting_for"] == []
    one, two = state["connectors"]
    assert (two["connector_id"], two["device"], two["status"], two["status_label"]) == (
        2,
        "right",
        "charging",
        "Charging",
    )
    assert two["power_w"] == 7_400 and two["ocpp_status"] == "Charging"
    assert two["billing_energy_wh"] == 2_000_740 and two["session_energy_wh"] == 740
    assert two["id_tag"] != "PAGE-FREE-TAG" and two["id_tag"].endswith("TAG")  # masked, never the whole tag
    assert two["transaction_id"] is not None
    assert (one["connector_id"], one["status"]) == (1, "available")
    assert state["meters"][0]["meter"] == "grid" and state["meters"][0]["power_w"] == pytest.approx(9_100.0)
    assert {d["device"]: (d["kind"], d["online"]) for d in state["devices"]} == {
        "left": ("modbus", True),
        "right": ("modbus", True),
        "grid": ("modbus", True),
    }
    assert all(d["polls"] >= 1 and d["poll_errors"] == 0 for d in state["devices"])
    assert state["upstream"]["connected"] is True and state["upstream"]["registration"] == "Accepted"
    assert state["upstream"]["endpoint"].endswith("/GW-PAGE")
    assert state["mqtt"]["connected"] is True
    assert state["outbox"]["records"] == 0
    assert state["commands"] is False
    assert (state["state"], state["problems"], state["upstream"]["reason"]) == ("ready", [], None)
    assert (await get(f"{gateway.url}/readyz"))[0] == 200


async def test_faults_and_lost_devices_are_shown_and_counted(gateway: Running) -> None:
    site = gateway.site
    gateway.right.raise_fault(FaultKind.OVER_CURRENT)
    await until(site, lambda: any(f.kind is FaultKind.OVER_CURRENT for f in site.connectors[2].faults))
    gateway.left.stall()  # the charger stops answering: timeouts
    await until(site, lambda: site.device_online("left") is False)

    state = await picture(gateway.url)
    one, two = state["connectors"]
    assert two["status"] == "faulted" and [f["label"] for f in two["faults"]] == ["Over-current"]
    assert two["ocpp_error_code"] == "OverCurrentFailure"
    assert one["status"] == "faulted" and [f["kind"] for f in one["faults"]] == ["communication_lost"]
    left = next(d for d in state["devices"] if d["device"] == "left")
    assert left["online"] is False and left["reason"] and left["poll_errors"] >= 1

    status, headers, text = await get(f"{gateway.url}/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = metrics(text)
    assert samples[("ocpp_gateway_poll_errors_total", (("device", "left"),))] >= 1
    assert samples[("ocpp_gateway_poll_errors_total", (("device", "right"),))] == 0
    assert samples[("ocpp_gateway_device_online", (("device", "left"), ("kind", "modbus")))] == 0
    assert samples[("ocpp_gateway_device_online", (("device", "right"), ("kind", "modbus")))] == 1
    assert samples[("ocpp_gateway_connector_status", (("connector", "2"), ("status", "faulted")))] == 1
    assert samples[("ocpp_gateway_connector_status", (("connector", "2"), ("status", "available")))] == 0
    assert samples[("ocpp_gateway_connector_faults", (("connector", "2"),))] == 1

    status, _, html = await get(gateway.url + "/")
    assert status == 200
    assert "Over-current" in html and "No communication" in html
    gateway.left.resume()


async def test_metrics_count_polls_messages_and_the_links(gateway: Running, csms: DemoCsms) -> None:
    await csms.wait_for("StatusNotification", timeout=10)
    status, _, text = await get(f"{gateway.url}/metrics")
    assert status == 200
    samples = metrics(text)
    polls = samples[("ocpp_gateway_poll_duration_seconds_count", (("device", "left"),))]
    assert polls >= 1
    assert samples[("ocpp_gateway_poll_duration_seconds_bucket", (("device", "left"), ("le", "+Inf")))] == polls
    assert 0 < samples[("ocpp_gateway_poll_duration_seconds_sum", (("device", "left"),))] < polls * 0.3
    assert samples[("ocpp_gateway_upstream_connected", ())] == 1
    assert samples[("ocpp_gateway_mqtt_connected", ())] == 1
    assert samples[("ocpp_gateway_ready", ())] == 1
    assert samples[("ocpp_gateway_upstream_messages_sent_total", (("action", "BootNotification"),))] == 1
    assert samples[("ocpp_gateway_upstream_messages_sent_total", (("action", "StatusNotification"),))] >= 3
    assert samples[("ocpp_gateway_outbox_records", ())] == 0
    assert samples[("ocpp_gateway_outbox_oldest_age_seconds", ())] == 0


async def test_messages_the_csms_refuses_are_counted_as_failed(
    tmp_path: Path, mosquitto: MosquittoBroker, csms: DemoCsms
) -> None:
    csms.failing.add("StatusNotification")  # answered with a CALLERROR
    async with running_gateway(tmp_path, csms.url, mosquitto, {}) as running:
        await until(running.site, lambda: running.gateway.telemetry.messages_failed)
        _, _, text = await get(f"{running.url}/metrics")
        samples = metrics(text)
        refused = (("action", "StatusNotification"), ("reason", "callerror"))
        assert samples[("ocpp_gateway_upstream_messages_failed_total", refused)] >= 1
        assert samples[("ocpp_gateway_upstream_messages_sent_total", (("action", "BootNotification"),))] == 1
        assert ("ocpp_gateway_upstream_messages_sent_total", (("action", "StatusNotification"),)) not in samples


async def test_readyz_waits_for_every_part_while_healthz_says_the_process_lives(
    tmp_path: Path, mosquitto: MosquittoBroker, csms: DemoCsms
) -> None:
    async with running_gateway(tmp_path, csms.url, mosquitto, {}, start=False) as running:
        page = running.gateway.status_page
        assert page is not None
        await page.start()  # listening, no device polled, no link up yet
        try:
            status, _, text = await get(f"{running.url}/healthz")
            assert (status, json.loads(text)) == (200, {"alive": True})  # liveness: the loop answers
            status, _, text = await get(f"{running.url}/readyz")
            assert status == 503
            assert json.loads(text) == {
                "ready": False,
                "state": "starting",
                "problems": [],
                "waiting_for": ["CSMS", "grid", "left", "right", "MQTT broker"],
            }
            state = await picture(running.url)
            assert state["ready"] is False and state["devices"][0]["online"] is None
            task = asyncio.create_task(running.gateway.run())
            try:
                telemetry, site = running.gateway.telemetry, running.site
                await until(site, lambda: telemetry.ready and site.upstream.registration == "Accepted")
                await until(site, lambda: telemetry.mqtt.connected)
                status, _, text = await get(f"{running.url}/readyz")
                assert (status, json.loads(text)) == (
                    200,
                    {"ready": True, "state": "ready", "problems": [], "waiting_for": []},
                )
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        finally:
            await page.stop()


@pytest.mark.parametrize("path", ["/nope", "/api", "/api/status/", "/metrics/x", "/../etc/passwd", "/index.html"])
async def test_unknown_paths_are_404_and_nothing_else(gateway: Running, path: str) -> None:
    status, _, _ = await get(gateway.url + path)
    assert status == 404


async def test_commands_are_not_served_unless_switched_on(gateway: Running) -> None:
    gateway.left.plug_in()
    await until(gateway.site, lambda: gateway.site.connectors[1].session_active)
    assert await post(f"{gateway.url}/api/connectors/1/stop", "{}", None) == 404
    assert await post(f"{gateway.url}/api/connectors/1/availability", '{"available": false}', None) == 404
    assert gateway.site.connectors[1].session_active and gateway.site.connectors[1].available
    _, _, html = await get(gateway.url + "/")
    assert "<button" not in html and "<script>" not in html


async def test_basic_auth_guards_everything_but_healthz(
    tmp_path: Path, mosquitto: MosquittoBroker, csms: DemoCsms
) -> None:
    async with running_gateway(tmp_path, csms.url, mosquitto, {"username": USER, "password": PASSWORD}) as running:
        for path in ("/", "/api/status", "/metrics"):
            status, headers, text = await get(running.url + path)
            assert status == 401 and headers["WWW-Authenticate"].startswith("Basic realm=")
            assert "Garage" not in text
            assert (await get(running.url + path, (USER, "wrong")))[0] == 401
            assert (await get(running.url + path, ("intruder", PASSWORD)))[0] == 401
            assert (await get(running.url + path, (USER, PASSWORD)))[0] == 200
        garbled = {"Authorization": "Basic !!!not-base64"}
        assert (await get(running.url + "/api/status", **garbled))[0] == 401
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        assert (await get(running.url + "/api/status", Authorization=f"Bearer {token}"))[0] == 401
        assert (await get(running.url + "/healthz"))[0] == 200  # open to health checks
        running.left.stall()
        await until(running.site, lambda: running.site.device_online("left") is False)
        status, _, text = await get(running.url + "/readyz")  # open too, but its reasons only with the password
        assert status == 503 and {"part": "device"} in json.loads(text)["problems"] and "left" not in text
        status, _, text = await get(running.url + "/readyz", (USER, PASSWORD))
        assert status == 503 and "device left not answering" in text
        running.left.resume()
        assert (await get(running.url + "/nope"))[0] == 404


async def test_commands_need_auth_and_json_then_stop_a_session_and_switch_availability(
    tmp_path: Path, mosquitto: MosquittoBroker, csms: DemoCsms
) -> None:
    settings = {"username": USER, "password": PASSWORD, "commands": True}
    async with running_gateway(tmp_path, csms.url, mosquitto, settings) as running:
        site = running.site
        await until(site, lambda: running.gateway.telemetry.ready and site.upstream.connected)
        running.left.plug_in()
        await until(site, lambda: site.connectors[1].session_active)
        stop = f"{running.url}/api/connectors/1/stop"
        assert await post(stop, "{}", None) == 401
        assert await post(stop, "{}", (USER, "wrong")) == 401
        assert await post(stop, "a=1", (USER, PASSWORD), "application/x-www-form-urlencoded") == 415
        assert await post(f"{running.url}/api/connectors/9/stop", "{}", (USER, PASSWORD)) == 404
        assert site.connectors[1].session_active  # none of that changed anything
        _, _, html = await get(running.url + "/", (USER, PASSWORD))
        assert "Stop session" in html and "Take out of service" in html

        assert await post(stop, "{}", (USER, PASSWORD)) == 200
        stopped = await csms.wait_for("StopTransaction", timeout=10)
        assert stopped["reason"] == "Local"
        assert await post(stop, "{}", (USER, PASSWORD)) == 409  # nothing left to stop

        availability = f"{running.url}/api/connectors/2/availability"
        assert await post(availability, '{"available": "no"}', (USER, PASSWORD)) == 400
        assert await post(availability, "not json", (USER, PASSWORD)) == 400
        assert await post(availability, '{"available": false}', (USER, PASSWORD)) == 200
        await until(site, lambda: site.connectors[2].status.value == "unavailable")
        await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 2 and p["status"] == "Unavailable")


async def test_a_taken_port_is_one_error_naming_the_key_and_the_gateway_works_on(
    tmp_path: Path, mosquitto: MosquittoBroker, csms: DemoCsms, caplog: pytest.LogCaptureFixture
) -> None:
    """The page is for watching: a port someone else holds must not stop billing (nor, under
    systemd's RestartPreventExitStatus=2, keep the gateway down); the page comes once it is free."""
    caplog.set_level(logging.INFO)
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    port = held.getsockname()[1]
    async with running_gateway(tmp_path, csms.url, mosquitto, {"port": port}, start=False) as running:
        page, site = running.gateway.status_page, running.site
        assert page is not None
        page.retry_s = 0.2
        task = asyncio.create_task(running.gateway.run())
        try:
            await csms.wait_for("BootNotification", timeout=20)  # the real work goes on
            await until(site, lambda: running.gateway.telemetry.ready)
            errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
            assert len(errors) == 1 and errors[0].startswith(f"status_page.port: cannot listen on 127.0.0.1:{port}")
            held.close()
            await until(site, lambda: page.port == port)
            assert (await get(f"{running.url}/healthz"))[0] == 200
            assert sum(r.levelno == logging.ERROR for r in caplog.records) == 1  # one line, however many attempts
        finally:
            held.close()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_with_devices_csms_and_broker_unreachable_nothing_says_ready_and_each_reason_shows(
    tmp_path: Path,
) -> None:
    """Every device stalls, nothing listens where the CSMS and the broker should be: /healthz is
    still 200 (the process lives), but /readyz, the page, the API and ``ocpp-gateway status`` say
    degraded and why, the CSMS's reason included (after its first WARNING it was in DEBUG only)."""
    nobody = SimpleNamespace(host="127.0.0.1", port=free_port())  # no broker there
    csms_url = f"ws://127.0.0.1:{free_port()}/ocpp"  # no CSMS there
    async with running_gateway(tmp_path, csms_url, nobody, {}, start=False) as running:  # type: ignore[arg-type]
        site = running.site
        for sim in (running.left, running.right, running.meter):
            sim.stall()
        task = asyncio.create_task(running.gateway.run())
        try:
            page = running.gateway.status_page
            assert page is not None
            await until(site, lambda: page.port is not None)
            await until(site, lambda: all(site.device_online(d) is False for d in ("left", "right", "grid")))
            await until(site, lambda: bool(site.upstream.reason) and bool(running.gateway.telemetry.mqtt.reason))

            status, _, text = await get(f"{running.url}/healthz")
            assert (status, json.loads(text)) == (200, {"alive": True})
            status, _, text = await get(f"{running.url}/readyz")
            ready = json.loads(text)
            assert status == 503 and (ready["ready"], ready["state"]) == (False, "degraded")
            messages = {p["message"] for p in ready["problems"]}
            parts = [p["part"] for p in ready["problems"]]
            assert parts == ["csms", "device", "device", "device", "mqtt"]
            assert any(m.startswith("CSMS not connected: connection lost or unreachable: ") for m in messages)
            assert {"device grid not answering", "device left not answering", "device right not answering"} <= {
                m.split(":")[0] for m in messages
            }
            assert any(m.startswith("MQTT broker not connected: ") for m in messages)

            state = await picture(running.url)
            assert state["state"] == "degraded" and state["ready"] is False
            assert state["upstream"]["reason"].startswith("connection lost or unreachable: ")
            _, _, html = await get(running.url + "/")
            assert "<span class='badge bad'>degraded</span>" in html and "connection lost or unreachable" in html

            config = tmp_path / "site.toml"
            config.write_text(
                f'[site]\nid = "page"\n[upstream]\nurl = "ws://127.0.0.1:9"\ncharge_point_id = "X"\n'
                f"[status_page]\nport = {page.port}\n"
            )
            code, out, err = await cli("status", "--config", str(config))
            assert code == 0, err
            first = out.splitlines()[0]
            assert first == "site page (Garage <Nord>): DEGRADED: 5 problem(s)", out
            assert "  ! CSMS not connected: connection lost or unreachable: " in out
            assert ": NOT connected (connection lost or unreachable: " in out
            _, _, text = await get(f"{running.url}/metrics")
            assert metrics(text)[("ocpp_gateway_ready", ())] == 0
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_status_command_prints_the_picture_from_the_api(
    tmp_path: Path, mosquitto: MosquittoBroker, csms: DemoCsms
) -> None:
    settings = {"username": USER, "password": PASSWORD}
    async with running_gateway(tmp_path, csms.url, mosquitto, settings) as running:
        site = running.site
        running.right.raise_fault(FaultKind.GROUND_FAULT)
        await until(site, lambda: running.gateway.telemetry.ready and site.connectors[2].faults != ())
        port = running.url.rsplit(":", 1)[1]
        config = tmp_path / "site.toml"
        config.write_text(
            '[site]\nid = "page"\n[upstream]\nurl = "ws://127.0.0.1:9"\ncharge_point_id = "X"\n'
            f'[status_page]\nport = {port}\nusername = "{USER}"\npassword = "{PASSWORD}"\n'
        )
        code, text, err = await cli("status", "--config", str(config))
        assert code == 0, err
        assert "site page (Garage <Nord>): ready" in text
        assert "CSMS    ws://" in text and ": connected, boot Accepted" in text
        lines = {line.split()[0]: line for line in text.splitlines() if line.strip()[:1].isdigit()}
        assert "left" in lines["1"] and "Available" in lines["1"]
        assert "right" in lines["2"] and "Faulted: Earth fault" in lines["2"]
        assert PASSWORD not in text

        wrong = config.read_text().replace(PASSWORD, "nope")
        config.write_text(wrong)
        code, _, err = await cli("status", "--config", str(config))
        assert code == 1
        assert "refused the user name and password" in err and "Traceback" not in err


def test_status_command_says_plainly_when_no_gateway_answers(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "status", "--config", str(tmp_path / "none.toml"), "--url", url],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 1
    assert f"cannot reach the status page at {url}" in result.stderr and "is the gateway running?" in result.stderr
    assert "Traceback" not in result.stderr
