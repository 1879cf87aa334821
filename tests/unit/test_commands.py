"""Commands as register writes (current limit, enable, watchdog), from the shipped profiles; no sockets."""

from __future__ import annotations

import math
import struct

import pytest

from adapters.modbus.commands import CommandPlanner, RegisterWrite
from adapters.modbus.layout import DeviceMap
from adapters.modbus.profile import load_profile
from gateway.domain.errors import CommandRejected


def planner(name: str, sockets: int = 1) -> CommandPlanner:
    return CommandPlanner(DeviceMap(load_profile(name), sockets=sockets), "dev")


def f32(value: float) -> tuple[int, int]:
    high, low = struct.unpack(">HH", struct.pack(">f", value))
    return high, low


def test_a_limit_is_rounded_down_to_the_register_resolution() -> None:
    # ABB: u32 mA, FC16 for both registers
    assert planner("abb-terra-ac").current_limit(10.4567) == [
        RegisterWrite(1, "holding", 0x4100, (0, 10456), 16, "current limit 10.456 A")
    ]
    # Bender: u16 whole amperes, FC6 for one register
    (write,) = planner("bender-cc613").current_limit(13.99)
    assert (write.address, write.values, write.function) == (1000, (13,), 6)
    # Heidelberg: 0.1 A, FC16 forced for a single register as evcc does
    (write,) = planner("heidelberg-ec").current_limit(10.0)
    assert (write.address, write.values, write.function) == (261, (100,), 16)
    # Alfen: float amperes, rounded down to 0.1 A, on the socket's own unit id
    (write,) = planner("alfen-ng9xx", sockets=2).current_limit(10.46, socket=2)
    assert (write.unit_id, write.address, write.values, write.function) == (2, 1210, f32(10.4), 16)


def test_below_the_minimum_charging_pauses_as_the_profile_says() -> None:
    # off = "zero": the limit register gets 0
    (write,) = planner("bender-cc613").current_limit(5.9)
    assert write.values == (0,) and "pause" in write.purpose
    # off = "disable": the enable coil goes off and the limit register is left alone
    phoenix = planner("phoenix-ev-eth")
    assert phoenix.current_limit(3) == [RegisterWrite(255, "coil", 400, (0,), 5, "current limit 3 A: pause")]
    # back above the minimum: limit, then enable on again
    assert [(w.table, w.address, w.values) for w in phoenix.current_limit(16)] == [
        ("holding", 528, (16,)),
        ("coil", 400, (1,)),
    ]


def test_enable_through_the_current_limit_replays_the_last_limit() -> None:
    bender = planner("bender-cc613")
    # never limited: the charger's own maximum (a session without smart charging charges at full power)
    assert [w.values for w in bender.enable(True)] == [(32,)]
    bender.current_limit(20)
    assert [w.values for w in bender.enable(False)] == [(0,)]
    assert bender.current_limit(16)[0].values == (0,)  # disabled: a new limit is remembered, not applied
    assert [w.values for w in bender.enable(True)] == [(16,)]


def test_enable_register_and_pause_do_not_fight() -> None:
    mennekes = planner("mennekes-amtron-compact")
    mennekes.current_limit(4)  # paused by the limit
    assert [(w.address, w.values) for w in mennekes.enable(True)] == [(0x0D05, (0,))]  # stays paused
    mennekes.current_limit(8)
    assert [(w.address, w.values) for w in mennekes.enable(True)] == [(0x0D05, (1,))]


@pytest.mark.parametrize("amps", [-1.0, math.nan, math.inf, 33.0])
def test_values_the_charger_cannot_take_are_rejected(amps: float) -> None:
    with pytest.raises(CommandRejected, match="dev: "):
        planner("bender-cc613").current_limit(amps)


def test_profiles_without_commands_and_unknown_sockets_are_rejected() -> None:
    with pytest.raises(CommandRejected, match="cannot set a current limit"):
        CommandPlanner(DeviceMap(load_profile("eastron-sdm630")), "meter").current_limit(10)
    with pytest.raises(CommandRejected, match="no socket 3"):
        planner("alfen-ng9xx", sockets=2).current_limit(10, socket=3)


def test_watchdog_writes_follow_the_profile() -> None:
    (write,) = planner("webasto-next").watchdog_writes()
    assert (write.address, write.values, write.function) == (6000, (1,), 6)
    (write,) = planner("mennekes-amtron-compact").watchdog_writes()
    assert write.values == (0x55AA,)
    alfen = planner("alfen-ng9xx", sockets=2)
    assert alfen.watchdog_writes() == []  # validity time: nothing to renew before a limit was set
    alfen.current_limit(12, socket=2)
    assert [(w.unit_id, w.values) for w in alfen.watchdog_writes()] == [(2, f32(12.0))]
    assert planner("bender-cc613").watchdog_writes() == []  # no watchdog


def test_restore_repeats_every_command_once() -> None:
    phoenix = planner("phoenix-ev-eth")
    assert phoenix.restore_writes() == []
    phoenix.current_limit(10)
    phoenix.enable(False)
    assert [(w.table, w.values) for w in phoenix.restore_writes()] == [("holding", (10,)), ("coil", (0,))]
