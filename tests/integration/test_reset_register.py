"""``ocpp-gateway reset-register``: after a meter swap, the kept register is forgotten (issue 14)."""

from __future__ import annotations

import http.server
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.storage.settings import JsonSettingsStore
from gateway.cli import main
from gateway.domain.model import Connector, Meter, MeterSnapshot, Reading
from gateway.services.site import Site
from tests.fixtures.net import free_port

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "site.toml"
    config.write_text(
        f"""
[site]
id = "swap"
state_dir = "{tmp_path / "state"}"
[status_page]
port = {free_port()}
[upstream]
url = "ws://127.0.0.1:9/ocpp"
charge_point_id = "GW-SWAP"
[mqtt]
host = "127.0.0.1"
[[chargers]]
name = "left"
profile = "abb-terra-ac"
host = "127.0.0.1"
connectors = [1]
[[meters]]
name = "sub"
profile = "eastron-sdm120"
host = "127.0.0.1"
port = 1502
connector = 1
"""
    )
    return config


def test_a_swapped_meter_bills_again_once_its_old_register_is_forgotten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings_path = tmp_path / "state" / "settings.json"
    before = Site([Connector(1, "left")], [Meter("sub", 1)], settings=JsonSettingsStore(settings_path))
    before.apply(MeterSnapshot("sub", Reading(T0, energy_wh=8_000_000)))  # the old meter's register
    swapped = Site([Connector(1, "left")], [Meter("sub", 1)], settings=JsonSettingsStore(settings_path))
    swapped.restore()
    swapped.apply(MeterSnapshot("sub", Reading(T0, energy_wh=12)))  # a new meter
    assert swapped.billing_energy_wh(1) == 8_000_000  # refused as backwards, and it would stay so

    config = write_config(tmp_path)
    assert main(["reset-register", "--config", str(config), "--meter", "sub"]) == 0
    assert "meter sub: forgot the last good register (8,000,000 Wh" in capsys.readouterr().out
    after = Site([Connector(1, "left")], [Meter("sub", 1)], settings=JsonSettingsStore(settings_path))
    after.restore()
    after.apply(MeterSnapshot("sub", Reading(T0, energy_wh=12)))
    assert after.billing_energy_wh(1) == 12

    assert main(["reset-register", "--config", str(config), "--meter", "nope"]) == 2
    assert "no meter 'nope' in the config (meters: sub)" in capsys.readouterr().err
    assert main(["reset-register", "--config", str(config), "--connector", "7"]) == 2
    assert "no connector 7 in the config (connectors: [1])" in capsys.readouterr().err


def test_a_running_gateway_keeps_its_register(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It would write its own view back: the command refuses while the status page answers."""
    config = write_config(tmp_path)
    port = int(config.read_text().split("port = ")[1].split()[0])
    server = http.server.HTTPServer(("127.0.0.1", port), http.server.BaseHTTPRequestHandler)  # answers 501
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert main(["reset-register", "--config", str(config), "--connector", "1"]) == 1
    finally:
        server.shutdown()
        server.server_close()
    assert "the gateway is running" in capsys.readouterr().err
