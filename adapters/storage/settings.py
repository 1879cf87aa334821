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

log = logging.getLogger(__name__)


class JsonSettingsStore:
    """Implements the ``SettingsStore`` port (gateway.domain.ports) on one file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sections: dict[str, Any] = self._read()

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            aside = self.path.with_suffix(self.path.suffix + ".unreadable")
            log.warning(
                "settings file %s cannot be read (%s); kept as %s, starting from defaults", self.path, exc, aside
            )
            os.replace(self.path, aside)
            return {}
        return data if isinstance(data, dict) else {}

    def load(self, section: str) -> Any | None:
        """What was last saved under ``section``, or None."""
        return self._sections.get(section)

    def save(self, section: str, data: Any) -> None:
        """Replace ``section`` and write the file durably before returning."""
        self._sections[section] = data
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(self.path.suffix + ".tmp")
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump(self._sections, file, indent=1, sort_keys=True)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
