"""kill -9 at random moments never leaves the outbox store unopenable, nor loses or reorders
anything it had promised.

A child process (tests/fixtures/outbox_child.py) appends, delivers, thins and counts attempts in
a loop and reports each call only after it returned. The parent kills it with SIGKILL once it has
read a random number of lines (so the kill lands in whatever the child does next: a line appended
to a segment or to head.json, a new segment, an unlink, a compaction), opens the store itself and
checks it against the reports. The second test compacts files every few changes and, every other
round, kills the child as it announces a compaction (so the kill lands in the rewrite).
"""

from __future__ import annotations

import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from adapters.storage.outbox_store import SegmentedOutboxStore

ROOT = Path(__file__).resolve().parents[2]
KILLS = 24
SEGMENT_RECORDS = 5  # small, so that segments are created and deleted often
LINE_TIMEOUT_S = 10.0


class Child:
    """The child process and a thread that forwards its stdout lines (until EOF, then None)."""

    def __init__(self, directory: Path, seed: int, first_n: int, compaction: tuple[int, int] | None = None) -> None:
        arguments = [str(directory), str(seed), str(first_n), str(SEGMENT_RECORDS)]
        arguments += [str(n) for n in compaction or ()]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.fixtures.outbox_child", *arguments],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._forward, daemon=True)
        self._reader.start()

    def _forward(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def next_line(self) -> str:
        line = self.lines.get(timeout=LINE_TIMEOUT_S)
        assert line is not None, f"the child ended by itself (exit code {self.process.wait(LINE_TIMEOUT_S)})"
        return line

    def kill(self) -> list[str]:
        """SIGKILL; returns what it printed that was not read yet (it was all promised)."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=LINE_TIMEOUT_S)
        self._reader.join(timeout=LINE_TIMEOUT_S)
        rest = []
        while (line := self.lines.get(timeout=LINE_TIMEOUT_S)) is not None:
            rest.append(line)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return rest


class Promises:
    """What the children reported, in the order they reported it."""

    def __init__(self) -> None:
        self.appended: dict[int, int] = {}  # seq -> n
        self.removed: set[int] = set()
        self.removing: set[int] = set()  # announced, not yet returned
        self.maybe_removed: set[int] = set()  # in a remove a kill cut short: gone or not
        self.attempts: dict[int, int] = {}
        self.last_seq = 0
        self.compactions = 0

    def take(self, line: str) -> None:
        tag, *words = line.split()
        values = [int(v) for v in words] if tag != "C" else []
        if tag == "A":
            seq, n = values
            assert seq > self.last_seq, f"seq {seq} handed out after {self.last_seq}"
            self.last_seq = seq
            self.appended[seq] = n
        elif tag == "r":
            self.removing = set(values)
        elif tag == "R":
            self.removed.update(values)
            self.removing = set()
        elif tag == "S":
            self.attempts[values[0]] = values[1]
        elif tag == "C":
            self.compactions += 1

    def killed(self) -> None:
        self.maybe_removed |= self.removing
        self.removing = set()

    def check(self, store: SegmentedOutboxStore) -> None:
        assert store.problems() == []
        index = store.index()
        seqs = [info.seq for info in index]
        assert seqs == sorted(set(seqs)), "seqs out of order or repeated"
        numbers = [int(info.created_at) for info in index]
        assert numbers == sorted(set(numbers)), "records reordered"
        missing = set(self.appended) - self.removed - self.maybe_removed - set(seqs)
        assert not missing, f"appended and never removed, yet gone: {sorted(missing)}"
        for info in index:
            if info.seq in self.appended:
                assert int(info.created_at) == self.appended[info.seq], f"seq {info.seq} holds another record"


def kill_at_random_moments(directory: Path, rng: random.Random, compaction: tuple[int, int] | None) -> Promises:
    promises = Promises()
    started = time.monotonic()
    for round_ in range(KILLS):
        child = Child(directory, seed=rng.randrange(2**32), first_n=round_ * 1_000_000, compaction=compaction)
        assert child.next_line() == "O"
        if compaction is not None and round_ % 2:  # kill as a compaction begins
            for _ in range(200):
                promises.take(line := child.next_line())
                if line.startswith("C "):
                    break
        else:
            for _ in range(rng.randint(1, 40)):
                promises.take(child.next_line())
        # A little jitter (not a wait on anything) so the kill lands at any point of the next call.
        time.sleep(rng.random() * 0.002)
        for line in child.kill():
            promises.take(line)
        promises.killed()
        assert not any(p.name.endswith(".corrupt") for p in directory.iterdir())
        promises.check(SegmentedOutboxStore(directory, SEGMENT_RECORDS))
        assert not list(directory.glob("*.tmp")), "opening removes what a kill left half-written"

    store = SegmentedOutboxStore(directory, SEGMENT_RECORDS)
    promises.check(store)
    assert len(promises.appended) > KILLS
    while (head := store.head()) is not None:  # attempts counted are kept (or one more, if cut short)
        if head.seq in promises.attempts:
            assert promises.attempts[head.seq] <= head.attempts <= promises.attempts[head.seq] + 1
        store.remove([head.seq])
    assert time.monotonic() - started < 60
    return promises


def test_kill_9_at_random_moments_loses_and_reorders_nothing(tmp_path: Path) -> None:
    kill_at_random_moments(tmp_path, random.Random(20261129), None)


def test_kill_9_during_compactions_loses_and_reorders_nothing(tmp_path: Path) -> None:
    """Segments rewritten once 300 bytes of them hold nothing (two or three records), head.json
    past 100 bytes (three acknowledgements)."""
    promises = kill_at_random_moments(tmp_path, random.Random(20261130), (300, 100))
    assert promises.compactions >= KILLS // 2
