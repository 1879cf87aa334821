"""Output into a pipe whose reader has gone (``ocpp-gateway probe ... | head``).

Unix tools end silently then (SIGPIPE kills them). Python ignores SIGPIPE, so the write raises
BrokenPipeError instead, which would end in a traceback, or in "Exception ignored" when the
interpreter flushes stdout at exit. SIGPIPE is not restored to its default instead: it would also
kill the gateway when it writes to a network peer that has gone.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable

# 128 + SIGPIPE: what a shell reports for a tool that SIGPIPE ended (``set -o pipefail`` sees it).
EXIT_CLOSED_STDOUT = 141


def quiet_on_closed_stdout(command: Callable[[], int]) -> int:
    """Run ``command``; if stdout turns out to be a closed pipe, end quietly with EXIT_CLOSED_STDOUT."""
    try:
        code = command()
        sys.stdout.flush()  # what is still buffered, while a closed pipe can be caught here
        return code
    except BrokenPipeError:
        pass
    except ExceptionGroup as group:  # from a TaskGroup, e.g. the demo's live table
        if group.split(BrokenPipeError)[1] is not None:
            raise
    # The interpreter flushes stdout once more at exit: let that write go nowhere.
    with contextlib.suppress(OSError, ValueError):  # ValueError: a stdout without a file (in a test)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return EXIT_CLOSED_STDOUT
