"""The gateway's log says what changed, once: one line per state change, never one per poll.

A whole gateway on loopback polls three simulated devices every 0.2 s; the test counts the lines
the gateway writes (its own loggers; the test CSMS's are not the gateway's) while nothing
changes, while a charger stops answering for many polls, and when it is back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from adapters.demo_csms.csms import DemoCsms
from tests.fixtures.mosquitto import MosquittoBroker
from tests.fixtures.status_site import Running, running_gateway, until

OURS = ("gateway", "adapters")


def gateway_lines(caplog: pytest.LogCaptureFixture, since: int) -> list[str]:
    """Lines the gateway logged at INFO or above since record ``since``."""
    return [
        f"{record.levelname} {record.getMessage()}"
        for record in caplog.records[since:]
        if record.name.startswith(OURS)
        and not record.name.startswith("adapters.demo_csms")
        and record.levelno >= logging.INFO
    ]


def polls_of(running: Running, device: str) -> Callable[[], int]:
    return lambda: running.gateway.telemetry.polls[device].polls


async def test_one_line_per_state_change_not_per_poll(
    tmp_path: Path, csms: DemoCsms, mosquitto: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_gateway(tmp_path, csms.url, mosquitto, {}) as running:
        site, telemetry = running.site, running.gateway.telemetry
        await until(site, lambda: telemetry.ready and site.upstream.connected and telemetry.mqtt.connected)
        await csms.wait_for("StatusNotification", lambda p: p["connectorId"] == 2 and p["status"] == "Available")

        # steady: ten polls of every device, not one line
        start, left = len(caplog.records), polls_of(running, "left")
        target = {name: stats.polls + 10 for name, stats in telemetry.polls.items()}
        await until(site, lambda: all(telemetry.polls[n].polls >= target[n] for n in target))
        assert gateway_lines(caplog, start) == []

        # the left charger stops answering and stays away for many polls: its failure once, and
        # its connector's change of status once
        start = len(caplog.records)
        failed_before = telemetry.polls["left"].errors
        running.left.stall()
        await until(site, lambda: telemetry.polls["left"].errors >= failed_before + 5, timeout_s=20)
        lines = gateway_lines(caplog, start)
        assert lines[0].startswith("WARNING device left failed: left (127.0.0.1:")  # the device, with why
        assert lines[1:] == [  # what it means for its connector: the fault, the status
            "WARNING connector 1 fault raised: communication_lost CommLost the gateway gets no answer",
            "INFO connector 1: available -> faulted",
        ]  # and nothing else, however many polls fail

        # back: once more, in the other direction
        start = len(caplog.records)
        running.left.resume()
        before = left()
        await until(site, lambda: site.device_online("left") is True and left() >= before + 5)
        lines = gateway_lines(caplog, start)
        assert sorted(lines) == [
            "INFO connector 1 fault cleared: communication_lost CommLost",
            "INFO connector 1: faulted -> available",
            "INFO device left is answering again",
        ]
