"""The command line as a user runs it: check-config, run and demo in a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from adapters.demo_csms.csms import DemoCsms
from tests.fixtures.mosquitto import MosquittoBroker
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


def test_check_config_prints_a_summary_of_the_shipped_config() -> None:
    result = run_cli("check-config", "config.toml")
    assert result.returncode == 0, result.stderr
    assert "config.toml: OK" in result.stdout
    assert "ws://127.0.0.1:9000/ocpp/GW-DEMO-01" in result.stdout
    assert "carport-left socket 1  (bender-cc613" in result.stdout
    assert "site-meter  (eastron-sdm630, 127.0.0.1:15020): site meter, upstream connector 0" in result.stdout


# the shipped config's commented [load_management] section, switched on
LOAD_MANAGEMENT = {
    '# [load_management]\n# grid_meter = "site-meter"': '[load_management]\ngrid_meter = "site-meter"',
    "# fuse_a = 63": "fuse_a = 63",
    "# margin_a = 2 ": "margin_a = 2 ",
    "# fallback_a = 16": "fallback_a = 16",
}


def test_check_config_tells_how_the_chargers_share_and_what_each_does_if_the_gateway_stops(tmp_path: Path) -> None:
    path = write_config(tmp_path / "site.toml", shipped_with(LOAD_MANAGEMENT))
    result = run_cli("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert "load       grid meter site-meter: fuse 63 A, margin 2 A, fallback 16 A per phase" in result.stdout
    assert "carport-left: bender-cc613 has no watchdog the gateway feeds" in result.stdout
    shipped = run_cli("check-config", "config.toml")
    assert "load       not managed" in shipped.stdout


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {**LOAD_MANAGEMENT, 'profile = "eastron-sdm630"': 'profile = "eastron-sdm120"'},
            "load_management.grid_meter: the grid meter 'site-meter' (eastron-sdm120) measures current on 1 phase(s)",
        ),
        (
            {**LOAD_MANAGEMENT, "fallback_a = 16": "fallback_a = 62"},
            "load_management: fallback_a (62 A) must not be above fuse_a - margin_a (61 A)",
        ),
        (
            {
                **LOAD_MANAGEMENT,
                '[load_management]\ngrid_meter = "site-meter"': '[load_management]\ngrid_meter = "grid"',
            },
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


def demo_config(tmp_path: Path, csms_port: int, mqtt_port: int) -> Path:
    text = shipped_with(
        {
            "port = 15020": f"port = {free_port()}",
            "port = 15021": f"port = {free_port()}",
            "port = 15022": f"port = {free_port()}",
            "127.0.0.1:9000": f"127.0.0.1:{csms_port}",
            "port = 1883": f"port = {mqtt_port}",
            "meter_value_sample_interval_s = 10": "meter_value_sample_interval_s = 1",
            "port = 8080": f"port = {free_port()}",
        }
    )
    tomllib.loads(text)
    return write_config(tmp_path / "demo.toml", text)


def test_demo_runs_the_simulated_site_with_an_embedded_broker(tmp_path: Path) -> None:
    path = demo_config(tmp_path, free_port(), free_port())  # nothing answers on the MQTT port
    result = run_cli("demo", "--config", str(path), "--duration", "8", timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    last_table = result.stdout.rsplit("ocpp-gateway demo: status page", 1)[-1]
    assert "(embedded broker)" in last_table
    assert "(built-in demo CSMS): connected, boot Accepted" in last_table
    assert "Charging" in last_table  # the scripted cars plug in and charge within a few seconds
    assert "Traceback" not in result.stderr


async def test_demo_against_an_external_csms_and_broker(
    tmp_path: Path, csms: DemoCsms, mosquitto: MosquittoBroker
) -> None:
    path = demo_config(tmp_path, free_port(), free_port())
    process = await asyncio.create_subprocess_exec(
        *CLI,
        "demo",
        "--config",
        str(path),
        "--csms-url",
        csms.url,
        "--mqtt",
        f"{mosquitto.host}:{mosquitto.port}",
        "--duration",
        "6",
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        boot = await csms.wait_for("BootNotification", timeout=20)
        assert boot["chargePointVendor"] == "ocpp-gateway"
        await csms.wait_for("MeterValues", lambda p: p["connectorId"] == 0, timeout=20)
    finally:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert f"MQTT    {mosquitto.host}:{mosquitto.port} (external broker): connected" in stdout.decode()


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
