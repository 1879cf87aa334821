"""MQTT command handling without a broker: topics, payload checks, and what is logged how often."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from adapters.mqtt.commands import CommandHandler, command_topic, json_depth_exceeds, shown_topic
from adapters.mqtt.payloads import Topics
from gateway.domain.model import Connector
from gateway.services.site import Site

T0 = datetime(2026, 5, 1, 18, 0, tzinfo=UTC)
TOPICS = Topics("gw/site")


class FixedClock:
    def now(self) -> datetime:
        return T0


def handler(*enabled: str) -> tuple[Site, CommandHandler]:
    site = Site([Connector(1, "wb")], [], clock=FixedClock())
    return site, CommandHandler(site, TOPICS, enabled or ("soc_input", "soc_target"))


@pytest.mark.parametrize(
    ("topic", "parsed"),
    [
        ("gw/site/connector/1/set/soc", ("1", "soc")),
        ("gw/site/connector/12/set/soc_target", ("12", "soc_target")),
        ("gw/site/connector/1/state", None),
        ("gw/other/connector/1/set/soc", None),
        ("gw/site/connector/1/set/soc/more", None),
        ("gw/site/site/set/limit", (None, "limit")),
        ("gw/site/site/set/limit/more", None),
        ("gw/site/site/state", None),
    ],
)
def test_command_topics(topic: str, parsed: tuple[str | None, str] | None) -> None:
    assert command_topic(TOPICS, topic) == parsed


def test_a_valid_report_changes_the_site_and_answers_nothing() -> None:
    site, commands = handler()
    assert (
        commands.handle("gw/site/connector/1/set/soc", b'{"soc_percent": 50, "capacity_wh": 6e4}', retained=False)
        is None
    )
    assert site.connectors[1].soc is not None and site.connectors[1].soc.soc_percent == 50.0


def test_an_invalid_one_is_answered_with_topic_reason_and_time() -> None:
    site, commands = handler()
    error = commands.handle("gw/site/connector/1/set/soc", b'{"soc_percent": NaN}', retained=False)
    assert error is not None
    assert error["topic"] == "gw/site/connector/1/set/soc"
    assert "not JSON" in str(error["reason"])
    assert error["at"] == "2026-05-01T18:00:00.000Z"
    assert site.connectors[1].soc is None


def test_empty_unknown_and_foreign_messages_are_ignored_quietly() -> None:
    site, commands = handler()
    assert commands.handle("gw/site/connector/1/set/soc", b"", retained=True) is None  # a retained one deleted
    assert commands.handle("gw/site/connector/1/set/reboot", b"{}", retained=False) is None
    assert commands.handle("gw/site/connector/1/state", b"{}", retained=False) is None
    assert site.connectors[1].soc is None


def test_a_rejected_command_warns_once_per_topic_until_one_is_carried_out(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="adapters.mqtt.commands")
    _, commands = handler()
    topic = "gw/site/connector/1/set/soc_target"

    def warnings() -> int:
        return sum(r.levelno == logging.WARNING for r in caplog.records)

    for _ in range(3):
        commands.handle(topic, b'{"soc_target_percent": 500}', retained=False)
    assert warnings() == 1
    commands.handle(topic, b'{"soc_target_percent": 80}', retained=False)
    commands.handle(topic, b'{"soc_target_percent": 500}', retained=False)
    assert warnings() == 2


def test_unknown_switches_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="soc_imput"):
        handler("soc_imput")


# -- bounds before parsing ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "limit", "exceeds"),
    [
        ('{"a": 1}', 1, False),
        ('{"a": [1]}', 1, True),
        ('{"a": "[[[[{{{{"}', 1, False),  # brackets in a string are text
        ('{"a": "\\"[[[["}', 1, False),  # so is an escaped quote: the string goes on
        ('{"a": "\\\\", "b": [[1]]}', 2, True),  # an escaped backslash ends before the quote
        ("[" * 5, 4, True),
        ("[" * 4, 4, False),
    ],
)
def test_json_depth_is_counted_outside_strings(text: str, limit: int, exceeds: bool) -> None:
    assert json_depth_exceeds(text, limit) is exceeds


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"[" * 100_000, "payload is 100000 bytes; a command has at most 1024"),  # was RecursionError
        (b"[" * 1000, "nests deeper than 4 levels"),  # 1 KB of "[" alone recursed too deep
        (b'{"soc_percent": 1e999}', "soc_percent must be a finite number or null, not Infinity"),
        (b'{"soc_percent": 1' + b"0" * 400 + b"}", "soc_percent must be a finite number"),  # was OverflowError
        (b"\xff{}", "payload is not JSON: not UTF-8 (invalid start byte at byte 0)"),
        (b'{"soc_percent": 50, "capacity_wh": 1e-300}', "capacity_wh must be 1000..500000"),
    ],
)
def test_hostile_payloads_are_answered_not_raised(payload: bytes, reason: str) -> None:
    site, commands = handler()
    error = commands.handle("gw/site/connector/1/set/soc", payload, retained=False)
    assert error is not None and reason in str(error["reason"])
    assert site.connectors[1].soc is None


def test_a_connector_of_5000_digits_is_no_connector_and_the_topic_is_shown_short() -> None:
    _, commands = handler("current_limit")
    topic = f"gw/site/connector/{'9' * 5000}/set/current_limit"
    error = commands.handle(topic, b'{"current_a": 10}', retained=False)  # was ValueError in the rate limiter
    assert error is not None
    assert error["reason"] == "no connector 9999... (5000 digits)"
    assert error["topic"] == shown_topic(topic) and len(str(error["topic"])) < 250


def test_long_made_up_topics_are_remembered_short(caplog: pytest.LogCaptureFixture) -> None:
    """Log-once memory keeps the shown topic: 1000 topics of 64 KB must not cost 64 MB."""
    _, commands = handler()
    for n in range(3):
        commands.handle(f"gw/site/connector/1/set/{'x' * 60_000}{n}", b"{}", retained=False)
    assert all(len(topic) < 250 for topic, _why in commands._told)
    assert all(len(record.getMessage()) < 400 for record in caplog.records)


def test_a_current_limit_above_the_chargers_maximum_is_refused() -> None:
    site = Site([Connector(1, "wb"), Connector(2, "wb", socket=2)], [], clock=FixedClock())
    commands = CommandHandler(site, TOPICS, ("current_limit",), max_current_a={1: 16.0})
    error = commands.handle("gw/site/connector/1/set/current_limit", b'{"current_a": 20}', retained=False)
    assert error is not None and "current_a must be 0..16 A (connector 1's charger)" in str(error["reason"])
    assert commands.handle("gw/site/connector/1/set/current_limit", b'{"current_a": 16}', retained=False) is None
    assert commands.handle("gw/site/connector/2/set/current_limit", b'{"current_a": 20}', retained=False) is None
    assert (site.connectors[1].current_ceiling_a, site.connectors[2].current_ceiling_a) == (16.0, 20.0)
