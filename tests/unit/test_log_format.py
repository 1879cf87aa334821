"""Log lines: readable text in UTC, or one JSON object per line for a collector."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from gateway.log_format import JsonFormatter, UtcFormatter

AT = datetime(2026, 11, 29, 12, 0, 5, 250000, tzinfo=UTC)


def record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError as error:
            exc_info = (ValueError, error, error.__traceback__)
    made = logging.LogRecord("gateway.site", logging.WARNING, __file__, 1, message, args, exc_info)
    made.created = AT.timestamp()
    return made


def test_json_lines_carry_utc_time_level_logger_and_message() -> None:
    line = JsonFormatter().format(record("device %s failed: %s", "wb1", "timeout"))
    assert json.loads(line) == {
        "time": "2026-11-29T12:00:05.250Z",
        "level": "warning",
        "logger": "gateway.site",
        "message": "device wb1 failed: timeout",
    }
    assert "\n" not in line


def test_json_lines_keep_an_error_in_one_field() -> None:
    entry = json.loads(JsonFormatter().format(record("failed", exc=True)))
    assert "ValueError: boom" in entry["error"]


def test_text_lines_are_in_utc() -> None:
    assert UtcFormatter().format(record("hello")) == "2026-11-29T12:00:05Z WARNING gateway.site: hello"
