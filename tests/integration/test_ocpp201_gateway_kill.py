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

import os
import random
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.csms201_books import BooksCsms201, audit
from tests.fixtures.kill_harness import (
    chargers_toml,
    drive_car,
    kill_run,
    report,
    start_chargers,
)
from tests.fixtures.net import free_port

SEED = int(os.environ.get("KILL_SEED", 20261901))  # KILL_SEED=<n>: another run
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
    chargers = chargers_toml(MODBUS, ports, POLL_S)
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
    sims = await start_chargers(MODBUS, ports)
    config, log_path = tmp_path / "gateway.toml", tmp_path / "gateway.log"
    write_config(config, tmp_path / "state", csms, ports)
    plugs: dict[int, list[list[datetime | None]]] = {evse: [] for evse in MODBUS}
    figures: dict[str, Any] = {}
    async with kill_run(config, log_path, ports, csms, sims) as run:
        for evse, sim in sims.items():
            run.drive(drive_car(sim, plugs[evse], rng, run.stop_cars))
        await run.kill_repeatedly(PHASES, rng, SHORT_REPLAY_LIVES, FIRST_LIFE_S)
        figures["gateway up after fork (status page answers)"] = f"{run.kills.first_up_s:.2f} s"
        kill_time = time.monotonic() - began
        outages = csms.outages
        drained, picture, drain_s = await run.last_gateway(DRAIN_TIMEOUT_S)
        figures["drain after the last kill"] = f"{drain_s:.1f} s"
    kills = run.kills

    figures.update(kills.summary())
    figures["CSMS outages"] = outages
    figures["station links (connections)"] = len(csms.links)
    boots = csms.messages("BootNotification")
    figures["BootNotifications (reason Unknown)"] = f"{len(boots)} ({sum(b['reason'] == 'Unknown' for b in boots)})"
    figures["Modbus plug-ins"] = sum(len(p) for p in plugs.values())
    books, failed = audit(csms)
    figures.update(books)
    figures["time: kills / whole test"] = f"{kill_time:.0f} s / {time.monotonic() - began:.0f} s"
    failures = report(f"OCPP 2.0.1 gateway kill -9 test (seed {SEED})", figures, failed, log_path)

    # The harness did what it claims (no vacuous pass).
    assert sum(kills.by_phase.values()) >= 30 and outages >= 2
    events = csms.messages("TransactionEvent")
    assert len({e["transactionInfo"]["transactionId"] for e in events}) >= 15
    assert sum(e["eventType"] == "Updated" for e in events) >= 20
    judged_offline, judged_live, _ = books["offline judged: true / false / not judged (link changing)"]
    assert judged_offline >= 20 and judged_live >= 5
    assert drained, f"the gateway did not deliver everything within {DRAIN_TIMEOUT_S} s: {picture}"
    assert not failed, failures
