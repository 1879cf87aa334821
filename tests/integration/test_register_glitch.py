"""Issue 14, finding 1: a Phoenix EV-ETH whose energy register (HR 904) reads 1 GWh for a moment.

Against a real Modbus simulator of the charger and the real ``ocpp`` CSMS: the glitch is reported
as a meter fault, never billed, the connector heals by itself when the register reads true again,
and the next session bills from the true register.
"""

from __future__ import annotations

from ocpp.v16 import call

from adapters.demo_csms.csms import DemoCsms
from tests.integration.test_end_to_end import Site, site

__all__ = ["site"]  # the fixture: a gateway polling simulators every 0.2 s, connector 2 a Phoenix EV-ETH

GLITCH_WH = 1_000_000_000


def samples(message: dict, measurand: str) -> list[float]:
    return [
        float(sample["value"])
        for value in message["meterValue"]
        for sample in value["sampledValue"]
        if sample.get("measurand") == measurand
    ]


def energies(message: dict) -> list[float]:
    return samples(message, "Energy.Active.Import.Register")


def power(message: dict) -> list[float]:
    return samples(message, "Power.Active.Import")


async def remote_session(site: Site, csms: DemoCsms, id_tag: str) -> dict:
    answer = await csms.call("GW-E2E", call.RemoteStartTransaction(id_tag=id_tag, connector_id=2))
    assert answer.status == "Accepted"
    site.right.plug_in()
    return await csms.wait_for("StartTransaction", lambda p: p["idTag"] == id_tag, timeout=10)


async def test_a_register_glitch_is_a_meter_fault_never_a_bill(site: Site, csms: DemoCsms) -> None:
    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 2 and p["status"] == "Available")
    start = await remote_session(site, csms, "APP-1")
    assert start["meterStart"] == 2_000_000
    site.right.start_charging(7_400)
    site.right.tick(120)  # two minutes of charging: 247 Wh
    true_wh = site.right.get("energy_wh")
    site.right.set("energy_wh", GLITCH_WH)  # HR 904 garbled for a moment
    faulted = await csms.wait_for(
        "StatusNotification", lambda p: p["connectorId"] == 2 and p["errorCode"] == "PowerMeterFailure", timeout=10
    )
    assert faulted["status"] == "Faulted" and faulted["vendorErrorCode"] == "EnergyImplausible"
    during = await csms.wait_for("MeterValues", lambda p: p["connectorId"] == 2 and len(power(p)) > 0, timeout=5)
    assert energies(during) == []  # sampled while the register glitched: power yes, the glitch never
    site.right.set("energy_wh", true_wh)  # and true again: healed without a restart
    await csms.wait_for(
        "StatusNotification", lambda p: p["connectorId"] == 2 and p["status"] == "Charging" and p is not faulted
    )
    site.right.unplug()
    stop = await csms.wait_for("StopTransaction", timeout=10)
    assert stop["meterStop"] == true_wh == 2_000_247  # not 1 GWh
    mine = [m for m in csms.messages("MeterValues") if m.get("transactionId") == stop["transactionId"]]
    assert mine and all(value <= stop["meterStop"] for message in mine for value in energies(message))

    await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 2 and p["status"] == "Available")
    second = await remote_session(site, csms, "APP-2")
    assert second["meterStart"] == true_wh  # the next session bills from the true register
