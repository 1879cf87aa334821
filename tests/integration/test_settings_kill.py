"""kill -9 at random moments never makes the settings store lose a save that returned, nor fall
back to defaults.

A child process (tests/fixtures/settings_child.py) saves a counter in a loop and prints each value
after its save returned. The parent kills it with SIGKILL once it has read a random number of
lines (so the kill lands anywhere in the next save: writing the temporary file, between renaming
the old file to ``.prev`` and the new one into place, fsyncing), then opens the store itself:
it must hold the last value printed, or the one being saved, never an older one; and the
previous copy it falls back to must be a whole, older save.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from adapters.storage.settings import JsonSettingsStore

ROOT = Path(__file__).resolve().parents[2]
KILLS = 20
LINE_TIMEOUT_S = 10.0


def test_kill_9_at_random_moments_keeps_the_last_save_that_returned(tmp_path: Path) -> None:
    rng = random.Random(20261130)
    path = tmp_path / "settings.json"
    last = -1  # the last value a child printed: its save had returned
    between_renames = 0  # kills that left no settings.json, only its previous copy
    started = time.monotonic()
    for _ in range(KILLS):
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.fixtures.settings_child", str(path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        opened_with = child.stdout.readline().split()
        assert opened_with[0] == "O" and int(opened_with[1]) >= last, f"the child found {opened_with} after {last}"
        for _ in range(rng.randint(1, 30)):
            last = int(child.stdout.readline())
        time.sleep(rng.random() * 0.003)  # jitter, so the kill lands at any point of the next save
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=LINE_TIMEOUT_S)
        last = max([last, *(int(line) for line in child.stdout.read().split())])
        child.stdout.close()

        between_renames += not path.exists()
        store = JsonSettingsStore(path)
        counter = store.load("counter")
        assert counter is not None, "the settings fell back to defaults"
        assert last <= counter <= last + 1, f"reopened with {counter}, the child had saved {last}"
        ids = store.load("transaction_ids")
        assert ids is not None and ids["local-0"] in (counter * 1000, (counter + 1) * 1000)  # the file is whole
        assert not list(tmp_path.glob("*.unreadable"))
        previous = json.loads((tmp_path / "settings.json.prev").read_text())  # the fallback is whole too
        assert previous.get("counter", 0) <= counter

    assert last > KILLS
    print(f"{between_renames} of {KILLS} kills left only settings.json.prev")
    assert time.monotonic() - started < 30
