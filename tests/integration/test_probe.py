"""``ocpp-gateway probe`` as an installer runs it: the real CLI against simulators of real profiles."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import tomllib
from pathlib import Path

import pytest

from adapters.modbus.simulator import ModbusSimulator
from gateway.config import GatewayConfig, parse_config
from gateway.config_checks import check_profiles
from tests.fixtures.modbus import StartSimulator
from tests.fixtures.net import free_port
from tests.fixtures.serial import PtyPair

ROOT = Path(__file__).resolve().parents[2]
SITE = '[site]\nid = "probed"\n\n[upstream]\nurl = "ws://127.0.0.1:9/ocpp"\ncharge_point_id = "GW"\n\n'
SERIAL_8N1 = ("--baud", "9600", "--parity", "N", "--stopbits", "1", "--bytesize", "8")


async def run_probe(*args: str, timeout_s: float = 30) -> tuple[int, str, str]:
    """The CLI in a subprocess (the simulators run in this test's event loop, so it must not block)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        "probe",
        *args,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def snippet_of(stdout: str, profile_id: str) -> str:
    """The config block printed under ``fits: <profile_id>``, as the installer would copy it."""
    block = stdout.split(f"fits: {profile_id} ", 1)[1].split("paste into config.toml:\n\n", 1)[1]
    lines = []
    for line in block.splitlines():
        if not line.startswith("    "):
            break
        lines.append(line.removeprefix("    "))
    return "\n".join(lines)


def pasted(snippet: str) -> GatewayConfig:
    """The snippet in a minimal site config, validated as ``check-config`` would."""
    config = parse_config(tomllib.loads(SITE + snippet + "\n"))
    assert check_profiles(config) == []
    return config


@pytest.mark.parametrize(
    ("profile_id", "shows"),
    [
        ("eastron-sdm630", ["energy 1,234,560 Wh", "power 7,321 W"]),
        ("sunspec-203", ["energy 1,234,560 Wh", "power 7,321 W"]),
        ("phoenix-ev-eth", ["energy 1,234,560 Wh", "power 7,321 W", "vehicle state C"]),
        ("alfen-ng9xx", ["energy 1,234,560 Wh", "power 7,321 W", "vehicle state C"]),
    ],
)
async def test_probe_finds_the_device_and_prints_a_config_block_that_works(
    profile_id: str, shows: list[str], modbus_simulator: StartSimulator
) -> None:
    sim = await modbus_simulator(profile_id)
    sim.set("energy_wh", 1_234_560)
    if sim.profile.kind == "charger":
        sim.plug_in()
        sim.start_charging(7_321.0)
    sim.set("power_w", 7_321.0)
    started = time.monotonic()
    code, stdout, stderr = await run_probe("--tcp", f"127.0.0.1:{sim.port}")
    assert code == 0, stdout + stderr
    assert time.monotonic() - started < 15  # every profile, at a 0.5 s timeout, in seconds
    assert f"fits: {profile_id} " in stdout
    found = stdout.split(f"fits: {profile_id} ", 1)[1].split("\nfits: ", 1)[0]
    for text in shows:
        assert text in found
    config = pasted(snippet_of(stdout, profile_id))
    [device] = config.chargers if sim.profile.kind == "charger" else config.meters
    assert (device.profile, device.host, device.port) == (profile_id, "127.0.0.1", sim.port)
    assert device.unit_id == sim.profile.modbus.unit_id
    assert "Traceback" not in stderr


async def test_probe_on_a_serial_port_with_a_unit_id(pty_pair: PtyPair) -> None:
    sim = ModbusSimulator("eastron-sdm630", unit_id=7)
    sim.set("energy_wh", 55_555)
    await sim.start_serial(pty_pair.device_end)
    try:
        code, stdout, stderr = await run_probe("--serial", pty_pair.gateway_end, *SERIAL_8N1, "--unit", "7")
    finally:
        await sim.stop()
    assert code == 0, stdout + stderr
    assert "fits: eastron-sdm630 " in stdout and "at unit 7" in stdout and "energy 55,555 Wh" in stdout
    [meter] = pasted(snippet_of(stdout, "eastron-sdm630")).meters
    assert (meter.serial, meter.baudrate, meter.parity, meter.unit_id) == (pty_pair.gateway_end, 9600, "N", 7)


async def test_probe_with_no_match_lists_what_it_tried(modbus_simulator: StartSimulator) -> None:
    sim = await modbus_simulator("eastron-sdm630")  # answers unit 1 only: unit 9 gets exceptions
    code, stdout, stderr = await run_probe("--tcp", f"127.0.0.1:{sim.port}", "--unit", "9")
    assert code == 1, stdout + stderr
    assert "no profile fits. Tried:" in stdout
    assert "  eastron-sdm630  " in stdout and "  phoenix-ev-eth  " in stdout
    assert "unit 9" in stdout and "does not fit" in stdout
    assert "Traceback" not in stderr


async def test_probe_of_a_silent_bus_asks_each_unit_id_once(pty_pair: PtyPair) -> None:
    started = time.monotonic()
    code, stdout, stderr = await run_probe("--serial", pty_pair.gateway_end, *SERIAL_8N1, "--timeout", "0.2")
    assert code == 1, stdout + stderr
    assert "no answer (skipped: this unit id did not answer before)" in stdout
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("where", ["tcp", "serial"])
async def test_probe_of_an_unreachable_address_says_so_in_one_line(where: str, tmp_path: Path) -> None:
    args = ("--tcp", f"127.0.0.1:{free_port()}") if where == "tcp" else ("--serial", str(tmp_path / "ttyUSB9"))
    code, _stdout, stderr = await run_probe(*args)
    assert code == 2
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    expected = "cannot connect (refused" if where == "tcp" else "cannot open the serial port: no such device"
    assert expected in stderr


async def test_probe_of_a_device_answering_zeros_finds_no_fit(zeros_device: int) -> None:
    # abb-terra-ac (and schneider, vestel, webasto) once "fitted" here: every match of theirs held for 0
    code, stdout, stderr = await run_probe("--tcp", f"127.0.0.1:{zeros_device}")
    assert code == 1, stdout + stderr
    assert "no profile fits. Tried:" in stdout
    assert "fits:" not in stdout
    assert "  abb-terra-ac  " in stdout and "does not fit" in stdout
