"""kill -9 of a real gateway speaking OCPP 2.0.1 at random moments, while cars come and go and the
CSMS goes away and comes back: every transaction is told to the CSMS once, completely, in order
(issue 19; test_gateway_kill.py does the same for 1.6, with the harness in
tests/fixtures/kill_harness.py).

The site: two Modbus chargers (simulators in this process, so they outlive every gateway) with
free charging, and a 2.0.1 CSMS (tests/fixtures/csms201_books.py: DemoCsms201, schemas on both
ways) stopped and started to make outages. The gateway is a real ``ocpp-gateway run`` with
``ocpp_version = "2.0.1"``, forked from the zygote and SIGKILLed at random moments: while the
CSMS is there, during outages and during the replay after each. After the last kill a fresh
gateway runs until the cars are gone and its outbox is empty, then stops cleanly (SIGTERM).
What the CSMS received is then audited (``csms201_books.audit``):

- every transaction Started once and Ended exactly once (identical resends excepted), never two
  at once on one EVSE;
- seqNo per transaction from 0, in order, without gaps as received (a number again only for the
  same event sent again);
- ``offline`` true on every event that happened while no link was there, false on every one that
  happened while the link was up (events within a moment of a change of the link are not judged;
  the Ended of a session a killed process left open is offline by design);
- Transaction.End >= every energy value sent in that transaction; nothing stamped after it;
- timestamps are the events' own: none later than its arrival, an offline one older than the
  link it came on.

A car that stays plugged in across a restart is, by design, one session ended PowerLoss and a new
one started at the first poll (README "Restarts"). The figures are printed (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.modbus.profile import load_profile
from adapters.modbus.simulator import ModbusSimulator
from tests.fixtures.csms201_books import BooksCsms201, audit
from tests.fixtures.kill_harness import (
    MAX_POWER_KW,
    HeldPort,
    Kills,
    Zygote,
    drive_car,
    kill_repeatedly,
    print_table,
    status,
    tail,
    tick,
    until_quiet,
)
from tests.fixtures.net import free_port

SEED = int(os.environ.get("KILL_SEED", 20261901))
# Fewer kills than 1.6's test (it has 104): two outages, each followed by its replay.
PHASES = [("online", 6), *[("outage", 8), ("replay", 8)] * 2]
SHORT_REPLAY_LIVES = 5
FIRST_LIFE_S = 6.0  # a calm start: sessions while the link is up, so that ``offline: false`` is judged often
CSMS_ANSWER_S = 0.005  # every answer waits this long: a window where a CALL is booked, its answer not received
MODBUS = {1: ("left", "phoenix-ev-eth"), 2: ("right", "webasto-next")}  # EVSE -> (name, profile)
POLL_S = 0.25
DRAIN_TIMEOUT_S = 30.0
EXAMPLES = 3


def write_config(path: Path, state: Path, csms: BooksCsms201, ports: dict[str, int]) -> None:
    chargers = "".join(
        f"""
[[chargers]]
name = "{name}"
profile = "{profile}"
host = "127.0.0.1"
port = {ports[name]}
connectors = [{evse}]
poll_interval_s = {POLL_S}
timeout_s = 0.5

[[connectors]]
id = {evse}
policy = "free"
id_tag = "MODBUS-{evse}"
max_power_kw = {MAX_POWER_KW}
"""
        for evse, (name, profile) in MODBUS.items()
    )
    path.write_text(
        f"""
[site]
id = "kill201"
state_dir = "{state}"

[status_page]
port = {ports["status"]}

[upstream]
url = "{csms.url}"
charge_point_id = "GW-KILL-201"
ocpp_version = "2.0.1"
meter_value_sample_interval_s = 1
reconnect_max_s = 0.5
response_timeout_s = 5

[mqtt]
host = "127.0.0.1"
port = {ports["mqtt"]}
{chargers}""",
        encoding="utf-8",
    )


@pytest.mark.timeout(180)
async def test_ocpp201_gateway_survives_random_kill_9(tmp_path: Path) -> None:
    began = time.monotonic()
    rng = random.Random(SEED)
    ports = {name: free_port() for name in ("csms", "status", "mqtt")}
    csms = BooksCsms201(ports["csms"], CSMS_ANSWER_S)
    sims: dict[int, ModbusSimulator] = {}
    for evse, (name, profile) in MODBUS.items():
        sim = ModbusSimulator(load_profile(profile))
        ports[name] = free_port()
        await sim.start("127.0.0.1", ports[name])
        sim.set("energy_wh", 1_000_000 * evse)
        sims[evse] = sim
    config, log_path = tmp_path / "gateway.toml", tmp_path / "gateway.log"
    write_config(config, tmp_path / "state", csms, ports)
    plugs: dict[int, list[list[datetime | None]]] = {evse: [] for evse in MODBUS}
    status_url = f"http://127.0.0.1:{ports['status']}/api/status"
    figures: dict[str, Any] = {}
    kills = Kills()
    stop_cars = asyncio.Event()
    background: list[asyncio.Task[Any]] = []
    drained, picture = False, None

    mqtt_port = await HeldPort.on(ports["mqtt"])  # no MQTT broker
    with log_path.open("wb") as log:
        zygote = await Zygote.start(config, log)
        http = aiohttp.ClientSession()

        def status_of(timeout_s: float) -> Any:
            return status(http, status_url, timeout_s)

        try:
            await csms.start()
            background.append(asyncio.create_task(tick(list(sims.values()))))
            for evse, sim in sims.items():
                background.append(asyncio.create_task(drive_car(sim, plugs[evse], rng, stop_cars)))
            await kill_repeatedly(
                zygote, csms, PHASES, rng, status_of, log_path, kills, SHORT_REPLAY_LIVES, FIRST_LIFE_S
            )
            figures["gateway up after fork (status page answers)"] = f"{kills.first_up_s:.2f} s"
            kill_time = time.monotonic() - began
            outages = csms.outages

            # After the last kill: a gateway that lives, the CSMS there, every car gone.
            if not csms.up:
                await csms.start()
            kills.alive = pid = await zygote.spawn()
            stop_cars.set()
            drain_began = time.monotonic()
            with contextlib.suppress(TimeoutError):  # the drivers end their last sessions
                await asyncio.wait_for(asyncio.gather(*background[1:]), DRAIN_TIMEOUT_S / 4)
            drained, picture = await until_quiet(status_of, DRAIN_TIMEOUT_S - (time.monotonic() - drain_began))
            figures["drain after the last kill"] = f"{time.monotonic() - drain_began:.1f} s"
            how = await zygote.term(pid, 10.0)
            kills.alive = None
            assert how in ("exited:0", "signal:15"), f"the last gateway did not stop cleanly ({how}):\n{tail(log_path)}"
            await asyncio.sleep(0.2)
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await http.close()
            if kills.alive is not None:  # the test failed half-way: no gateway may outlive it
                with contextlib.suppress(Exception):
                    await zygote.kill(kills.alive)
            await zygote.close()
            await csms.stop()
            for sim in sims.values():
                await sim.stop()
            mqtt_port.close()

    figures.update(kills.summary())
    figures["CSMS outages"] = outages
    figures["station links (connections)"] = len(csms.links)
    boots = csms.messages("BootNotification")
    figures["BootNotifications (reason Unknown)"] = f"{len(boots)} ({sum(b['reason'] == 'Unknown' for b in boots)})"
    figures["Modbus plug-ins"] = sum(len(p) for p in plugs.values())
    books, failed = audit(csms)
    figures.update(books)
    log_text = log_path.read_text(encoding="utf-8", errors="replace")
    figures["gateway log: ERROR lines / tracebacks"] = (
        f"{log_text.count(' ERROR ')} / {log_text.count('Traceback (most recent call last)')}"
    )
    figures["time: kills / whole test"] = f"{kill_time:.0f} s / {time.monotonic() - began:.0f} s"
    print_table(f"OCPP 2.0.1 gateway kill -9 test (seed {SEED})", figures)
    if failed:
        print("\nfailed invariants:")
        for name, examples in failed.items():
            print(f"  {name}: {len(examples)}")
            for example in examples[:EXAMPLES]:
                print(f"    e.g. {example}")

    # The harness did what it claims (no vacuous pass).
    assert sum(kills.by_phase.values()) >= 30 and outages >= 2
    events = csms.messages("TransactionEvent")
    assert len({e["transactionInfo"]["transactionId"] for e in events}) >= 15
    assert sum(e["eventType"] == "Updated" for e in events) >= 20
    judged_offline, judged_live, _ = books["offline judged: true / false / not judged (link changing)"]
    assert judged_offline >= 20 and judged_live >= 5
    assert drained, f"the gateway did not deliver everything within {DRAIN_TIMEOUT_S} s: {picture}"
    assert not failed, "\n".join(
        f"{name}: {len(examples)}, e.g.\n    " + "\n    ".join(examples[:EXAMPLES]) for name, examples in failed.items()
    )
