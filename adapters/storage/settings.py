"""JsonSettingsStore: small named sections of settings in one JSON file, written atomically.

Every save writes a temporary file, fsyncs it, renames it over the old one and fsyncs the
directory, so a kill -9 or a power cut leaves either the old file or the new one, never half of
either. A file that cannot be read (written by hand, a broken disk) is kept aside as
``<name>.unreadable`` with one warning, and the gateway starts from defaults.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from adapters.storage.atomic import write_atomically

log = logging.getLogger(__name__)


class JsonSettingsStore:
    """Implements the ``SettingsStore`` port (gateway.domain.ports) on one file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sections: dict[str, Any] = self._read()

    def _read(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:  # garbage, not a passing disk error (that one is raised)
            aside = self.path.with_suffix(self.path.suffix + ".unreadable")
            log.warning("settings file %s cannot be read (%s); kept as %s, using defaults", self.path, exc, aside)
            os.replace(self.path, aside)
            return {}
        return data

    def load(self, section: str) -> Any | None:
        """What was last saved under ``section``, or None."""
        return self._sections.get(section)

    def save(self, section: str, data: Any) -> None:
        """Replace ``section`` and write the file durably before returning.

        A disk that refuses the write is logged loudly and the gateway carries on: losing a
        setting must not stop charging. Data that cannot be stored is a programming error.
        """
        sections = {**self._sections, section: data}
        text = json.dumps(sections, indent=1, sort_keys=True)  # before anything changes
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.path, text.encode("utf-8"))
        except OSError as exc:
            log.error("settings section %r not saved to %s: %s", section, self.path, exc)
            return
        self._sections = sections
