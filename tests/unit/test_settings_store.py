"""The JSON settings store: atomic, and a disk that refuses a write does not stop the gateway."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from adapters.storage.settings import JsonSettingsStore


def test_a_failed_write_keeps_the_old_file_and_the_old_sections(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "settings.json"
    store = JsonSettingsStore(path)
    store.save("a", 1)
    (tmp_path / "settings.json.tmp").mkdir()  # the temporary file cannot be written (even as root)
    with caplog.at_level(logging.ERROR):
        store.save("b", 2)
    assert "not saved" in caplog.text
    assert store.load("b") is None
    assert JsonSettingsStore(path).load("a") == 1


def test_data_that_cannot_be_stored_changes_nothing(tmp_path: Path) -> None:
    store = JsonSettingsStore(tmp_path / "settings.json")
    store.save("a", 1)
    with pytest.raises(TypeError):
        store.save("b", object())
    assert store.load("b") is None
    store.save("c", 3)
    assert JsonSettingsStore(tmp_path / "settings.json").load("c") == 3
