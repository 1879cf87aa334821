"""The CSMS of bench/replay.py, in a process of its own, as a real CSMS would be.

    python bench/replay_csms.py PORT DELAY_MS SUMMARY_PATH

Serves the demo CSMS (the ``ocpp`` library, schema validation on) on 127.0.0.1:PORT, holding
every answer back by DELAY_MS; prints "ready" once it listens. On SIGTERM it writes what it
received to SUMMARY_PATH as JSON (billing requests, and the records they carried: a MeterValues
counts its meterValue entries) and exits.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

from adapters.demo_csms.csms import DemoCsms

BILLING = ("StartTransaction", "StopTransaction", "MeterValues")


async def serve(port: int, delay_ms: int) -> dict[str, int]:
    csms = DemoCsms("127.0.0.1", port)
    csms.answer_delay_s = delay_ms / 1000
    await csms.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await csms.stop()
    billing = [m for m in csms.received if m.action in BILLING]
    entries = sum(len(m.payload["meterValue"]) if m.action == "MeterValues" else 1 for m in billing)
    return {"requests": len(billing), "entries": entries}


if __name__ == "__main__":
    received = asyncio.run(serve(int(sys.argv[1]), int(sys.argv[2])))
    Path(sys.argv[3]).write_text(json.dumps(received))
