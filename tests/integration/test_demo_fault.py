"""The demo's occasional fault on the whole stack: the demo (its simulators, script and gateway, in
this process) with a short fault schedule, against the real CSMS (``ocpp``, schema validation on)
and a real Mosquitto. The Webasto overheats for a few seconds while its car charges; the gateway
must tell the CSMS (HighTemperature, then NoError), MQTT (the fault and its clearing) and its
history (fault_raised, fault_cleared with the duration). Every wait has a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import io
from pathlib import Path
from typing import Any

from adapters.demo_csms.csms import DemoCsms
from adapters.storage.history_db import SqliteHistoryStore
from gateway.config import load_config
from gateway.demo import run_demo
from gateway.demo_fault import FaultSchedule
from gateway.domain.history import HistoryQuery
from tests.fixtures.mosquitto import MosquittoBroker, WatchFactory
from tests.fixtures.net import free_port
from tests.integration.test_cli import demo_config

HOT_CONNECTOR = 2  # carport-right, the Webasto Next: its profile says over-temperature with code 10
LASTS_S = 4.0
# due at once: the fault begins when the Webasto's car starts charging, about 13 s into the demo
SCHEDULE = FaultSchedule(first_after_s=0.0, every_s=3600.0, lasts_s=LASTS_S)
POLL_S = 1.0  # the shipped site polls every second: each edge is seen up to a poll late


def status_notifications(csms: DemoCsms) -> list[dict[str, Any]]:
    return [p for p in csms.messages("StatusNotification") if p["connectorId"] == HOT_CONNECTOR]


def raised_then_cleared(csms: DemoCsms) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The first HighTemperature notification and the first NoError one after it."""
    sent = status_notifications(csms)
    hot = next((i for i, p in enumerate(sent) if p["errorCode"] == "HighTemperature"), None)
    if hot is None:
        return None
    cool = next((p for p in sent[hot + 1 :] if p["errorCode"] == "NoError"), None)
    return None if cool is None else (sent[hot], cool)


async def test_the_demo_charger_overheats_and_every_output_tells_it(
    tmp_path: Path, csms: DemoCsms, mosquitto: MosquittoBroker, mqtt_watch: WatchFactory, topic_prefix: str
) -> None:
    prefix = '# topic_prefix = "ocpp-gateway/demo-site"   # the default'
    path = demo_config(tmp_path, free_port(), free_port(), None, {prefix: f'topic_prefix = "{topic_prefix}"'})
    watcher = await mqtt_watch(f"{topic_prefix}/#")
    state_dir = tmp_path / "state"
    demo = asyncio.create_task(
        run_demo(
            load_config(path),
            csms_url=csms.url,
            mqtt=f"{mosquitto.host}:{mosquitto.port}",
            out=io.StringIO(),
            fault=SCHEDULE,
            state_dir=state_dir,
        )
    )
    try:
        # (the predicate looks at every notification so far: true once both have come)
        await csms.wait_for("StatusNotification", lambda _: raised_then_cleared(csms) is not None, timeout=60)
        both = raised_then_cleared(csms)
        assert both is not None
        hot, cool = both
        assert hot["status"] == "Faulted" and hot["vendorErrorCode"] == "10"  # the Webasto's own code
        assert cool["status"] != "Faulted"

        fault_topic = f"{topic_prefix}/connector/{HOT_CONNECTOR}/fault"
        raised = await watcher.wait_for(fault_topic, lambda m: m.json()["event"] == "raised", timeout=10)
        assert raised.json()["kind"] == "over_temperature"
        cleared = await watcher.wait_for(fault_topic, lambda m: m.json()["event"] == "cleared", timeout=10)
        assert cleared.json()["kind"] == "over_temperature"
        state_topic = f"{topic_prefix}/connector/{HOT_CONNECTOR}/state"
        faulted = await watcher.wait_for(
            state_topic, lambda m: m.json()["ocpp_error_code"] == "HighTemperature", timeout=10
        )
        assert faulted.json()["faults"][0]["kind"] == "over_temperature"
        after = watcher.history.index(faulted)
        await watcher.wait_for(state_topic, lambda m: m.json()["ocpp_error_code"] == "NoError", timeout=10, after=after)
        # while hot, the charger delivered nothing: its state said 0 W at some point
        hot_states = [m.json() for m in watcher.on(state_topic, after) if m.json()["faults"]]
        assert any(s["power_w"] == 0 for s in hot_states), hot_states
    finally:
        demo.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await demo

    # the history's event log, as written when the gateway stopped (read through its own store)
    store = SqliteHistoryStore(state_dir / "history")
    try:
        events = store.events(HistoryQuery(connector_id=HOT_CONNECTOR, kinds=("fault_raised", "fault_cleared")))
    finally:
        store.close()
    assert [e.kind for e in reversed(events)] == ["fault_raised", "fault_cleared"]  # newest first
    cleared_event = events[0]
    assert cleared_event.detail["kind"] == "over_temperature" and cleared_event.detail["vendor_code"] == "10"
    assert abs(cleared_event.detail["duration_s"] - LASTS_S) <= 2 * POLL_S
