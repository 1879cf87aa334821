"""What the CSMS changes survives a restart; the settings file is written atomically."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

from ocpp.v16 import call

from adapters.demo_csms.csms import DemoCsms
from adapters.ocpp_upstream.charge_point import VirtualChargePoint
from adapters.storage.settings import JsonSettingsStore
from gateway.config import UpstreamConfig
from gateway.domain.model import ChargerSnapshot, Connector, ConnectorStatus, Reading, VehicleState
from gateway.services.site import Site
from tests.fixtures.memory_outbox import memory_outbox


def make(path: Path, csms: DemoCsms) -> tuple[Site, VirtualChargePoint]:
    site = Site([Connector(1, "a"), Connector(2, "b")], [], settings=JsonSettingsStore(path))
    site.restore()
    settings = UpstreamConfig(url=csms.url, charge_point_id="GW-P", reconnect_max_s=0.5)
    return site, VirtualChargePoint(site, settings, memory_outbox())


async def test_configuration_list_availability_and_profiles_survive_a_restart(tmp_path: Path, csms: DemoCsms) -> None:
    path = tmp_path / "settings.json"
    site, cp = make(path, csms)
    task = asyncio.create_task(cp.run())
    try:
        await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 2)

        async def ask(payload: object) -> str:
            return str((await csms.call("GW-P", payload)).status)

        assert await ask(call.ChangeConfiguration(key="HeartbeatInterval", value="123")) == "Accepted"
        entries = [{"idTag": "CARD-1", "idTagInfo": {"status": "Accepted"}}]
        assert (
            await ask(call.SendLocalList(list_version=4, update_type="Full", local_authorization_list=entries))
            == "Accepted"
        )
        assert await ask(call.ChangeAvailability(connector_id=2, type="Inoperative")) == "Accepted"
        profile = {
            "chargingProfileId": 7,
            "stackLevel": 1,
            "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Absolute",
            "chargingSchedule": {
                "chargingRateUnit": "A",
                "startSchedule": "2020-01-01T00:00:00Z",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16}],
            },
        }
        assert await ask(call.SetChargingProfile(connector_id=0, cs_charging_profiles=profile)) == "Accepted"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    site, cp = make(path, csms)  # the gateway starts again
    assert cp.configuration.heartbeat_interval_s == 123
    assert cp.authorizer.local_list.version == 4 and "CARD-1" in cp.authorizer.local_list
    assert site.connectors[2].available is False
    assert [p.profile_id for p in site.charging_profiles] == [7]
    for device in ("a", "b"):
        site.apply(ChargerSnapshot(device, 1, Reading(datetime.now(UTC)), vehicle_state=VehicleState.A))
    assert site.connectors[1].status is ConnectorStatus.AVAILABLE
    assert site.connectors[2].status is ConnectorStatus.UNAVAILABLE  # still out of service after the restart


def test_the_file_is_replaced_atomically_and_an_unreadable_one_is_kept_aside(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    store = JsonSettingsStore(path)
    store.save("a", {"x": 1})
    assert json.loads(path.read_text()) == {"a": {"x": 1}}
    assert not (tmp_path / "settings.json.tmp").exists()
    path.write_text("{ half a file")
    fresh = JsonSettingsStore(path)
    assert fresh.load("a") is None
    assert (tmp_path / "settings.json.unreadable").read_text() == "{ half a file"
    fresh.save("b", [1, 2])
    assert JsonSettingsStore(path).load("b") == [1, 2]
