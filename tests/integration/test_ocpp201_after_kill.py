"""After a kill -9 at a precise moment, the 2.0.1 station ends every session once, and only one it
had queued (the stores on disk as such a kill leaves them; see test_billing_after_kill.py)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

from adapters.ocpp201_upstream.ledger import Ledger201
from adapters.ocpp201_upstream.station import CLEAN_SHUTDOWN, ChargingStation201
from adapters.storage.outbox_store import SegmentedOutboxStore
from adapters.storage.settings import JsonSettingsStore
from gateway.domain.model import VehicleState
from gateway.domain.transactions import StartTransaction
from gateway.services.outbox import Outbox
from gateway.services.site import Site
from tests.fixtures.net import free_port
from tests.integration.test_ocpp201_upstream import FREE, at_minute, charger_at, make_site, upstream_at


def persistent_site(path: Path) -> Site:
    site = make_site(FREE)
    site.settings = JsonSettingsStore(path)
    return site


def disk_outbox(directory: Path) -> Outbox:
    return Outbox(SegmentedOutboxStore(directory / "outbox"))


def killed(path: Path) -> None:
    """What a kill -9 leaves of the clean-shutdown flag."""
    JsonSettingsStore(path).save(CLEAN_SHUTDOWN, False)


async def test_a_kill_between_queueing_the_ended_and_closing_the_session_ends_it_once(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    site = persistent_site(path)
    station = ChargingStation201(site, upstream_at(free_port()), disk_outbox(tmp_path))
    site.apply(charger_at(0, VehicleState.A, 100))
    site.apply(charger_at(1, VehicleState.C, 100))
    site.apply(charger_at(5, VehicleState.A, 900))
    assert site.settle()
    (ref,) = station.ledger.sessions
    station.ledger.sessions[ref].open = True  # the kill came before ``closed`` was written
    station.ledger.save()
    killed(path)

    restarted = ChargingStation201(persistent_site(path), upstream_at(free_port()), disk_outbox(tmp_path))
    kinds = [info.kind for info in restarted.outbox.store.index()]
    assert [kind for kind in kinds if kind != "aligned"] == ["start", "stop"]  # its own Ended, not a second
    assert "aligned" in kinds  # (its chargingState change: Charging)
    assert not restarted.ledger.sessions[ref].open


async def test_a_session_whose_start_never_reached_the_queue_is_not_ended(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    ledger = Ledger201(JsonSettingsStore(path))
    ledger.started(StartTransaction(1, "c1-20261129T120100-abcdef-1", "CARPORT", 100, at_minute(1)), "Central", None)
    killed(path)  # the kill came after the ledger was written and before the Started was queued

    restarted = ChargingStation201(persistent_site(path), upstream_at(free_port()), disk_outbox(tmp_path))
    assert len(restarted.outbox.store) == 0
    assert restarted.ledger.sessions == {}


async def test_a_clean_restart_ends_an_open_session_with_reboot(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    site = persistent_site(path)
    station = ChargingStation201(site, upstream_at(free_port()), disk_outbox(tmp_path))
    task = asyncio.create_task(station.run())
    site.apply(charger_at(0, VehicleState.A, 100))
    site.apply(charger_at(1, VehicleState.C, 100))
    assert site.settle()
    await asyncio.sleep(0)  # the run begins (and marks the process as running)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert JsonSettingsStore(path).load(CLEAN_SHUTDOWN) is True

    restarted = ChargingStation201(persistent_site(path), upstream_at(free_port()), disk_outbox(tmp_path))
    assert restarted.boot_reason == "PowerUp"
    last = restarted.outbox.store.index()[-1]
    ended = restarted.outbox.store.record(last.seq)
    assert ended is not None
    assert ended.payload["transaction_info"]["stopped_reason"] == "Reboot"
    assert ended.payload["offline"] is True


async def test_an_ended_after_a_kill_is_not_stamped_before_a_charging_state_change(tmp_path: Path) -> None:
    """The session began at minute 1 and its chargingState changed after (no sample since): the
    PowerLoss Ended is stamped at the latest of its events, not at the start, the last time written
    down before the fix (found by test_ocpp201_gateway_kill.py)."""
    path = tmp_path / "settings.json"
    site = persistent_site(path)
    station = ChargingStation201(site, upstream_at(free_port()), disk_outbox(tmp_path))
    site.apply(charger_at(0, VehicleState.A, 100))
    site.apply(charger_at(1, VehicleState.B, 100))
    site.apply(charger_at(4, VehicleState.C, 100))
    assert site.settle()
    assert station.outbox.stored()
    killed(path)

    restarted = ChargingStation201(persistent_site(path), upstream_at(free_port()), disk_outbox(tmp_path))
    queued = [restarted.outbox.store.record(info.seq) for info in restarted.outbox.store.index()]
    payloads = [record.payload for record in queued if record is not None]
    assert [(p["event_type"], p["trigger_reason"]) for p in payloads][-2:] == [
        ("Updated", "ChargingStateChanged"),
        ("Ended", "AbnormalCondition"),
    ]
    stamps = [datetime.fromisoformat(p["timestamp"]) for p in payloads]
    assert stamps[-1] == max(stamps[:-1]) > at_minute(1)  # the latest event's time, not the start's
