"""The operator's history with the real stack: simulated Modbus devices, a gateway, the demo CSMS.

Each test reads the history file with a store of its own (a second SQLite connection, as a
later API or CLI will), and waits on conditions with deadlines, never on sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from adapters.demo_csms.csms import DemoCsms
from adapters.modbus.simulator import ModbusSimulator
from adapters.storage.history_db import FILE_NAME, SqliteHistoryStore
from gateway.app import Gateway
from gateway.config import parse_config
from gateway.domain.history import (
    MAX_ROWS,
    DeliveryState,
    EventKind,
    HistoryEvent,
    HistoryQuery,
    SessionStarted,
    SessionStopped,
)
from gateway.domain.model import iso_utc
from tests.fixtures.modbus import start_simulators
from tests.fixtures.net import free_port

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Site:
    gateway: Gateway
    charger: ModbusSimulator
    meter: ModbusSimulator
    state_dir: Path


def read_history(state_dir: Path) -> SqliteHistoryStore:
    return SqliteHistoryStore(state_dir / "history")


async def eventually(read: Callable[[], T | None], timeout_s: float = 10.0) -> T:
    """What ``read`` returns once it is not None (or falsy-empty), polled until the deadline."""
    async with asyncio.timeout(timeout_s):
        while True:
            if found := read():
                return found
            await asyncio.sleep(0.05)


def session_where(state_dir: Path, condition: Callable[[Any], bool]) -> Callable[[], Any]:
    def read() -> Any:
        store = read_history(state_dir)
        try:
            return next((s for s in store.sessions() if condition(s)), None)
        finally:
            store.close()

    return read


@contextlib.asynccontextmanager
async def running_site(csms_url: str, state_dir: Path | None = None, **history: Any) -> AsyncIterator[Site]:
    """One charger (connector 1, free) and a grid meter, polled by a gateway reporting to ``csms_url``."""
    sims, ports = await start_simulators({"meter": "eastron-sdm630", "left": "phoenix-ev-eth"})
    sims["left"].set("energy_wh", 1_000_000)
    sims["meter"].set("energy_wh", 4_321_000)
    state_dir = state_dir or Path(tempfile.mkdtemp(prefix="history-state-"))
    device = {"host": "127.0.0.1", "poll_interval_s": 0.2, "timeout_s": 0.5}
    config = parse_config(
        {
            "site": {"id": "hist", "state_dir": str(state_dir)},
            "status_page": {"enabled": False},
            "upstream": {"url": csms_url, "charge_point_id": "GW-HIST", "reconnect_max_s": 1},
            "mqtt": {"host": "127.0.0.1", "port": free_port()},  # no broker: the history does not need one
            "chargers": [
                {"name": "left", "profile": "phoenix-ev-eth", "port": ports["left"], "connectors": [1], **device}
            ],
            "meters": [{"name": "grid", "profile": "eastron-sdm630", "port": ports["meter"], "connector": 0, **device}],
            "connectors": [{"id": 1, "id_tag": "HIST-FREE-0042"}],
            "history": history,
        }
    )
    gateway = Gateway.build(config)
    task = asyncio.create_task(gateway.run())
    try:
        yield Site(gateway, sims["left"], sims["meter"], state_dir)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for sim in sims.values():
            await sim.stop()


async def test_a_session_is_kept_with_the_values_the_csms_billed_and_survives_a_restart(csms: DemoCsms) -> None:
    async with running_site(csms.url) as site:
        await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 1 and p["status"] == "Available")
        site.charger.plug_in()
        start = await csms.wait_for("StartTransaction", lambda p: p["connectorId"] == 1)
        site.charger.start_charging(7_400)
        connector = site.gateway.site.connectors[1]
        power = await eventually(lambda: connector.reading and connector.reading.power_w)
        site.charger.tick(360)  # six minutes of charging on the simulated register
        await eventually(lambda: connector.reading and connector.reading.energy_wh == start["meterStart"] + 740)
        site.charger.unplug()
        stop = await csms.wait_for("StopTransaction")
        row = await eventually(
            session_where(site.state_dir, lambda s: s.delivery is DeliveryState.DELIVERED), timeout_s=10
        )
        state_dir = site.state_dir
    assert (row.meter_start_wh, row.meter_stop_wh) == (start["meterStart"], stop["meterStop"])
    assert row.energy_wh == stop["meterStop"] - start["meterStart"] == 740
    assert row.csms_transaction_id == stop["transactionId"]
    assert (row.connector_id, row.device, row.stop_reason) == (1, "left", "ev_disconnected")
    assert row.peak_power_w == power > 0
    assert row.masked_id_tag == "****0042" and row.id_tag == "HIST-FREE-0042"
    assert row.started_at == start["timestamp"] and row.stopped_at == stop["timestamp"]
    # the gateway stopped; a new one on the same state folder still has the session, and adds to it
    async with running_site(csms.url, state_dir) as again:
        again.charger.plug_in()
        await eventually(session_where(state_dir, lambda s: s.local_ref != row.local_ref), timeout_s=10)
    store = read_history(state_dir)
    assert row in store.sessions()
    assert store.series(HistoryQuery(since=datetime.now(UTC) - timedelta(minutes=5)))  # both runs sampled their minute
    assert not store.problems()
    store.close()


async def test_a_fault_and_a_lost_device_are_logged_with_their_duration(csms: DemoCsms) -> None:
    async with running_site(csms.url) as site:
        await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 1 and p["status"] == "Available")
        site.charger.raise_fault(9)
        await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 1 and p["status"] == "Faulted")
        site.charger.clear_faults()
        await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 1 and p["status"] == "Available")
        await site.meter.stop()
        await eventually(lambda: site.gateway.site.device_online("grid") is False)

        def logged() -> list[Any] | None:
            store = read_history(site.state_dir)
            events = store.events()
            store.close()
            kinds = [e.kind for e in events]
            return events if {"fault_cleared", "device_lost"} <= set(kinds) else None

        events = await eventually(logged)
    raised = next(e for e in events if e.kind == "fault_raised" and e.detail["kind"] == "over_current")
    cleared = next(e for e in events if e.kind == "fault_cleared" and e.detail["kind"] == "over_current")
    assert (raised.connector_id, raised.device, raised.detail["vendor_code"]) == (1, "left", "9")
    duration = datetime.fromisoformat(cleared.at) - datetime.fromisoformat(raised.at)
    assert cleared.detail["duration_s"] == duration.total_seconds() > 0
    lost = next(e for e in events if e.kind == "device_lost")
    assert lost.device == "grid" and lost.detail["reason"]
    assert "csms_up" in [e.kind for e in events]


async def test_retention_prunes_what_is_older_than_configured(csms: DemoCsms) -> None:
    state_dir = Path(tempfile.mkdtemp(prefix="history-state-"))
    seed = SqliteHistoryStore(state_dir / "history")
    long_ago = datetime.now(UTC) - timedelta(days=40)
    seed.write(
        [
            SessionStarted("old", 1, "left", "OLD-TAG-0001", long_ago, 10),
            SessionStopped("old", 1, "left", "OLD-TAG-0001", long_ago + timedelta(hours=1), 20, "local", None),
            HistoryEvent(long_ago, EventKind.CSMS_DOWN),
        ]
    )
    seed.close()
    async with running_site(csms.url, state_dir, retention_days=30) as site:

        def pruned() -> bool:
            store = read_history(site.state_dir)
            cutoff = iso_utc(datetime.now(UTC) - timedelta(days=30))
            sessions, events = store.sessions(), store.events()
            store.close()
            return not sessions and bool(events) and all(e.at > cutoff for e in events)

        assert await eventually(pruned)  # (the gateway's own csms_up is kept)


async def test_a_damaged_history_file_is_set_aside_and_the_gateway_runs_on(csms: DemoCsms) -> None:
    state_dir = Path(tempfile.mkdtemp(prefix="history-state-"))
    (state_dir / "history").mkdir(mode=0o700)
    (state_dir / "history" / FILE_NAME).write_bytes(b"\x00garbage, not SQLite" * 500)
    async with running_site(csms.url, state_dir) as site:
        assert "kept as" in site.gateway.history.problems()[0].what  # type: ignore[union-attr]
        site.charger.plug_in()
        start = await csms.wait_for("StartTransaction", lambda p: p["connectorId"] == 1)  # billing unaffected
        row = await eventually(session_where(state_dir, lambda s: s.meter_start_wh == start["meterStart"]))
    assert row.connector_id == 1
    assert len(list((state_dir / "history").glob("history.*.corrupt"))) == 1


CHILD = """
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from adapters.storage.history_db import SqliteHistoryStore
from gateway.domain.model import iso_utc
from gateway.domain.history import EventKind, HistoryEvent, SeriesSample, SessionStarted, SessionStopped
store = SqliteHistoryStore(Path(sys.argv[1]))
print("ready", flush=True)
i = 0
while True:
    now = datetime.now(UTC)
    ref = f"s{os.getpid()}-{i}"
    store.write([
        SessionStarted(ref, 1, "left", "KILL-TAG-0001", now, i * 10),
        *[SeriesSample(now.replace(microsecond=j), 1, 1.0, j, "charging") for j in range(20)],
        SessionStopped(ref, 1, "left", "KILL-TAG-0001", now, i * 10 + 7, "local", 1.0),
        HistoryEvent(now, EventKind.CSMS_UP, detail={"session": ref}),
    ])
    i += 1
"""


def count_sessions(folder: Path) -> int:
    store = SqliteHistoryStore(folder)
    try:
        return len(store.sessions(HistoryQuery(limit=MAX_ROWS)))
    finally:
        store.close()


async def test_a_kill_9_leaves_no_partial_rows(tmp_path: Path) -> None:
    """Each batch is a session's start, its stop, samples and an event: after SIGKILL at random
    points, every session found is whole and has its event."""
    for _ in range(3):
        child = subprocess.Popen(  # noqa: ASYNC220 (started once, nothing else runs meanwhile)
            [sys.executable, "-c", CHILD, str(tmp_path / "history")], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        enough = count_sessions(tmp_path / "history") + 5
        await eventually(lambda enough=enough: count_sessions(tmp_path / "history") > enough)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        store = read_history(tmp_path / "history")
        sessions = store.sessions(HistoryQuery(limit=MAX_ROWS))
        events = store.events(HistoryQuery(limit=MAX_ROWS))
        assert not store.problems()
        assert all(s.stopped_at is not None and s.energy_wh == 7 for s in sessions)
        assert {e.detail["session"] for e in events} == {s.local_ref for s in sessions}
        store.close()
