"""The command line as a user runs it: check-config, run and demo in a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from adapters.demo_csms.csms import DemoCsms
from tests.fixtures.mosquitto import MosquittoBroker, WatchFactory
from tests.fixtures.net import free_port

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "gateway.cli"]


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def shipped_with(replace: dict[str, str]) -> str:
    text = (ROOT / "config.toml").read_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def without_load_management(text: str) -> str:
    """``text`` without its ``[load_management]`` section (the shipped demo site has one): for a
    case about something else that the section would get in the way of, or a site that shares nothing."""
    section = re.compile(r"^\[load_management\]\n(?:[^\[\n].*\n)*", re.MULTILINE)
    text, found = section.subn("", text)
    assert found == 1, "no [load_management] section"
    tomllib.loads(text)
    return text


def test_check_config_prints_a_summary_of_the_shipped_config() -> None:
    result = run_cli("check-config", "config.toml")
    assert result.returncode == 0, result.stderr
    assert "config.toml: OK" in result.stdout
    assert "ws://127.0.0.1:9000/ocpp/GW-DEMO-01" in result.stdout
    assert "carport-left socket 1  (bender-cc613" in result.stdout
    assert "site-meter  (eastron-sdm630, 127.0.0.1:15020): site meter, upstream connector 0" in result.stdout


def test_check_config_tells_how_the_chargers_share_and_what_each_does_if_the_gateway_stops(tmp_path: Path) -> None:
    """The shipped demo site manages its load; the same site without the section shares nothing."""
    shipped = run_cli("check-config", "config.toml")
    assert shipped.returncode == 0, shipped.stderr
    assert "load       grid meter site-meter: fuse 25 A, margin 2 A, fallback 12 A per phase" in shipped.stdout
    assert "carport-left: bender-cc613 has no watchdog the gateway feeds" in shipped.stdout
    path = write_config(tmp_path / "site.toml", without_load_management(shipped_with({})))
    unmanaged = run_cli("check-config", str(path))
    assert unmanaged.returncode == 0, unmanaged.stderr
    assert "load       not managed" in unmanaged.stdout


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {'profile = "eastron-sdm630"': 'profile = "eastron-sdm120"'},
            "load_management.grid_meter: the grid meter 'site-meter' (eastron-sdm120) measures current on 1 phase(s)",
        ),
        (
            {"fallback_a = 12 ": "fallback_a = 24 "},
            "load_management: fallback_a (24 A) must not be above fuse_a - margin_a (23 A)",
        ),
        (
            {'[load_management]\ngrid_meter = "site-meter"': '[load_management]\ngrid_meter = "grid"'},
            "load_management.grid_meter: no [[meters]] named 'grid' (meters: site-meter)",
        ),
        (
            {"connectors = [2]\npoll_interval_s": 'connectors = [2]\ngrid_phases = ["L2", "L2"]\npoll_interval_s'},
            "chargers[1].grid_phases: a grid phase appears twice in ['L2', 'L2']",
        ),
    ],
)
def test_bad_load_management_names_the_key(tmp_path: Path, change: dict, expected: str) -> None:
    result = run_cli("check-config", str(write_config(tmp_path / "site.toml", shipped_with(change))))
    assert result.returncode == 2
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"port = 15021": 'port = "fifteen"'}, "chargers[0].port: Input should be a valid integer"),
        (
            {"poll_interval_s = 1.0\n\n[[chargers]]": "poll_intervall_s = 1.0\n\n[[chargers]]"},
            "chargers[0].poll_intervall_s: unknown key",
        ),
        (
            {'profile = "bender-cc613"': 'profile = "bender-cc6133"'},
            "chargers[0].profile: no profile named 'bender-cc6133'",
        ),
        ({"connectors = [2]": "connectors = [1]"}, "chargers[1].connectors[0]: duplicate connector number 1"),
        (
            {'profile = "eastron-sdm630"': 'profile = "phoenix-ev-eth"'},
            "'phoenix-ev-eth' is a charger profile, not a meter",
        ),
    ],
)
@pytest.mark.parametrize("command", ["check-config", "run"])
def test_bad_config_names_the_key_and_exits_2(tmp_path: Path, command: str, change: dict, expected: str) -> None:
    path = write_config(tmp_path / "site.toml", shipped_with(change))
    args = [command, str(path)] if command == "check-config" else [command, "--config", str(path)]
    result = run_cli(*args)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_missing_config_file(tmp_path: Path) -> None:
    result = run_cli("check-config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "cannot read the file" in result.stderr


def demo_config(
    tmp_path: Path, csms_port: int, mqtt_port: int, page_port: int | None = None, more: dict[str, str] | None = None
) -> Path:
    """The shipped demo site on free ports (the status page on ``page_port`` if given), with ``more`` changes."""
    text = shipped_with(
        {
            "port = 15020": f"port = {free_port()}",
            "port = 15021": f"port = {free_port()}",
            "port = 15022": f"port = {free_port()}",
            "127.0.0.1:9000": f"127.0.0.1:{csms_port}",
            "port = 1883": f"port = {mqtt_port}",
            "meter_value_sample_interval_s = 10": "meter_value_sample_interval_s = 1",
            "port = 8080": f"port = {page_port or free_port()}",
            **(more or {}),
        }
    )
    tomllib.loads(text)
    return write_config(tmp_path / "demo.toml", text)


def test_demo_runs_the_simulated_site_with_an_embedded_broker(tmp_path: Path) -> None:
    path = demo_config(tmp_path, free_port(), free_port())  # nothing answers on the MQTT port
    # the first car plugs in after 1 s and starts charging 5 to 6 s later (the script is seeded)
    result = run_cli("demo", "--config", str(path), "--duration", "10", timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    last_table = result.stdout.rsplit("ocpp-gateway demo: status page", 1)[-1]
    assert "(embedded broker)" in last_table
    assert "(built-in demo CSMS (OCPP 1.6)): connected, boot Accepted" in last_table
    assert "Charging" in last_table  # the scripted cars plug in and charge within a few seconds
    assert "  sharing chargers may draw " in last_table and "(main fuse 25 A)" in last_table  # it manages its load
    assert "Traceback" not in result.stderr


def test_demo_speaks_ocpp_2_0_1_with_its_built_in_csms(tmp_path: Path) -> None:
    """``--ocpp-version 2.0.1``: the site is one 2.0.1 charging station, and the built-in CSMS
    (the ``ocpp`` library's v201, schema validation on) speaks it too."""
    path = demo_config(tmp_path, free_port(), free_port())
    result = run_cli("demo", "--config", str(path), "--ocpp-version", "2.0.1", "--duration", "10", timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    last_table = result.stdout.rsplit("ocpp-gateway demo: status page", 1)[-1]
    assert "(built-in demo CSMS (OCPP 2.0.1)): connected, boot Accepted" in last_table
    assert "Charging" in last_table
    assert "TransactionEvent Started" in result.stdout + result.stderr  # the CSMS's log line under the table
    assert "Traceback" not in result.stderr


async def demo_against(
    path: Path, csms: DemoCsms, mosquitto: MosquittoBroker, duration_s: int
) -> asyncio.subprocess.Process:
    """``ocpp-gateway demo`` on ``path`` against an external CSMS and broker, its output piped."""
    return await asyncio.create_subprocess_exec(
        *CLI,
        "demo",
        "--config",
        str(path),
        "--csms-url",
        csms.url,
        "--mqtt",
        f"{mosquitto.host}:{mosquitto.port}",
        "--duration",
        str(duration_s),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_demo_against_an_external_csms_and_broker(
    tmp_path: Path, csms: DemoCsms, mosquitto: MosquittoBroker
) -> None:
    path = demo_config(tmp_path, free_port(), free_port())
    process = await demo_against(path, csms, mosquitto, duration_s=6)
    try:
        boot = await csms.wait_for("BootNotification", timeout=20)
        assert boot["chargePointVendor"] == "ocpp-gateway"
        await csms.wait_for("MeterValues", lambda p: p["connectorId"] == 0, timeout=20)
    finally:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert f"MQTT    {mosquitto.host}:{mosquitto.port} (external broker): connected" in stdout.decode()


def both_cars_share_the_fuse(load: dict[str, Any], fuse_a: float, margin_a: float) -> bool:
    """Two connectors in a session, each bound by the fuse at 6 A or more and drawing (a car
    charges), together offered no more than the limit, and the grid under fuse - margin."""
    shares = load["shares"]
    return (
        load["limit_reason"] == "fuse"
        and load["fuse_a"] == fuse_a
        and len(shares) == 2
        and all(s["reason"] == "fuse" and s["current_a"] >= 6 and (s["drawn_a"] or 0) >= 2 for s in shares)
        and all(o <= limit + 0.05 for o, limit in zip(load["offered_a"], load["phase_limits_a"], strict=True))
        and all(g <= fuse_a - margin_a for g in load["grid_a"])
    )


async def page_get(page_port: int, path: str) -> bytes:
    """The body of ``GET path`` on the demo's status page (which must answer 200)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", page_port)
    writer.write(f"GET {path} HTTP/1.0\r\n\r\n".encode())
    answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == b"200", head
    return body


async def test_the_demo_site_shares_its_fuse_while_both_cars_charge(
    tmp_path: Path, csms: DemoCsms, mosquitto: MosquittoBroker, mqtt_watch: WatchFactory, topic_prefix: str
) -> None:
    """The shipped demo site manages its load, and its cars want more than the fuse leaves after the
    building: when both charge they share it (reason fuse), and MQTT's site/state, /api/status and
    the status page say so while both cars still charge."""
    section = tomllib.loads((ROOT / "config.toml").read_text())["load_management"]
    fuse_a, margin_a = float(section["fuse_a"]), float(section["margin_a"])
    page = free_port()
    prefix = '# topic_prefix = "ocpp-gateway/demo-site"   # the default'
    path = demo_config(tmp_path, free_port(), free_port(), page, {prefix: f'topic_prefix = "{topic_prefix}"'})
    watcher = await mqtt_watch(f"{topic_prefix}/#")
    # 120 s is a deadline: the test stops it (Ctrl-C) once it has seen what it waits for
    process = await demo_against(path, csms, mosquitto, duration_s=120)
    try:
        # the first car charges after 5 to 8 s, the second 6 s later: both within a minute
        state = await watcher.wait_for(
            f"{topic_prefix}/site/state",
            lambda m: both_cars_share_the_fuse(m.json()["load"], fuse_a, margin_a),
            timeout=60,
        )
        assert state.json()["load"]["grid_a"] is not None  # the site meter is read, not the fallback
        async with asyncio.timeout(30):
            while True:  # the page is read afresh until it shows the same (it is the same decision)
                picture = json.loads(await page_get(page, "/api/status"))
                if both_cars_share_the_fuse(picture["site"]["load"], fuse_a, margin_a):
                    break
                await asyncio.sleep(0.2)
        assert picture["site"]["load"]["limit_label"] == "fuse: the grid connection is full"
        assert {c["share_label"] for c in picture["connectors"]} == {"fuse: the grid connection is full"}
        assert {c["status"] for c in picture["connectors"]} == {"charging"}
        html = (await page_get(page, "/")).decode()
        assert "Power sharing" in html and f"<dt>Main fuse</dt><dd>{fuse_a:.1f} A</dd>" in html
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C, as the demo's table says
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert "Traceback" not in stderr.decode()
    assert "  sharing chargers may draw " in stdout.decode()


async def polls_failed(port: int, device: str, at_least: int, timeout_s: float = 15.0) -> None:
    """Wait until the gateway's /metrics counts ``at_least`` failed polls of ``device``."""
    line = f'ocpp_gateway_poll_errors_total{{device="{device}"}} '
    async with asyncio.timeout(timeout_s):
        for _ in range(int(timeout_s / 0.2) + 1):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /metrics HTTP/1.0\r\n\r\n")
            text = (await reader.read()).decode()
            writer.close()
            count = next((int(row.removeprefix(line)) for row in text.splitlines() if row.startswith(line)), 0)
            if count >= at_least:
                return
            await asyncio.sleep(0.2)  # failed polls come every 0.2 s, then backing off


async def test_run_logs_a_lost_device_once_and_stops_cleanly_on_sigterm(
    tmp_path: Path, csms: DemoCsms, mosquitto: MosquittoBroker
) -> None:
    """A fresh box whose charger does not answer: one line for it, however many polls fail (no
    library warning per poll, no warning about state a fresh box cannot have); then SIGTERM, as
    systemctl stop and docker stop send, ends it as Ctrl-C does."""
    state, page = tmp_path / "state", free_port()
    config = write_config(
        tmp_path / "site.toml",
        f'[site]\nid = "term"\nstate_dir = "{state}"\n'
        f'[upstream]\nurl = "{csms.url}"\ncharge_point_id = "GW-TERM"\n'
        f'[mqtt]\nhost = "{mosquitto.host}"\nport = {mosquitto.port}\n'
        f"[status_page]\nport = {page}\n"
        f'[[chargers]]\nname = "gone"\nprofile = "phoenix-ev-eth"\nhost = "127.0.0.1"\nport = {free_port()}\n'
        "connectors = [1]\npoll_interval_s = 0.2\ntimeout_s = 0.2\n",
    )
    process = await asyncio.create_subprocess_exec(
        *CLI,
        "run",
        "--config",
        str(config),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 1 and p["status"] == "Faulted", 20)
        await polls_failed(page, "gone", 5)  # lost after 3; then more, with backoff
    finally:
        process.terminate()  # SIGTERM, as systemctl stop and docker stop send
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    log = stderr.decode()
    assert process.returncode == 0, log[-2000:]
    assert "Traceback" not in log
    assert log.count("device gone failed:") == 1 and "pymodbus" not in log, log
    assert "WARNING" not in log.replace("WARNING gateway.services.site: device gone failed", "").replace(
        "WARNING gateway.services.site: connector 1 fault raised", ""
    ).replace("WARNING adapters.ocpp_upstream", ""), log
    settings = json.loads((state / "settings.json").read_text())
    assert settings["clean_shutdown"] is True  # open sessions end as Reboot at the next start, not PowerLoss
