"""One subscriber's queue of the Site's events: the MQTT bridge, the upstream charge point and
the command relay each read their own, at their own pace, and miss nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from gateway.domain.events import Event


class EventStream:
    """One subscriber's queue of events; iterate it with ``async for``."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Event] = asyncio.Queue()

    def put(self, event: Event) -> None:
        self._queue.put_nowait(event)

    async def get(self) -> Event:
        return await self._queue.get()

    def get_nowait(self) -> Event | None:
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            yield await self._queue.get()

    async def feed(self, take: Callable[[Event], None]) -> None:
        """Hand every event to ``take`` as it comes, for ever (a subscriber's collecting loop)."""
        async for event in self:
            take(event)

    def take_pending(self, take: Callable[[Event], None]) -> None:
        """Hand ``take`` the events already emitted but not collected yet, at once: what a
        subscriber must have seen before it acts (a sample sees every start emitted so far)."""
        while (event := self.get_nowait()) is not None:
            take(event)
