"""Nothing a CSMS sends may end the gateway (issue 15, found in review): frames that cannot be read
and configuration values that would overflow the loops they time."""

from __future__ import annotations

import asyncio

import pytest
from ocpp.v16 import call

from adapters.demo_csms.csms import DemoCsms
from adapters.ocpp_upstream.charge_point import VirtualChargePoint
from tests.fixtures.memory_outbox import memory_outbox
from tests.integration.test_upstream import make_site, running, upstream

__all__ = ["running"]  # the fixture, shared with test_upstream

HOSTILE_FRAMES = [
    '[2,"x1",1,{}]',  # an action that is a number
    '[2,"x2",null,{}]',
    '[2,"x3",["a"],{}]',  # unhashable
    '[2,"x4",{"a":1},{}]',
    "[" * 50_000,  # nesting too deep to parse
    '[2,"x5","Heartbeat",{"a":' + "9" * 5000 + "}]",  # an integer over Python's 4300 digits
    "not json at all",
]


async def test_frames_that_cannot_be_read_leave_the_link_and_the_gateway_running(csms: DemoCsms, running: list) -> None:
    cp = VirtualChargePoint(make_site(), upstream(csms), memory_outbox())
    task = asyncio.create_task(cp.run())
    running.append(task)
    await cp.accepted.wait()
    session = csms.sessions["GW-TEST"]
    for frame in HOSTILE_FRAMES:
        await session._connection.send(frame)
    answer = await asyncio.wait_for(csms.call("GW-TEST", call.GetConfiguration(key=["HeartbeatInterval"])), 5)
    assert answer.configuration_key[0]["value"] == "60"  # the same connection still answers
    assert not task.done() and csms.connections == 1


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ClockAlignedDataInterval", "300000000000"),
        ("HeartbeatInterval", "9" * 400),
        ("ConnectionTimeOut", "9" * 400),
        ("HeartbeatInterval", "\u00b2"),  # a digit to str.isdigit, not to int
        ("MeterValueSampleInterval", "\u0663"),  # an Arabic-Indic three
    ],
)
async def test_a_configuration_value_out_of_range_is_rejected_not_stored(
    csms: DemoCsms, running: list, key: str, value: str
) -> None:
    site = make_site()
    cp = VirtualChargePoint(site, upstream(csms), memory_outbox())
    task = asyncio.create_task(cp.run())
    running.append(task)
    await cp.accepted.wait()
    answer = await asyncio.wait_for(csms.call("GW-TEST", call.ChangeConfiguration(key=key, value=value)), 5)
    assert answer.status == "Rejected"
    await asyncio.sleep(0)  # (a loop that took the value would fail here)
    assert not task.done()
    assert VirtualChargePoint(site, upstream(csms), memory_outbox()).configuration.to_dict().get(key) != value
