"""One poll's reads, and what to do when a device refuses some of them.

Devices of one family differ in which registers they implement (a meter without export, a
charger without SoC on older firmware). A profile marks such values ``optional = true``. When a
merged read that contains optional values is answered with "illegal address" (or illegal
function/value), ``ReadPlan`` reads that block's entries one by one: an optional entry that is
refused becomes unavailable (None), is left out of the following polls and is tried again every
``retry_s`` seconds; the rest of the poll goes on. One WARNING names the value the first time,
DEBUG while it stays refused, INFO if it comes back. A refused *required* value still fails the
poll, as it should: the profile does not fit the device.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from adapters.modbus.errors import ExceptionResponse, code_name
from adapters.modbus.layout import DeviceMap, Entry, EntryId, ReadBlock, RegisterImage, plan_reads

log = logging.getLogger(__name__)

Request = Callable[[ReadBlock], Awaitable[list[int]]]
"""Read one block; raises ``ExceptionResponse`` for exception answers, other ``DeviceError``s otherwise."""

OPTIONAL_RETRY_S = 600.0  # a refused optional value is tried again after 10 minutes


class ReadPlan:
    """The blocks one poll of ``device_map`` reads, minus the optional entries the device refused."""

    def __init__(self, device_map: DeviceMap, where: str, retry_s: float = OPTIONAL_RETRY_S) -> None:
        self._map = device_map
        self._where = where
        self.retry_s = retry_s
        self._entries = device_map.entries()
        self._refused: dict[EntryId, float] = {}  # entry -> loop time when the device last refused it
        self._planned: tuple[frozenset[EntryId], list[ReadBlock]] = (frozenset(), device_map.read_blocks())

    @property
    def blocks(self) -> list[ReadBlock]:
        """The reads the last (or, before any poll, the first) poll makes."""
        return list(self._planned[1])

    @property
    def refused(self) -> frozenset[EntryId]:
        """The optional entries the device currently refuses."""
        return frozenset(self._refused)

    async def read(
        self, image: RegisterImage, request: Request, now: float, delay_s: float = 0.0
    ) -> frozenset[EntryId]:
        """Read every block into ``image``; returns the entries that are unavailable in this poll.

        ``now`` is monotonic time in seconds (the event loop's clock). ``delay_s`` is the pause
        between two requests. Raises what ``request`` raises, except refusals of optional entries.
        """
        skip = frozenset(entry for entry, refused_at in self._refused.items() if refused_at + self.retry_s > now)
        if skip != self._planned[0]:
            self._planned = (skip, self._map.read_blocks(skip))
        failed: set[EntryId] = set()
        first = True
        for block in self._planned[1]:
            first = await self._pause(first, delay_s)
            try:
                image.put(block.unit_id, block.table, block.address, await request(block))
            except ExceptionResponse as exc:
                entries = [e for e in self._entries if e.id not in skip and e.within(block)]
                if not exc.refused or not any(e.optional for e in entries):
                    raise
                for entry in entries:
                    if not await self._read_entry(entry, image, request, delay_s, now):
                        failed.add(entry.id)
        for entry_id in [e for e in self._refused if e not in skip and e not in failed]:
            del self._refused[entry_id]
            log.info("%s: %s is available again", self._where, self._label(entry_id))
        return skip | failed

    async def _read_entry(
        self, entry: Entry, image: RegisterImage, request: Request, delay_s: float, now: float
    ) -> bool:
        """Read one entry on its own; False if the device refuses it and it is optional."""
        m = self._map.profile.modbus
        try:
            for block in plan_reads(entry.locations, m.max_block_registers, 0):
                await self._pause(False, delay_s)
                image.put(block.unit_id, block.table, block.address, await request(block))
        except ExceptionResponse as exc:
            if not (exc.refused and entry.optional):
                raise
            retry_min = self.retry_s / 60
            if entry.id in self._refused:
                log.debug("%s: %s is still not available: %s", self._where, entry.label(self._map.sockets), exc)
            else:
                log.warning(
                    "%s: %s is not available (the device answers Modbus exception %d, %s); "
                    "it reads as unknown, trying again every %g min",
                    self._where,
                    entry.label(self._map.sockets),
                    exc.code,
                    code_name(exc.code),
                    retry_min,
                )
            self._refused[entry.id] = now
            return False
        return True

    def _label(self, entry_id: EntryId) -> str:
        key, socket = entry_id
        return key if socket is None or self._map.sockets == 1 else f"{key} of socket {socket}"

    @staticmethod
    async def _pause(first: bool, delay_s: float) -> bool:
        if not first and delay_s:
            await asyncio.sleep(delay_s)
        return False
