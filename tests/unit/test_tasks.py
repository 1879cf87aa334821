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
