"""Owner-only state: every file the gateway keeps is 0600, every folder it makes is 0700.

The state holds id tags (an RFID card's number opens the charger and bills its owner), the CSMS's
transaction ids and billing registers: no other user of the box has any business reading them.
The process umask is not to be trusted for that (0022 on most systems outside the systemd unit),
so each writer creates its files and folders through this module with the mode given
explicitly. Files left with wider modes by an older version are narrowed once at start
(``secure_state_dir``).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

FILE_MODE = 0o600
DIRECTORY_MODE = 0o700
_OTHERS = 0o077  # group and other bits


def open_private(path: Path, flags: int) -> int:
    """``os.open`` that creates ``path`` as 0600 (less if the umask takes more away, never more).

    A file that was already there (a temporary a kill left, a file of an older version) keeps
    its owner bits but loses group and other access: what is written through this descriptor
    is never readable by others, whatever the file was before.
    """
    descriptor = os.open(path, flags, FILE_MODE)
    try:
        mode = stat.S_IMODE(os.fstat(descriptor).st_mode)
        if mode & _OTHERS:
            os.fchmod(descriptor, mode & ~_OTHERS)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def make_private_directory(path: Path) -> None:
    """Create ``path`` and any missing parent as 0700; an existing folder is left as it is
    (``secure_state_dir`` narrows those once at start)."""
    missing: list[Path] = []
    while not path.exists():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIRECTORY_MODE)
        except FileExistsError:  # made meanwhile by someone else: theirs to set
            continue
        # mkdir's mode passes through the umask, which may take away but never add: only an
        # odd umask (one that removes the owner's bits) makes it differ, and then ours is right.
        if stat.S_IMODE(directory.stat().st_mode) != DIRECTORY_MODE:
            os.chmod(directory, DIRECTORY_MODE)


def secure_state_dir(state_dir: Path) -> None:
    """Create the state folder (0700), and take group and other access away from every file and
    folder in it, which versions before this one created with the umask (0644 and 0755).

    Called once at start; says in the log what it narrowed, once. Symbolic links are not
    followed (what they point at is not the gateway's). A file it may not change is named in a
    warning and left as it is: the gateway still runs.
    """
    make_private_directory(state_dir)
    narrowed = 0
    refused: list[str] = []
    paths = [state_dir]
    for root, directories, files in os.walk(state_dir):  # (symbolic links to folders are not entered)
        paths += [Path(root) / name for name in [*directories, *files]]
    for path in paths:
        try:
            status = path.lstat()
            mode = stat.S_IMODE(status.st_mode)
            if stat.S_ISLNK(status.st_mode) or not mode & _OTHERS:
                continue
            os.chmod(path, mode & ~_OTHERS)
        except FileNotFoundError:  # gone since the listing (SQLite removes its -wal at close): nothing to narrow
            continue
        except OSError as exc:
            refused.append(f"{path} ({exc.strerror})")
            continue
        narrowed += 1
    if narrowed:
        log.info(
            "state folder %s: took group and other access away from %d file(s) and folder(s) an older "
            "version had left readable (they hold id tags); from now on the gateway keeps its state to itself",
            state_dir,
            narrowed,
        )
    if refused:
        log.warning(
            "state folder %s: could not narrow the permissions of %d file(s) or folder(s), they stay "
            "readable by others: %s",
            state_dir,
            len(refused),
            ", ".join(refused[:3]) + (", ..." if len(refused) > 3 else ""),
        )
