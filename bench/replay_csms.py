"""The CSMS of bench/replay.py, in a process of its own, as a real CSMS would be.

    python bench/replay_csms.py PORT DELAY_MS SUMMARY_PATH [OCPP_VERSION]

Serves the demo CSMS (the ``ocpp`` library, schema validation on) on 127.0.0.1:PORT, speaking
OCPP_VERSION (1.6, the default, or 2.0.1), holding every answer back by DELAY_MS; prints "ready"
once it listens. On SIGTERM it writes what it received to SUMMARY_PATH as JSON (billing
requests, and the records they carried: a MeterValues counts its meterValue entries, a 2.0.1
TransactionEvent too (at least one: a chargingState change has none); the bench's records carry
one entry each) and exits.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

from adapters.demo_csms.csms import DemoCsms
from adapters.demo_csms.csms201 import DemoCsms201

BILLING = ("StartTransaction", "StopTransaction", "MeterValues", "TransactionEvent")


async def serve(port: int, delay_ms: int, version: str) -> dict[str, int]:
    csms = (DemoCsms201 if version == "2.0.1" else DemoCsms)("127.0.0.1", port)
    csms.answer_delay_s = delay_ms / 1000
    await csms.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await csms.stop()
    billing = [m for m in csms.received if m.action in BILLING]
    entries = sum(_entries(m.action, m.payload) for m in billing)
    return {"requests": len(billing), "entries": entries}


def _entries(action: str, payload: dict[str, object]) -> int:
    values = payload.get("meterValue")
    if action == "MeterValues" or (action == "TransactionEvent" and isinstance(values, list)):
        return max(1, len(values)) if isinstance(values, list) else 1
    return 1


if __name__ == "__main__":
    version = sys.argv[4] if len(sys.argv) > 4 else "1.6"
    received = asyncio.run(serve(int(sys.argv[1]), int(sys.argv[2]), version))
    Path(sys.argv[3]).write_text(json.dumps(received))
