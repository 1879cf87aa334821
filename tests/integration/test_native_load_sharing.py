"""A merged native charger takes part in the site's power sharing: it gets the gateway's own
TxProfile (stack level 100, profile id 2,000,000,000 + its site connector) with its share, the
CSMS's own profiles still reach it, and GetCompositeSchedule tells the CSMS what is allowed now."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from ocpp.routing import on
from ocpp.v16 import call, call_result
from ocpp.v16.enums import Action

from adapters.ocpp_local.native_limits import GATEWAY_PROFILE_ID_BASE, GATEWAY_STACK_LEVEL
from gateway.domain.events import TransactionNumbered
from tests.integration.test_ocpp_merged import NativeCharger, at, merged_site, native_charger

WAIT_S = 5.0


class SharingCharger(NativeCharger):
    """A native charger that queues every SetChargingProfile it gets and answers ``answer``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.profiles: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.answer = "Accepted"

    @on(Action.set_charging_profile)
    def on_set_profile(self, **payload: Any) -> call_result.SetChargingProfile:
        self.asked.append(("SetChargingProfile", payload))
        self.profiles.put_nowait(payload)
        return call_result.SetChargingProfile(status=self.answer)

    async def next_profile(self) -> dict[str, Any]:
        return await asyncio.wait_for(self.profiles.get(), WAIT_S)

    async def gateways_profile(self) -> dict[str, Any]:
        """The next profile of the gateway's own (CSMS profiles relayed meanwhile are skipped)."""
        while True:
            payload = await self.next_profile()
            if payload["cs_charging_profiles"]["charging_profile_id"] >= GATEWAY_PROFILE_ID_BASE:
                return payload

    async def round_trip(self) -> None:
        """Two messages answered: whatever the gateway would send after the first has been sent."""
        await self.call(call.Heartbeat())
        await self.call(call.Heartbeat())


def gateway_profile(connector: int, transaction_id: int, limit_a: float) -> dict[str, Any]:
    return {
        "connector_id": connector,
        "cs_charging_profiles": {
            "charging_profile_id": GATEWAY_PROFILE_ID_BASE + 2,  # the site's connector 2
            "transaction_id": transaction_id,
            "stack_level": GATEWAY_STACK_LEVEL,
            "charging_profile_purpose": "TxProfile",
            "charging_profile_kind": "Relative",
            "charging_schedule": {
                "charging_rate_unit": "A",
                "charging_schedule_period": [{"start_period": 0, "limit": limit_a}],
            },
        },
    }


def csms_profile(profile_id: int, purpose: str, limit_a: float, stack_level: int = 1, **more: Any) -> dict[str, Any]:
    return {
        "charging_profile_id": profile_id,
        "stack_level": stack_level,
        "charging_profile_purpose": purpose,
        "charging_profile_kind": "Relative" if purpose == "TxProfile" else "Absolute",
        "charging_schedule": {
            "charging_rate_unit": "A",
            "charging_schedule_period": [{"start_period": 0, "limit": limit_a}],
            **({} if purpose == "TxProfile" else {"start_schedule": "2020-01-01T00:00:00Z"}),
        },
        **more,
    }


async def started(gateway: Any, native: NativeCharger) -> tuple[int, int]:
    """A session on the charger's connector 2 (the site's 2): its charger and CSMS transaction ids."""
    events = gateway.site.subscribe()
    start = await native.call(
        call.StartTransaction(connector_id=2, id_tag="APP-USER-0042", meter_start=10, timestamp=at(1))
    )
    async with asyncio.timeout(WAIT_S):
        while not isinstance(numbered := await events.get(), TransactionNumbered):
            pass
    gateway.site.unsubscribe(events)
    return start.transaction_id, numbered.transaction_id


@pytest.fixture(autouse=True)
def sharing_charger(monkeypatch: pytest.MonkeyPatch) -> None:
    """``native_charger`` connects a SharingCharger."""
    monkeypatch.setattr("tests.integration.test_ocpp_merged.NativeCharger", SharingCharger)


async def test_a_native_charger_gets_its_share_and_the_csms_profiles_still_reach_it(tmp_path: Path) -> None:
    async with merged_site(tmp_path) as (gateway, csms, server_port), native_charger(server_port) as plain:
        native: SharingCharger = plain  # type: ignore[assignment]
        charger_tx, csms_tx = await started(gateway, native)
        await native.round_trip()
        assert native.profiles.empty()  # nothing shared, nothing limits it: nothing sent

        # the CSMS limits the whole site: the one session gets it all, as the gateway's TxProfile
        site_max = call.SetChargingProfile(
            connector_id=0, cs_charging_profiles=csms_profile(1, "ChargePointMaxProfile", 20)
        )
        assert (await csms.call("GW-MERGED", site_max)).status == "Accepted"
        assert await native.gateways_profile() == gateway_profile(2, charger_tx, 20.0)

        # a site limit (MQTT) cuts the share: the charger is told at once, the same profile id
        gateway.site.load.set_site_limit(10.0)
        assert await native.gateways_profile() == gateway_profile(2, charger_tx, 10.0)

        # the CSMS's own TxProfile for the session reaches the charger (its transaction id), and
        # the share follows it, so it stays in force under the gateway's profile
        own = csms_profile(7, "TxProfile", 8, transaction_id=csms_tx)
        assert (await csms.call("GW-MERGED", call.SetChargingProfile(2, own))).status == "Accepted"
        relayed = await native.next_profile()
        assert relayed["cs_charging_profiles"]["charging_profile_id"] == 7
        assert relayed["cs_charging_profiles"]["transaction_id"] == charger_tx
        assert relayed["cs_charging_profiles"]["stack_level"] == 1
        assert await native.gateways_profile() == gateway_profile(2, charger_tx, 8.0)

        # a CSMS profile that would take the gateway's place never reaches the charger
        above = csms_profile(8, "TxProfile", 16, stack_level=GATEWAY_STACK_LEVEL, transaction_id=csms_tx)
        assert (await csms.call("GW-MERGED", call.SetChargingProfile(2, above))).status == "Rejected"
        taken_id = csms_profile(GATEWAY_PROFILE_ID_BASE + 2, "TxDefaultProfile", 16)
        assert (await csms.call("GW-MERGED", call.SetChargingProfile(2, taken_id))).status == "Rejected"
        await native.round_trip()
        assert native.profiles.empty()

        # GetCompositeSchedule: connector 0 the shared limit now, connector 2 its share now
        whole = await csms.call("GW-MERGED", call.GetCompositeSchedule(connector_id=0, duration=600))
        assert whole.status == "Accepted"
        assert whole.charging_schedule["charging_schedule_period"][0]["limit"] == 10.0  # not the CSMS's 20
        in_watts = call.GetCompositeSchedule(connector_id=0, duration=600, charging_rate_unit="W")
        whole_w = await csms.call("GW-MERGED", in_watts)
        assert whole_w.charging_schedule["charging_schedule_period"][0]["limit"] == 10.0 * 230 * 3
        one = await csms.call("GW-MERGED", call.GetCompositeSchedule(connector_id=2, duration=600))
        assert one.status == "Accepted"
        assert one.charging_schedule["charging_schedule_period"][0]["limit"] == 8.0  # the charger said 10

        # the CSMS clears its profile: the share rises again (the site limit binds)
        cleared = await csms.call("GW-MERGED", call.ClearChargingProfile(id=7, connector_id=2))
        assert cleared.status == "Accepted"
        # (its own share may come first: the charger may have cleared the gateway's profile too)
        while (sent := await native.gateways_profile()) != gateway_profile(2, charger_tx, 10.0):
            assert sent == gateway_profile(2, charger_tx, 8.0)


async def test_a_charger_that_refuses_is_told_once_and_gets_its_share_again_after_a_reconnect(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with merged_site(tmp_path) as (gateway, _, server_port):
        async with native_charger(server_port) as plain:
            native: SharingCharger = plain  # type: ignore[assignment]
            charger_tx, _ = await started(gateway, native)
            native.answer = "Rejected"
            with caplog.at_level(logging.WARNING, logger="adapters.ocpp_local.native_limits"):
                gateway.site.load.set_site_limit(16.0)
                assert await native.gateways_profile() == gateway_profile(2, charger_tx, 16.0)
                await native.round_trip()  # its messages do not make the gateway try again
                await native.round_trip()
                assert native.profiles.empty()
            refusals = [r for r in caplog.records if "did not take the gateway's profile" in r.getMessage()]
            assert len(refusals) == 1 and "Rejected" in refusals[0].getMessage()
            native.answer = "Accepted"
            gateway.site.load.set_site_limit(12.0)  # a new share is tried
            assert await native.gateways_profile() == gateway_profile(2, charger_tx, 12.0)
        # the charger reconnects mid-session: its share is sent again with its first message
        async with native_charger(server_port) as plain:
            native = plain  # type: ignore[assignment]
            assert native.profiles.empty()
            await native.call(call.StatusNotification(connector_id=2, error_code="NoError", status="Charging"))
            assert await native.gateways_profile() == gateway_profile(2, charger_tx, 12.0)
