"""Merged mode: what the gateway does with a native charger's values that cannot be billed as
sent (issue 14). The charger is the ocpp library's ChargePoint on the local server, the CSMS the
demo CSMS upstream; every refusal is a CALLERROR and one log line, never a traceback, and the
connection stays up."""

from __future__ import annotations

import asyncio
import errno
import logging
from pathlib import Path
from typing import Any

import pytest
from ocpp.exceptions import InternalError, PropertyConstraintViolationError
from ocpp.v16 import call

from adapters.demo_csms.csms import DemoCsms
from gateway.app import Gateway
from gateway.domain.events import Event, FaultRaised
from gateway.domain.outbox import RecordKind
from gateway.services.event_stream import EventStream
from tests.fixtures.net import free_port, until_answering
from tests.integration.test_ocpp_merged import NativeCharger, at, config_for, merged_site, native_charger
from tests.integration.test_soc_end_to_end import running

OURS = ("adapters", "gateway", "ocpp.local")  # the gateway's loggers (ocpp.local: the library's, ours)


@pytest.fixture(autouse=True)
def _our_lines(caplog: pytest.LogCaptureFixture) -> None:
    """The gateway's lines, DEBUG too (the ocpp library's frame log, id tags and all, is kept at
    WARNING in production, see cli.py)."""
    caplog.set_level(logging.WARNING, logger="ocpp.local")
    caplog.set_level(logging.DEBUG, logger="adapters")
    caplog.set_level(logging.DEBUG, logger="gateway")  # the last call sets the handler's level


def warnings(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith(logger) and r.levelno == logging.WARNING]


def assert_no_trouble(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing the charger sent made the gateway log an error or a traceback."""
    ours = [r for r in caplog.records if r.name.startswith(OURS)]
    assert [r.getMessage() for r in ours if r.levelno >= logging.ERROR or r.exc_info] == []


def register(minute: int, *values: str, measurand: str = "Energy.Active.Import.Register") -> list[dict[str, Any]]:
    sampled = [{"value": value, "measurand": measurand, "unit": "Wh"} for value in values]
    return [{"timestamp": at(minute), "sampledValue": sampled}]


async def start(native: NativeCharger, connector: int, meter_start: int, minute: int) -> int:
    began = call.StartTransaction(
        connector_id=connector, id_tag="CARD-00001234", meter_start=meter_start, timestamp=at(minute)
    )
    answer = await native.call(began, suppress=False)
    assert answer.id_tag_info["status"] == "Accepted"
    return int(answer.transaction_id)


def faults_raised(events: EventStream) -> list[Event]:
    """The FaultRaised events emitted so far (emitted synchronously: all there by now)."""
    raised = []
    while (event := events.get_nowait()) is not None:
        if isinstance(event, FaultRaised):
            raised.append(event)
    return raised


async def test_a_start_sent_again_gets_its_transaction_id_and_starts_nothing_new_upstream(tmp_path: Path) -> None:
    async with merged_site(tmp_path) as (gateway, csms, port), native_charger(port) as native:
        first = await start(native, 2, 5_000, 1)
        again = await start(native, 2, 5_000, 1)  # the charger never saw the first answer
        assert again == first
        stop = call.StopTransaction(transaction_id=first, meter_stop=5_600, timestamp=at(9), reason="Local")
        await native.call(stop, suppress=False)
        stopped = await csms.wait_for("StopTransaction")  # the outbox sends in order: any 2nd start came first
        assert len(csms.messages("StartTransaction")) == 1
        assert (stopped["transactionId"], stopped["meterStop"]) == (csms.last_transaction_id, 5_600)
        assert gateway.site.connectors[2].session is None
        # a new session with other values is a new one
        assert await start(native, 2, 5_600, 10) != first


async def test_a_negative_meter_start_is_refused_without_a_session(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with merged_site(tmp_path) as (gateway, csms, port), native_charger(port) as native:
        began = call.StartTransaction(connector_id=1, id_tag="CARD-00001234", meter_start=-5, timestamp=at(1))
        with pytest.raises(PropertyConstraintViolationError):
            await native.call(began, suppress=False)
        assert gateway.site.connectors[1].session is None
        lines = warnings(caplog, "adapters.ocpp_local")
        assert len(lines) == 1 and "meterStart -5 is negative" in lines[0], lines
        assert not any("CARD-00001234" in r.getMessage() for r in caplog.records if r.name.startswith(OURS))
        assert_no_trouble(caplog)
        assert await start(native, 1, 0, 2) >= 1  # the connection goes on
        assert (await csms.wait_for("StartTransaction"))["meterStart"] == 0  # the refused one never went up


async def test_a_meter_start_the_register_guard_refuses_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with merged_site(tmp_path) as (gateway, _, port), native_charger(port) as native:
        await native.call(call.MeterValues(connector_id=1, meter_value=register(1, "5900")), suppress=False)
        began = call.StartTransaction(connector_id=1, id_tag="CARD-00001234", meter_start=3_000, timestamp=at(2))
        with pytest.raises(PropertyConstraintViolationError):  # the register fell: not a start to bill from
            await native.call(began, suppress=False)
        assert gateway.site.connectors[1].session is None
        lines = warnings(caplog, "adapters.ocpp_local")
        assert len(lines) == 1 and "meterStart 3000 refused" in lines[0], lines
        assert_no_trouble(caplog)


@pytest.mark.parametrize(
    ("value", "measurand"),
    [
        ("NaN", "Energy.Active.Import.Register"),
        ("Infinity", "Energy.Active.Import.Register"),
        ("-Infinity", "Power.Active.Import"),
        ("1e400", "Energy.Active.Import.Register"),
        ("12,5", "Current.Import"),
        ("-1", "Energy.Active.Import.Register"),
    ],
)
async def test_meter_values_the_gateway_cannot_use_are_refused_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, value: str, measurand: str
) -> None:
    async with merged_site(tmp_path) as (gateway, _, port), native_charger(port) as native:
        await native.call(call.MeterValues(connector_id=1, meter_value=register(1, "5900")), suppress=False)
        bad = call.MeterValues(connector_id=1, meter_value=register(2, value, measurand=measurand))
        with pytest.raises(PropertyConstraintViolationError):
            await native.call(bad, suppress=False)
        reading = gateway.site.connectors[1].reading
        assert reading is not None and (reading.energy_wh, reading.power_w) == (5_900, None)  # as it was
        lines = warnings(caplog, "adapters.ocpp_local")
        assert len(lines) == 1 and repr(value) in lines[0] and measurand in lines[0], lines
        assert_no_trouble(caplog)
        await native.call(call.MeterValues(connector_id=1, meter_value=register(3, "6000")), suppress=False)
        assert gateway.site.connectors[1].reading.energy_wh == 6_000  # the connection goes on


@pytest.mark.parametrize("value", ["3000", "1e30", "900000"])  # backwards, absurd, faster than 44 kW
async def test_an_energy_register_the_guard_refuses_is_refused_and_the_register_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, value: str
) -> None:
    async with merged_site(tmp_path) as (gateway, _, port), native_charger(port) as native:
        events = gateway.site.subscribe()
        await native.call(call.MeterValues(connector_id=1, meter_value=register(1, "5900")), suppress=False)
        with pytest.raises(PropertyConstraintViolationError):
            await native.call(call.MeterValues(connector_id=1, meter_value=register(2, value)), suppress=False)
        connector = gateway.site.connectors[1]
        assert connector.reading is not None and connector.reading.energy_wh == 5_900
        assert gateway.site.billing_energy_wh(1) == 5_900
        assert faults_raised(events) == [] and connector.faults == ()  # the charger was told, not the CSMS
        lines = warnings(caplog, "adapters.ocpp_local")
        assert len(lines) == 1 and f"energy register {value!r} refused" in lines[0], lines
        assert warnings(caplog, "gateway.services.billing_registers") == []  # the charger's line is the one
        assert_no_trouble(caplog)


async def test_a_stop_register_below_the_start_or_refused_is_not_billed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with merged_site(tmp_path) as (_, csms, port), native_charger(port) as native:
        below = await start(native, 1, 5_000, 1)
        await native.call(call.MeterValues(connector_id=1, transaction_id=below, meter_value=register(2, "5900")))
        stop = call.StopTransaction(transaction_id=below, meter_stop=4_000, timestamp=at(3), reason="Local")
        await native.call(stop, suppress=False)  # answered as usual: the charger must not send it again
        first = await csms.wait_for("StopTransaction")
        assert first["meterStop"] == 5_900  # the highest good register value, not what the charger said

        refused = await start(native, 2, 10_000, 4)
        await native.call(call.MeterValues(connector_id=2, transaction_id=refused, meter_value=register(5, "10800")))
        stop = call.StopTransaction(transaction_id=refused, meter_stop=10_500, timestamp=at(6), reason="Local")
        await native.call(stop, suppress=False)
        second = await csms.wait_for("StopTransaction", lambda p: p["transactionId"] != first["transactionId"])
        assert second["meterStop"] == 10_800  # above its start, but below what the register read before

        lines = warnings(caplog, "gateway.services.native_chargers")
        assert len(lines) == 2 and "at 4000 Wh" in lines[0] and "at 10500 Wh" in lines[1], lines
        assert_no_trouble(caplog)


async def test_a_reading_from_before_the_sessions_start_is_stale_not_a_fault(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with merged_site(tmp_path) as (gateway, _, port), native_charger(port) as native:
        events = gateway.site.subscribe()
        first = await start(native, 1, 290_000, 1)
        stop = call.StopTransaction(transaction_id=first, meter_stop=293_300, timestamp=at(5), reason="Local")
        await native.call(stop, suppress=False)
        second = await start(native, 1, 296_000, 10)
        late = call.MeterValues(connector_id=1, transaction_id=second, meter_value=register(9, "293300"))
        await native.call(late, suppress=False)  # answered: stale, not wrong
        connector = gateway.site.connectors[1]
        assert connector.reading is not None and connector.reading.energy_wh == 296_000
        assert gateway.site.billing_energy_wh(1) == 296_000
        assert faults_raised(events) == [] and connector.faults == ()
        assert any("older than what is known" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
        assert warnings(caplog, "adapters.ocpp_local") == []
        assert_no_trouble(caplog)


async def test_a_remote_start_with_a_charging_profile_takes_the_profile_to_the_charger(tmp_path: Path) -> None:
    profile = {
        "chargingProfileId": 9,
        "stackLevel": 0,
        "chargingProfilePurpose": "TxProfile",
        "chargingProfileKind": "Relative",
        "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 6.5}]},
    }
    async with merged_site(tmp_path) as (_, csms, port), native_charger(port) as native:
        remote = call.RemoteStartTransaction(id_tag="APP-USER-0042", connector_id=2, charging_profile=profile)
        assert (await csms.call("GW-MERGED", remote)).status == "Accepted"
        action, asked = native.asked[-1]
        assert action == "RemoteStartTransaction" and (asked["id_tag"], asked["connector_id"]) == ("APP-USER-0042", 2)
        relayed = asked["charging_profile"]  # as the charger's library hands it over (snake_case)
        assert (relayed["charging_profile_id"], relayed["charging_profile_purpose"]) == (9, "TxProfile")
        assert relayed["charging_schedule"]["charging_schedule_period"] == [{"start_period": 0, "limit": 6.5}]

        native.remote_start_answer = "Rejected"  # e.g. a profile it cannot apply: its answer decides
        assert (await csms.call("GW-MERGED", remote)).status == "Rejected"


async def test_a_native_session_goes_on_across_a_gateway_restart(tmp_path: Path) -> None:
    """The gateway restarts, the charger does not: its transaction is not stopped for PowerLoss,
    and the charger's own StopTransaction (by the id it was given before) ends it, once."""
    csms_port, server_port = free_port(), free_port()
    csms = DemoCsms("127.0.0.1", csms_port)
    await csms.start()
    config = config_for(csms_port, server_port, tmp_path)
    try:
        async with running(Gateway.build(config)) as first:
            await csms.wait_for("BootNotification")
            async with native_charger(server_port) as native:
                charger_id = await start(native, 1, 5_000, 1)
                began = await csms.wait_for("StartTransaction")
                await asyncio.wait_for(first.upstream.outbox.wait_empty(), 5)  # its answer is in
        async with running(Gateway.build(config)) as gateway:  # a new process on the same state
            assert gateway.site.connectors[1].session is not None  # taken up again, not stopped
            await until_answering("127.0.0.1", server_port)
            async with native_charger(server_port) as native:
                done = call.StopTransaction(
                    transaction_id=charger_id, meter_stop=5_600, timestamp=at(9), reason="Local"
                )
                await native.call(done, suppress=False)
                stop = await csms.wait_for("StopTransaction", timeout=10)
                await asyncio.wait_for(gateway.upstream.outbox.wait_empty(), 5)
        assert len(csms.messages("StartTransaction")) == 1 and len(csms.messages("StopTransaction")) == 1
        assert (stop["reason"], stop["meterStop"], stop["timestamp"]) == ("Local", 5_600, "2026-11-29T12:09:00.000Z")
        assert stop["transactionId"] == csms.last_transaction_id and began["meterStart"] == 5_000
    finally:
        await csms.stop()


async def test_a_native_start_and_stop_are_on_disk_before_the_charger_is_answered(tmp_path: Path) -> None:
    """A charger forgets a message once answered: a kill right after the answer must not lose it.
    Only the local server runs here (the upstream side collects nothing by itself), so what is
    queued when the answer arrives was queued before it was sent."""
    gateway = Gateway.build(config_for(free_port(), free_port(), tmp_path))
    assert gateway.ocpp_server is not None
    await gateway.ocpp_server.start()
    try:
        async with native_charger(gateway.ocpp_server.port) as native:
            charger_id = await start(native, 1, 5_000, 1)
            queued = [info.kind for info in gateway.upstream.outbox.store.index()]
            assert queued == [RecordKind.START]
            done = call.StopTransaction(transaction_id=charger_id, meter_stop=5_100, timestamp=at(2), reason="Local")
            await native.call(done, suppress=False)
            queued = [info.kind for info in gateway.upstream.outbox.store.index()]
            assert queued == [RecordKind.START, RecordKind.STOP]
    finally:
        await gateway.ocpp_server.stop()


async def test_a_native_start_the_disk_refuses_is_not_answered_until_it_is_stored(tmp_path: Path) -> None:
    """Found in review: an answer makes the charger forget the message; held only in memory, a
    crash would lose it. The charger is asked to send it again, and the repeat is the same session."""
    gateway = Gateway.build(config_for(free_port(), free_port(), tmp_path))
    assert gateway.ocpp_server is not None
    store = gateway.upstream.outbox.store
    real_append = store.append

    def full(_record: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    await gateway.ocpp_server.start()
    try:
        async with native_charger(gateway.ocpp_server.port) as native:
            store.append = full  # type: ignore[method-assign]
            began = call.StartTransaction(connector_id=1, id_tag="CARD-00001234", meter_start=5_000, timestamp=at(1))
            with pytest.raises(InternalError):
                await native.call(began, suppress=False)
            store.append = real_append  # type: ignore[method-assign]
            answer = await native.call(began, suppress=False)  # sent again: now stored, then answered
            assert answer.id_tag_info["status"] == "Accepted"
            assert [info.kind for info in store.index()] == [RecordKind.START]  # one session, not two
    finally:
        await gateway.ocpp_server.stop()
