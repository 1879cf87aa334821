"""The site owner's MQTT commands without a broker: current ceiling, availability, start/stop,
and the per-topic rate limit."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from adapters.mqtt.commands import RATE_LIMIT, RATE_WINDOW_S, CommandHandler
from adapters.mqtt.payloads import Topics
from gateway.domain.events import CurrentLimitRequested, SiteLimitChanged
from gateway.domain.model import ChargerSnapshot, Connector, Reading, VehicleState
from gateway.domain.transactions import Authorize, AuthPolicy, AuthStatus, StartTransaction, StopReason, StopTransaction
from gateway.services.charging_limits import LimitKeeper
from gateway.services.sessions import ConnectorPolicy
from gateway.services.site import Site
from tests.fixtures.settings import DictSettings

T0 = datetime(2026, 5, 1, 18, 0, tzinfo=UTC)
TOPICS = Topics("gw/site")
ALL = ("current_limit", "availability", "session")


class FixedClock:
    def now(self) -> datetime:
        return T0


class Ticker:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def make(policy: AuthPolicy = AuthPolicy.REMOTE) -> tuple[Site, CommandHandler, Ticker]:
    site = Site(
        [Connector(1, "wb"), Connector(2, "wb", socket=2)],
        [],
        clock=FixedClock(),
        policies={1: ConnectorPolicy(policy, "HOME-TAG"), 2: ConnectorPolicy(AuthPolicy.FREE, "FREE")},
    )
    ticker = Ticker()
    return site, CommandHandler(site, TOPICS, ALL, monotonic=ticker), ticker


def send(commands: CommandHandler, command: str, payload: bytes, connector: int = 1) -> object:
    return commands.handle(f"gw/site/connector/{connector}/set/{command}", payload, retained=False)


def test_current_limit_sets_and_lifts_the_ceiling() -> None:
    site, commands, _ = make()
    assert send(commands, "current_limit", b'{"current_a": 10}') is None
    assert site.connectors[1].current_ceiling_a == 10.0
    assert send(commands, "current_limit", b'{"current_a": null}') is None
    assert site.connectors[1].current_ceiling_a is None


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"current_a": -1}', "between 0 and 80"),
        (b'{"current_a": 500}', "between 0 and 80"),
        (b'{"current_a": "16"}', "must be a number"),
        (b'{"amps": 16}', "unknown key"),
    ],
)
def test_an_invalid_current_limit_changes_nothing(payload: bytes, reason: str) -> None:
    site, commands, _ = make()
    error = send(commands, "current_limit", payload)
    assert isinstance(error, dict) and reason in error["reason"]
    assert site.connectors[1].current_ceiling_a is None


def test_availability_takes_a_connector_out_of_service_and_back() -> None:
    site, commands, _ = make()
    assert send(commands, "available", b'{"available": false}') is None
    assert site.connectors[1].available is False
    assert send(commands, "available", b'{"available": true}') is None
    assert site.connectors[1].available is True
    error = send(commands, "available", b'{"available": "no"}')
    assert isinstance(error, dict) and "true or false" in error["reason"]
    error = send(commands, "available", b'{"available": false}', connector=9)
    assert isinstance(error, dict) and "no connector 9" in error["reason"]


def test_start_on_a_remote_connector_is_authorised_first_then_stop_ends_it_locally() -> None:
    site, commands, _ = make()
    events = site.subscribe()
    site.apply(ChargerSnapshot("wb", 1, Reading(T0, energy_wh=500), vehicle_state=VehicleState.B))
    assert send(commands, "session", b'{"action": "start", "id_tag": "CARD-1"}') is None
    seen = []
    while (event := events.get_nowait()) is not None:
        seen.append(event)
    assert Authorize(1, "CARD-1") in seen  # like a card: the CSMS or the local list decides
    site.authorization_result(1, "CARD-1", AuthStatus.ACCEPTED)
    starts = [e for e in iter(events.get_nowait, None) if isinstance(e, StartTransaction)]
    assert [s.id_tag for s in starts] == ["CARD-1"]
    assert send(commands, "session", b'{"action": "stop"}') is None
    stops = [e for e in iter(events.get_nowait, None) if isinstance(e, StopTransaction)]
    assert [s.reason for s in stops] == [StopReason.LOCAL]
    error = send(commands, "session", b'{"action": "stop"}')
    assert isinstance(error, dict) and "no session" in error["reason"]


def test_start_is_refused_where_the_policy_starts_sessions_by_itself() -> None:
    _, commands, _ = make()
    error = send(commands, "session", b'{"action": "start"}', connector=2)
    assert isinstance(error, dict) and "free policy" in error["reason"]
    error = send(commands, "session", b'{"action": "pause"}')
    assert isinstance(error, dict) and 'must be "start" or "stop"' in error["reason"]


def test_a_flood_is_dropped_beyond_the_rate_limit_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    site, commands, ticker = make()
    caplog.set_level(logging.DEBUG, logger="adapters.mqtt.commands")
    for amps in range(6, 6 + RATE_LIMIT + 5):
        send(commands, "current_limit", f'{{"current_a": {amps}}}'.encode())
    assert site.connectors[1].current_ceiling_a == 6 + RATE_LIMIT - 1  # the rest was dropped
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "dropped" in r.message]
    assert len(warnings) == 1
    ticker.now_s += RATE_WINDOW_S
    send(commands, "current_limit", b'{"current_a": 20}')
    assert site.connectors[1].current_ceiling_a == 20.0  # the window moved on
    send(commands, "available", b'{"available": false}')  # other topics have their own budget
    assert site.connectors[1].available is False


def test_the_ceiling_caps_the_limit_survives_a_restart_and_wakes_the_keeper() -> None:
    settings = DictSettings()
    site = Site([Connector(1, "wb")], [], clock=FixedClock(), settings=settings)
    keeper = LimitKeeper(site, site.charging_profiles, {1: 32.0})
    site.apply(ChargerSnapshot("wb", 1, Reading(T0, energy_wh=500), vehicle_state=VehicleState.C))
    assert site.connectors[1].session is not None  # the free policy started a session
    events = site.subscribe()
    site.commands.set_current_ceiling(1, 10.0)
    keeper.apply(T0)
    assert CurrentLimitRequested(1, 10.0) in list(iter(events.get_nowait, None))
    site.commands.set_current_ceiling(1, None)
    keeper.apply(T0)
    assert CurrentLimitRequested(1, 32.0) in list(iter(events.get_nowait, None))
    site.commands.set_current_ceiling(1, 12.5)
    restarted = Site([Connector(1, "wb")], [], settings=settings)
    restarted.restore()
    assert restarted.connectors[1].current_ceiling_a == 12.5


def test_the_rate_limit_counts_per_connector_command_however_the_number_is_written() -> None:
    site, commands, _ = make()
    for amps, segment in zip(range(6, 6 + RATE_LIMIT + 2), ["1", "01", "001"] * 3, strict=False):
        commands.handle(
            f"gw/site/connector/{segment}/set/current_limit", f'{{"current_a": {amps}}}'.encode(), retained=False
        )
    assert site.connectors[1].current_ceiling_a == 6 + RATE_LIMIT - 1


def site_limit(commands: CommandHandler, payload: bytes, *, retained: bool = False) -> object:
    return commands.handle("gw/site/site/set/limit", payload, retained=retained)


def with_site_limit() -> tuple[Site, CommandHandler, Ticker]:
    site = Site([Connector(1, "wb"), Connector(2, "wb", socket=2)], [], clock=FixedClock())
    ticker = Ticker()
    return site, CommandHandler(site, TOPICS, ("site_limit",), monotonic=ticker), ticker


def test_the_site_limit_is_set_and_lifted_and_tells_the_keeper() -> None:
    site, commands, _ = with_site_limit()
    events = site.subscribe()
    assert site_limit(commands, b'{"current_a": 20}') is None
    assert site.load.site_limit_a == 20.0
    assert site_limit(commands, b'{"current_a": null}') is None
    assert site.load.site_limit_a is None
    assert [e for e in iter(events.get_nowait, None) if isinstance(e, SiteLimitChanged)] == [
        SiteLimitChanged(20.0),
        SiteLimitChanged(None),
    ]


def test_the_site_limit_is_off_unless_switched_on(caplog: pytest.LogCaptureFixture) -> None:
    site, commands, _ = make()  # every connector command, but not site_limit
    caplog.set_level(logging.WARNING, logger="adapters.mqtt.commands")
    assert site_limit(commands, b'{"current_a": 20}') is None
    assert site.load.site_limit_a is None
    assert "[mqtt.commands] site_limit is off" in caplog.text


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"current_a": -1}', "a site limit is 0 to 10000 A"),
        (b'{"current_a": 10001}', "a site limit is 0 to 10000 A"),
        (b'{"current_a": "16"}', "current_a must be a number"),
        (b'{"current_a": 1e999}', "finite"),
        (b'{"amps": 16}', "unknown key"),
        (b"[16]", "JSON object"),
        (b"{" * 10, "nests deeper"),
    ],
)
def test_a_refused_site_limit_is_answered_like_any_command_and_changes_nothing(payload: bytes, reason: str) -> None:
    site, commands, _ = with_site_limit()
    site.load.set_site_limit(30.0)
    error = site_limit(commands, payload)
    assert isinstance(error, dict) and reason in error["reason"], error
    assert error["topic"] == "gw/site/site/set/limit" and error["at"] == "2026-05-01T18:00:00.000Z"
    assert site.load.site_limit_a == 30.0


def test_a_retained_or_unknown_site_command_is_ignored() -> None:
    site, commands, _ = with_site_limit()
    assert site_limit(commands, b'{"current_a": 20}', retained=True) is None
    assert commands.handle("gw/site/site/set/fuse", b'{"current_a": 20}', retained=False) is None
    assert site.load.site_limit_a is None


def test_the_site_limit_has_its_own_rate_limit() -> None:
    site, commands, ticker = with_site_limit()
    for amps in range(10, 10 + RATE_LIMIT + 3):
        site_limit(commands, f'{{"current_a": {amps}}}'.encode())
    assert site.load.site_limit_a == 10 + RATE_LIMIT - 1  # the rest of the flood was dropped
    ticker.now_s += RATE_WINDOW_S
    site_limit(commands, b'{"current_a": 8}')
    assert site.load.site_limit_a == 8.0
