"""JsonSettingsStore: small named sections of settings in one JSON file, written atomically,
with the previous good copy beside it.

All sections live in one file, the transaction-id maps included, so losing it makes the gateway
start from defaults (and stop transactions with the wrong id). What is kept, and what can be lost:

* Every save writes ``<name>.tmp`` and fsyncs it, renames the current file to ``<name>.prev``,
  renames the temporary over ``<name>`` and fsyncs the directory (``write_atomically`` with
  ``keep_previous``; one rename more per save than a plain atomic write). A kill -9 or a power
  cut at any point leaves the new content in ``<name>``, or the last good content in ``<name>``
  or, between the two renames, only in ``<name>.prev``. A disk that refuses the write changes
  neither file.
* Opening reads ``<name>``. If it is missing, or cannot be read (garbage, cut short, not
  UTF-8: it is kept aside as ``<name>.unreadable``), it reads ``<name>.prev`` with one WARNING
  naming both: at most the last save before the restart is lost. If that cannot be read either
  (kept aside as ``<name>.prev.unreadable``), or is missing, the gateway starts from defaults,
  with one WARNING. A disk error other than a missing file is raised, not taken for damage.
* Removing ``<name>`` alone does not reset the settings (``<name>.prev`` is read): remove both.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from adapters.storage.atomic import write_atomically
from adapters.storage.private import make_private_directory

log = logging.getLogger(__name__)

PREVIOUS_SUFFIX = ".prev"
UNREADABLE_SUFFIX = ".unreadable"


class UnreadableFile(ValueError):
    """A settings file that is there but does not hold a JSON object (set aside as ``aside``)."""

    def __init__(self, reason: str, aside: Path) -> None:
        super().__init__(f"cannot be read ({reason}); kept as {aside}")
        self.aside = aside


class JsonSettingsStore:
    """Implements the ``SettingsStore`` port (gateway.domain.ports) on one file and its previous copy."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.previous_path = path.with_name(path.name + PREVIOUS_SUFFIX)
        self._sections: dict[str, Any] = self._open()

    def _open(self) -> dict[str, Any]:
        """The sections of the file, or of its previous copy when the file is missing or damaged."""
        try:
            sections = _read(self.path)
        except UnreadableFile as exc:
            current, missing = f"settings file {self.path} {exc}", False
        else:
            if sections is not None:
                return sections
            current, missing = f"settings file {self.path} is missing", True
        try:
            previous = _read(self.previous_path)
        except UnreadableFile as exc:
            log.warning("%s, and its previous copy %s %s: using defaults", current, self.previous_path, exc)
            return {}
        if previous is None:
            if not missing:
                log.warning("%s, and there is no previous copy %s: using defaults", current, self.previous_path)
            return {}  # (neither file: a new gateway)
        log.warning(
            "%s: using its previous copy %s (at most the last save before the restart is lost)",
            current,
            self.previous_path,
        )
        return previous

    def load(self, section: str) -> Any | None:
        """What was last saved under ``section``, or None."""
        return self._sections.get(section)

    def save(self, section: str, data: Any) -> bool:
        """Replace ``section`` and write the file durably before returning (the file it replaces
        becomes the previous copy).

        A disk that refuses the write is logged loudly and the gateway carries on: losing a
        setting must not stop charging. Data that cannot be stored is a programming error.
        """
        sections = {**self._sections, section: data}
        text = json.dumps(sections, indent=1, sort_keys=True)  # before anything changes
        try:
            make_private_directory(self.path.parent)  # 0700: the file holds id tags
            write_atomically(self.path, text.encode("utf-8"), keep_previous=self.previous_path)
        except OSError as exc:
            log.error("settings section %r not saved to %s: %s", section, self.path, exc)
            return False
        self._sections = sections
        return True


def _read(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None if there is no file; ``UnreadableFile`` (after moving
    it aside) if there is one that does not hold a JSON object."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:  # garbage, cut short, not UTF-8; not a passing disk error (that one is raised)
        aside = path.with_name(path.name + UNREADABLE_SUFFIX)
        os.replace(path, aside)
        raise UnreadableFile(str(exc), aside) from None
    return data
