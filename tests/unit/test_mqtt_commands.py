"""MQTT command handling without a broker: topics, payload checks, and what is logged how often."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from adapters.mqtt.commands import CommandHandler, command_topic
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
    ],
)
def test_command_topics(topic: str, parsed: tuple[str, str] | None) -> None:
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
