"""The outbox's backlog on MQTT (real Mosquitto): size, oldest age, what was dropped."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.domain.outbox import NewRecord, RecordKind
from gateway.services.outbox import Outbox, OutboxSettings
from tests.fixtures.memory_outbox import MemoryOutboxStore
from tests.fixtures.mosquitto import MosquittoBroker, WatchFactory
from tests.integration.test_mqtt_bridge import bridge_for, field_is, make_site, running


async def test_backlog_size_oldest_age_and_drops_are_published(
    mosquitto: MosquittoBroker, mqtt_watch: WatchFactory, topic_prefix: str
) -> None:
    site = make_site()
    outbox = Outbox(MemoryOutboxStore(), OutboxSettings(max_bytes=600), on_change=site.report_backlog)
    site.follow_backlog(outbox.stats)
    bridge = bridge_for(site, mosquitto.host, mosquitto.port, topic_prefix)
    async with running(bridge):
        watcher = await mqtt_watch(bridge.topics.outbox)
        empty = await watcher.wait_for(bridge.topics.outbox, field_is("records", 0))
        assert empty.retain and empty.json()["oldest_created_at"] is None
        oldest = datetime(2026, 11, 29, 8, 0, tzinfo=UTC).isoformat()
        outbox.enqueue(NewRecord(RecordKind.START, "StartTransaction", {}, oldest, "tx"))
        for minute in range(1, 10):
            created = datetime(2026, 11, 29, 8, minute, tzinfo=UTC).isoformat()
            outbox.enqueue(NewRecord(RecordKind.SAMPLED, "MeterValues", {"n": "x" * 40}, created, "tx"))
        message = await watcher.wait_for(bridge.topics.outbox, lambda m: m.json()["dropped"] > 0)
        payload = message.json()
        assert payload["records"] == len(outbox.store) < 10
        assert payload["oldest_created_at"] == oldest
        assert payload["oldest_age_s"] > 0
        assert payload["size_bytes"] <= 600
