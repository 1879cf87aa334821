"""Replace a file so that a kill -9 or a power cut leaves the old content or the new, never half.

The protocol: write ``<name>.tmp`` next to the target, flush and fsync it, ``os.replace`` it over
the target (atomic on POSIX), then fsync the directory so the rename itself is on disk. A kill
before the rename leaves only a stray ``.tmp`` (the old file is intact); a kill after it leaves
the new file. Readers that own a directory remove stray temporaries when they open it.

The temporary is created 0600 (``private.open_private``), whatever the umask: the file it
becomes holds id tags, and a rename keeps the mode.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from adapters.storage.private import open_private

TEMPORARY_SUFFIX = ".tmp"


def temporary_path(path: Path) -> Path:
    """Where ``write_atomically`` stages the new content of ``path`` (same directory, same disk)."""
    return path.with_name(path.name + TEMPORARY_SUFFIX)


def write_atomically(
    path: Path, data: bytes, *, sync_directory: bool = True, keep_previous: Path | None = None
) -> None:
    """Make ``data`` the content of ``path`` durably; raises ``OSError`` if the disk refuses.

    ``sync_directory=False`` lets a caller replace several files and fsync their directory once
    (``fsync_directory``) before it reports success: until then a power cut may undo a rename,
    but never leave a half-written file.

    ``keep_previous``: the file at ``path`` (if any) is first renamed to it, once the new content
    is on disk in the temporary file, so a write the disk refuses changes nothing. Between the
    two renames ``path`` is missing and ``keep_previous`` holds the old content; a reader that
    finds no ``path`` reads ``keep_previous`` (one rename more per write).
    """
    temporary = temporary_path(path)
    try:
        with os.fdopen(open_private(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if keep_previous is not None:
            with contextlib.suppress(FileNotFoundError):
                os.replace(path, keep_previous)
        os.replace(temporary, path)
    except BaseException:
        # A failed write must not leave a stray temporary behind (a directory in its way, as a
        # test builds, is not ours to remove).
        with contextlib.suppress(OSError):
            if temporary.is_file():
                temporary.unlink()
        raise
    if sync_directory:
        fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make renames and deletions in ``directory`` durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
