"""Parked messages: StopTransactions the CSMS kept refusing, set aside for the operator.

One JSON object per line in ``outbox-parked.jsonl`` beside the outbox. A stop ends a bill, so it
is never thrown away: it leaves the queue (so later sessions are not blocked behind it for ever)
only once this file has it on disk (written, flushed and fsynced). An operator can read it, fix
what the CSMS objects to, and hand the messages to the CSMS by other means. The file holds id
tags: it is created 0600 in a 0700 folder (``private``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

from adapters.storage.private import make_private_directory, open_private
from gateway.domain.outbox import OutboxRecord


class ParkedMessages:
    """Appends records durably to one JSON-lines file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def add(self, record: OutboxRecord) -> None:
        """Append ``record``; returns only once it is on disk (an OSError is raised to the caller)."""
        line = json.dumps(asdict(record), sort_keys=True) + "\n"
        created = not self.path.exists()
        make_private_directory(self.path.parent)
        descriptor = open_private(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        with os.fdopen(descriptor, "a", encoding="utf-8") as file:
            file.write(line)
            file.flush()
            os.fsync(file.fileno())
        if created:  # the new name must survive a power cut too
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

    def records(self) -> list[dict[str, object]]:
        """What was parked, oldest first (for tests and tools)."""
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
