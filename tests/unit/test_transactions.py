"""The per-connector session state machine, one full session per policy and the edge cases."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from gateway.domain.transactions import (
    Authorize,
    AuthPolicy,
    AuthStatus,
    EnableCharging,
    Phase,
    StartTransaction,
    StopReason,
    StopTransaction,
    TransactionMachine,
)

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_free_policy_starts_on_plug_in_and_stops_on_unplug() -> None:
    machine = TransactionMachine(1, AuthPolicy.FREE, free_id_tag="SITE-FREE")
    start = machine.on_plugged(1_000_000, at(0))
    assert isinstance(start[0], StartTransaction)
    assert (start[0].id_tag, start[0].meter_start_wh, start[0].started_at) == ("SITE-FREE", 1_000_000, at(0))
    assert start[1] == EnableCharging(1, True)
    stop = machine.on_unplugged(1_011_000, at(90))
    assert stop[0] == EnableCharging(1, False)
    assert stop[1] == StopTransaction(1, start[0].local_ref, "SITE-FREE", 1_011_000, at(90), StopReason.EV_DISCONNECTED)
    assert machine.phase is Phase.IDLE


def test_free_policy_needs_a_tag() -> None:
    with pytest.raises(ValueError):
        TransactionMachine(1, AuthPolicy.FREE)


def test_remote_start_before_the_car_arrives() -> None:
    machine = TransactionMachine(2, AuthPolicy.REMOTE)
    assert machine.on_plugged(500, at(0)) == []  # nobody authorised it yet
    machine.on_unplugged(500, at(1))
    accepted, effects = machine.on_remote_start("APP-123", authorize_first=False, energy_wh=500, at=at(2))
    assert accepted and effects == []  # waits for the car
    effects = machine.on_plugged(500, at(3))
    assert [type(e) for e in effects] == [StartTransaction, EnableCharging]
    assert machine.on_remote_start("OTHER", authorize_first=False, energy_wh=500, at=at(4)) == (False, [])
    accepted, effects = machine.on_remote_stop(7_500, at(60))
    assert accepted
    assert isinstance(effects[1], StopTransaction) and effects[1].reason is StopReason.REMOTE
    assert effects[1].meter_stop_wh == 7_500
    assert machine.on_remote_stop(7_500, at(61)) == (False, [])


def test_remote_start_with_authorize_first_and_car_already_plugged() -> None:
    machine = TransactionMachine(1, AuthPolicy.REMOTE)
    machine.on_plugged(100, at(0))
    accepted, effects = machine.on_remote_start("APP-9", authorize_first=True, energy_wh=100, at=at(1))
    assert accepted and effects == [Authorize(1, "APP-9")]
    effects = machine.on_authorization("APP-9", AuthStatus.ACCEPTED, 100, at(2))
    assert isinstance(effects[0], StartTransaction) and effects[0].started_at == at(2)


def test_local_list_card_starts_and_the_same_card_stops() -> None:
    machine = TransactionMachine(1, AuthPolicy.LOCAL_LIST)
    assert machine.on_id_tag("CARD-1", 10, at(0)) == [Authorize(1, "CARD-1")]
    assert machine.on_authorization("CARD-1", AuthStatus.ACCEPTED, 10, at(0)) == []  # no car yet
    effects = machine.on_plugged(10, at(1))
    assert isinstance(effects[0], StartTransaction) and effects[0].id_tag == "CARD-1"
    assert machine.on_id_tag("CARD-2", 20, at(30)) == []  # someone else's card does not stop it
    effects = machine.on_id_tag("CARD-1", 4_010, at(45))
    assert isinstance(effects[1], StopTransaction) and effects[1].reason is StopReason.LOCAL
    assert machine.on_unplugged(4_010, at(46)) == []  # already stopped


def test_rejected_card_never_enables_the_charger() -> None:
    machine = TransactionMachine(1, AuthPolicy.LOCAL_LIST)
    machine.on_plugged(10, at(0))
    machine.on_id_tag("STOLEN", 10, at(1))
    assert machine.on_authorization("STOLEN", AuthStatus.BLOCKED, 10, at(1)) == []
    assert machine.phase is Phase.IDLE
    assert machine.on_authorization("STOLEN", AuthStatus.ACCEPTED, 10, at(2)) == []  # a late answer is ignored


def test_start_rejected_by_the_csms() -> None:
    machine = TransactionMachine(1, AuthPolicy.FREE, free_id_tag="X")
    machine.on_plugged(10, at(0))
    effects = machine.on_start_rejected(12, at(0.1), stop_on_invalid_id=True)
    assert isinstance(effects[1], StopTransaction) and effects[1].reason is StopReason.DEAUTHORIZED
    machine.on_unplugged(12, at(1))
    machine.on_plugged(12, at(2))
    assert machine.on_start_rejected(12, at(2.1), stop_on_invalid_id=False) == [EnableCharging(1, False)]
    assert machine.phase is Phase.ACTIVE  # the session stays open, the charger delivers nothing


def test_gateway_initiated_stop_and_unique_refs() -> None:
    machine = TransactionMachine(3, AuthPolicy.FREE, free_id_tag="X")
    first = machine.on_plugged(10, at(0))[0]
    effects = machine.stop(20, at(5), StopReason.SOFT_RESET)
    assert isinstance(effects[1], StopTransaction) and effects[1].reason is StopReason.SOFT_RESET
    assert machine.stop(20, at(6), StopReason.SOFT_RESET) == []
    machine.on_unplugged(20, at(7))
    second = machine.on_plugged(20, at(8))[0]
    assert isinstance(first, StartTransaction) and isinstance(second, StartTransaction)
    assert first.local_ref != second.local_ref


def test_an_authorisation_expires_when_no_car_comes() -> None:
    machine = TransactionMachine(1, AuthPolicy.REMOTE)
    machine.on_remote_start("APP", authorize_first=False, energy_wh=0, at=at(0))
    assert not machine.expire(at(0.5), timeout_s=60)
    assert machine.expire(at(1), timeout_s=60)
    assert machine.phase is Phase.IDLE
    assert machine.on_plugged(0, at(2)) == []  # the car came too late: no session


def test_a_session_reference_is_never_given_again_after_a_restart() -> None:
    """A kill and a new session in the same second on the same connector (issue 14, kill test)."""
    code = (
        "from datetime import UTC, datetime; from gateway.domain.transactions import new_local_ref; "
        "print(new_local_ref(1, datetime(2026, 1, 1, tzinfo=UTC)))"
    )
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True) for _ in range(2)]
    first, second = (run.stdout.strip() for run in runs)
    assert first.startswith("c1-20260101T000000-") and first != second
