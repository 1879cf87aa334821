"""The 2.0.1 CSMS's charging profiles for the EVSEs of a native OCPP 1.6 charger, through the
whole gateway: relayed to the charger in 1.6 terms (its own connector and transaction id), the
charger's answer back as the 2.0.1 one, the copy of what it took counted by the sharing and
reported by GetChargingProfiles, its composite schedule translated. NATIVE-1's connector 1 is
EVSE 2, its connector 2 EVSE 1 (tests/integration/test_ocpp201_native.py's site)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from ocpp.routing import on
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from ocpp.v201 import call

from adapters.ocpp201_upstream import native_relay, statuses
from adapters.ocpp_local.native_limits import GATEWAY_PROFILE_ID_BASE
from tests.integration.test_native_load_sharing import SharingCharger
from tests.integration.test_ocpp201_native import STATION, station_site
from tests.integration.test_ocpp_merged import at, native_charger

WAIT_S = 5.0


@pytest.fixture(autouse=True)
def sharing_charger(monkeypatch: pytest.MonkeyPatch) -> None:
    """``native_charger`` connects a SharingCharger (queues the profiles it gets); short first status."""
    monkeypatch.setattr("tests.integration.test_ocpp_merged.NativeCharger", SharingCharger)
    monkeypatch.setattr(statuses, "FIRST_STATUS_GRACE_S", 0.2)


def profile(profile_id: int, purpose: str, limit_a: float, **more: Any) -> dict[str, Any]:
    """A 2.0.1 ChargingProfileType (camelCase, as a CSMS writes it)."""
    schedule = {"id": 1, "chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit_a}]}
    absolute = purpose != "TxProfile"
    return {
        "id": profile_id,
        "stackLevel": 1,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute" if absolute else "Relative",
        "chargingSchedule": [schedule | ({"startSchedule": "2020-01-01T00:00:00Z"} if absolute else {})],
        **more,
    }


async def csms_profile(native: SharingCharger) -> dict[str, Any]:
    """The next CSMS profile the charger got (the gateway's own share profiles are skipped)."""
    while True:
        payload = await native.next_profile()
        if payload["cs_charging_profiles"]["charging_profile_id"] < GATEWAY_PROFILE_ID_BASE:
            return payload


async def boot_and_start(native: SharingCharger, csms: Any) -> tuple[int, str]:
    """A session on charger connector 1 (EVSE 2): the charger's and the station's transaction ids."""
    await native.call(call16.BootNotification(charge_point_vendor="acme", charge_point_model="x"))
    start = call16.StartTransaction(connector_id=1, id_tag="NATIVE-CARD-01", meter_start=10, timestamp=at(1))
    charger_id = (await native.call(start)).transaction_id
    started = await csms.wait_for("TransactionEvent", lambda p: p["eventType"] == "Started")
    assert started["evse"]["id"] == 2
    return charger_id, started["transactionInfo"]["transactionId"]


async def test_profiles_of_a_native_evse_reach_its_charger_and_their_copy_limits_the_sharing(tmp_path: Path) -> None:
    async with station_site(tmp_path) as (gateway, csms, server_port), native_charger(server_port) as plain:
        native: SharingCharger = plain  # type: ignore[assignment]
        charger_id, transaction_id = await boot_and_start(native, csms)
        store = gateway.site.charging_profiles

        # an unknown transaction, or what 1.6 cannot say: Rejected, the charger never asked
        stranger = profile(6, "TxProfile", 8, transactionId="not-a-transaction")
        answer = await csms.call(STATION, call.SetChargingProfile(evse_id=2, charging_profile=stranger))
        assert answer.status == "Rejected" and answer.status_info["reason_code"] == "TxNotFound"
        two = profile(6, "TxDefaultProfile", 8)
        two["chargingSchedule"] = two["chargingSchedule"] + [{**two["chargingSchedule"][0], "id": 2}]
        outside = profile(6, "ChargingStationExternalConstraints", 8)
        for unsaid in (two, outside):
            answer = await csms.call(STATION, call.SetChargingProfile(evse_id=1, charging_profile=unsaid))
            assert answer.status == "Rejected" and answer.status_info["reason_code"] == "UnsupportedParam"
        await native.round_trip()
        assert native.profiles.empty() and store.get(6) is None

        # a TxProfile: the charger gets it for its own transaction; its copy limits the share
        own = profile(7, "TxProfile", 8, transactionId=transaction_id)
        answer = await csms.call(STATION, call.SetChargingProfile(evse_id=2, charging_profile=own))
        assert answer.status == "Accepted"
        assert await csms_profile(native) == {
            "connector_id": 1,
            "cs_charging_profiles": {
                "charging_profile_id": 7,
                "transaction_id": charger_id,
                "stack_level": 1,
                "charging_profile_purpose": "TxProfile",
                "charging_profile_kind": "Relative",
                "charging_schedule": {
                    "charging_rate_unit": "A",
                    "charging_schedule_period": [{"start_period": 0, "limit": 8}],
                },
            },
        }
        assert store.get(7) is not None and store.get(7).connector_id == 2
        share = await native.gateways_profile()  # the gateway's own share, held to the CSMS's 8 A
        assert share["connector_id"] == 1 and share["cs_charging_profiles"]["transaction_id"] == charger_id
        assert share["cs_charging_profiles"]["charging_schedule"]["charging_schedule_period"][0]["limit"] == 8

        # GetChargingProfiles reports the copy with the station's transactionId
        asked = call.GetChargingProfiles(request_id=41, charging_profile={"chargingProfilePurpose": "TxProfile"})
        assert (await csms.call(STATION, asked)).status == "Accepted"
        report = await csms.wait_for("ReportChargingProfiles", lambda p: p["requestId"] == 41)
        assert report["evseId"] == 2 and [p["id"] for p in report["chargingProfile"]] == [7]
        assert report["chargingProfile"][0]["transactionId"] == transaction_id

        # GetCompositeSchedule: the charger's (10 A from at(0)), capped at its share now (8 A)
        composite = await csms.call(STATION, call.GetCompositeSchedule(duration=600, evse_id=2))
        assert native.last("GetCompositeSchedule") == {"connector_id": 1, "duration": 600}
        assert composite.status == "Accepted"
        assert composite.schedule == {
            "evse_id": 2,
            "duration": 600,
            "schedule_start": at(0),
            "charging_rate_unit": "A",
            "charging_schedule_period": [{"start_period": 0, "limit": 8.0}],
        }

        # 1.6's NotSupported is no 2.0.1 answer: Rejected, saying so; nothing copied
        native.answer = "NotSupported"
        default = profile(10, "TxDefaultProfile", 12)
        answer = await csms.call(STATION, call.SetChargingProfile(evse_id=1, charging_profile=default))
        assert answer.status == "Rejected" and answer.status_info["reason_code"] == "NotSupported"
        assert (await csms_profile(native))["cs_charging_profiles"]["charging_profile_id"] == 10
        assert store.get(10) is None
        native.answer = "Accepted"

        # a TxDefaultProfile on EVSE 1, cleared by criteria; the TxProfile by its id
        default = profile(9, "TxDefaultProfile", 12)
        answer = await csms.call(STATION, call.SetChargingProfile(evse_id=1, charging_profile=default))
        assert answer.status == "Accepted" and (await csms_profile(native))["connector_id"] == 2
        criteria = {"evseId": 1, "chargingProfilePurpose": "TxDefaultProfile"}
        cleared = await csms.call(STATION, call.ClearChargingProfile(charging_profile_criteria=criteria))
        assert cleared.status == "Accepted" and store.get(9) is None
        assert native.last("ClearChargingProfile") == {
            "connector_id": 2,
            "charging_profile_purpose": "TxDefaultProfile",
        }
        cleared = await csms.call(STATION, call.ClearChargingProfile(charging_profile_id=7))
        assert cleared.status == "Accepted" and store.get(7) is None
        assert native.last("ClearChargingProfile") == {"id": 7, "connector_id": 1}
        gone = await csms.call(STATION, call.ClearChargingProfile(charging_profile_id=7))
        assert gone.status == "Unknown"  # no copy left: the station's own answer, the charger not asked
        assert native.last("ClearChargingProfile") == {"id": 7, "connector_id": 1}
        assert len([a for a, _ in native.asked if a == "ClearChargingProfile"]) == 2


async def test_a_remote_start_with_a_profile_takes_it_to_the_charger(tmp_path: Path) -> None:
    async with station_site(tmp_path) as (gateway, csms, server_port), native_charger(server_port) as native:
        await native.call(call16.BootNotification(charge_point_vendor="acme", charge_point_model="x"))
        token = {"id_token": "APP-USER-0042", "type": "eMAID"}
        tx_profile = profile(11, "TxProfile", 10)
        asked = call.RequestStartTransaction(id_token=token, remote_start_id=5, evse_id=1, charging_profile=tx_profile)
        assert (await csms.call(STATION, asked)).status == "Accepted"
        relayed = native.last("RemoteStartTransaction")
        assert relayed is not None and relayed["connector_id"] == 2
        assert relayed["charging_profile"]["charging_profile_id"] == 11
        assert relayed["charging_profile"]["charging_profile_purpose"] == "TxProfile"
        assert "transaction_id" not in relayed["charging_profile"]
        mirrored = gateway.site.charging_profiles.get(11)
        assert mirrored is not None and mirrored.connector_id == 1 and mirrored.transaction_id is None
        with_id = profile(12, "TxProfile", 10, transactionId="x")  # F01: no transactionId yet
        asked = call.RequestStartTransaction(id_token=token, remote_start_id=6, evse_id=1, charging_profile=with_id)
        refused = await csms.call(STATION, asked)
        assert refused.status == "Rejected" and refused.status_info["reason_code"] == "InvalidProfile"
        assert native.last("RemoteStartTransaction")["charging_profile"]["charging_profile_id"] == 11
        native.clear_answer = "Unknown"  # found in review: the station's clear-all took the copy all the same
        kept = await csms.call(STATION, call.ClearChargingProfile())
        assert kept.status == "Unknown" and native.last("ClearChargingProfile") == {"connector_id": 2}
        assert gateway.site.charging_profiles.get(11) is not None  # the charger still limits itself
        native.clear_answer = "Accepted"
        everything = await csms.call(STATION, call.ClearChargingProfile())  # no criteria: its charger too
        assert everything.status == "Accepted" and native.last("ClearChargingProfile") == {"connector_id": 2}
        assert gateway.site.charging_profiles.get(11) is None


class SilentCharger(SharingCharger):
    """A native charger that never answers a SetChargingProfile (until released)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release = asyncio.Event()

    @on(Action16.set_charging_profile)
    async def on_set_profile(self, **payload: Any) -> result16.SetChargingProfile:
        self.asked.append(("SetChargingProfile", payload))
        await self.release.wait()
        return result16.SetChargingProfile(status="Accepted")

    @on(Action16.get_composite_schedule)
    def on_composite(self, **payload: Any) -> result16.GetCompositeSchedule:
        self.asked.append(("GetCompositeSchedule", payload))
        return result16.GetCompositeSchedule(status="Rejected")


async def test_a_charger_that_does_not_answer_is_no_answer_and_nothing_is_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tests.integration.test_ocpp_merged.NativeCharger", SilentCharger)
    monkeypatch.setattr(native_relay, "RELAY_TIMEOUT_S", 0.5)
    async with station_site(tmp_path) as (gateway, csms, server_port), native_charger(server_port) as plain:
        native: SilentCharger = plain  # type: ignore[assignment]
        await native.call(call16.BootNotification(charge_point_vendor="acme", charge_point_model="x"))
        refused = await csms.call(STATION, call.GetCompositeSchedule(duration=60, evse_id=1))
        assert refused.status == "Rejected" and native.last("GetCompositeSchedule") == {
            "connector_id": 2,
            "duration": 60,
        }
        try:
            default = profile(9, "TxDefaultProfile", 12)
            answer = await csms.call(STATION, call.SetChargingProfile(evse_id=1, charging_profile=default))
            assert answer.status == "Rejected" and answer.status_info["reason_code"] == "NoAnswer"
            assert native.last("SetChargingProfile") is not None  # it was asked, and kept silent
            assert gateway.site.charging_profiles.get(9) is None
        finally:
            native.release.set()
        asked = call.GetChargingProfiles(request_id=42, charging_profile={})
        assert (await csms.call(STATION, asked)).status == "NoProfiles"
