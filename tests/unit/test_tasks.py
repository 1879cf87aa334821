"""Cancelling tasks so that they really end, and say nothing afterwards."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from gateway.services.tasks import cancel_and_wait


async def test_an_error_a_task_ends_with_while_cancelled_is_not_logged_later() -> None:
    """A publish failing on a closing connection: the task ends with that error, not cancelled;
    collected later, it must not log "Task exception was never retrieved" at ERROR."""
    reported: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    started = asyncio.Event()

    async def fails_when_cancelled() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise ConnectionError("could not publish: the connection is closing") from None

    task = asyncio.create_task(fails_when_cancelled())
    await started.wait()
    await cancel_and_wait(task)
    assert task.done() and not task.cancelled()  # it ended with its own error
    del task
    gc.collect()
    assert reported == []


async def test_an_error_counts_as_seen_even_when_the_wait_itself_is_cancelled() -> None:
    """A connection's reader that ended with ConnectionClosed while its owner, cancelling its
    partners, is cancelled too: collected later (in the middle of anything, even a traceback's
    formatting), it must not log "Task exception was never retrieved"."""
    reported: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    release = asyncio.Event()

    async def fails() -> None:
        raise ConnectionError("the link went")

    async def slow_to_end() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()  # keeps cancel_and_wait waiting

    failed, slow = asyncio.create_task(fails()), asyncio.create_task(slow_to_end())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(cancel_and_wait(failed, slow))
    await asyncio.sleep(0.01)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    release.set()
    await slow
    assert failed.done() and not failed.cancelled()  # it ended with its own error
    del failed, waiter
    gc.collect()
    assert reported == []
