"""Cancelling asyncio tasks so that they really end.

On Python 3.11 ``asyncio.wait_for`` (used inside the ocpp library's ``call`` and aiomqtt's
``publish``) can swallow a cancellation that lands just as the awaited result arrives; the task
then carries on and may wait forever. Cancelling again until it is done keeps shutdown and
reconnects from hanging on such a task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

RECANCEL_S = 0.5


async def cancel_and_wait(*tasks: asyncio.Future[Any]) -> None:
    """Cancel ``tasks`` (again every RECANCEL_S) until every one has ended.

    An error a task ended with stays readable (``result()``) but counts as seen: a task that failed
    while being cancelled (a publish on a closing connection) must not log "exception was never
    retrieved" at ERROR when it is collected, long after and in the middle of something else.
    """
    pending = [task for task in tasks if not task.done()]
    try:
        while pending:
            for task in pending:
                task.cancel()
            _, still = await asyncio.wait(pending, timeout=RECANCEL_S)
            pending = list(still)
    finally:  # also when this wait is itself cancelled: what has ended by then counts as seen
        for task in tasks:
            if task.done() and not task.cancelled():
                task.exception()  # marks it retrieved


async def serve_until_cancelled(start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]) -> None:
    """``start`` a server, keep it up until this task is cancelled, then ``stop`` it."""
    await start()
    try:
        await asyncio.Event().wait()
    finally:
        await stop()


def raise_if_cancelling(cause: BaseException | None = None) -> None:
    """Re-raise a cancellation of this task that a library swallowed or turned into an error.

    Python 3.11's ``asyncio.wait_for`` (inside pymodbus, aiomqtt and the ocpp library) can drop a
    ``cancel()`` that arrives just as the answer does, or report it as a timeout; the task then
    stays "cancelling" but runs on, and a loop that retries on errors would never end.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from cause
