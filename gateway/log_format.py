"""Log output: readable lines for a person at a terminal, or JSON lines for a log collector.

Both carry the time in UTC (ISO 8601), the level, where the line comes from and the message as
the gateway wrote it (id tags already masked, secrets never in it).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message`` (+ ``error``)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class UtcFormatter(logging.Formatter):
    """``2026-11-29T12:00:05Z INFO    name: message``: UTC, whatever the box's time zone."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%Y-%m-%dT%H:%M:%SZ")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).strftime(datefmt or "%Y-%m-%dT%H:%M:%SZ")


def formatter(kind: str) -> logging.Formatter:
    """``text`` (default) or ``json``."""
    return JsonFormatter() if kind == "json" else UtcFormatter()
