"""The profile-driven Modbus poller: one per device (charger or meter), feeding the Site.

``ModbusDevice.run()`` polls forever and never lets a device problem escape: a failed poll
becomes ``DeviceFailed`` for the Site, the connection is dropped and retried with backoff, and
the log says so once (as Home Assistant's modbus hub does: a WARNING when the device starts
failing, DEBUG while it stays down, INFO once when it answers again). While it polls, ``run()``
also keeps the charger's watchdog fed (``[watchdog]`` in the profile), and after the device was
away it writes the last current limit and enable again.

Commands (``set_current_limit_a``, ``set_enabled``) become register writes in ``commands.py``;
optional registers a device refuses are handled in ``reads.py``; requests and the translation of
pymodbus errors are in ``bus.py``.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from datetime import datetime

from pymodbus.exceptions import ModbusException

from adapters.modbus import bus
from adapters.modbus.codec import decode_raw, to_quantity
from adapters.modbus.commands import CommandPlanner, RegisterWrite
from adapters.modbus.errors import ExceptionResponse
from adapters.modbus.layout import DeviceMap, EntryId, ReadBlock, RegisterImage
from adapters.modbus.profile import Profile
from adapters.modbus.reads import ReadPlan
from adapters.modbus.transport import LineClient, ModbusLine, TcpTransport
from gateway.domain.errors import CommandRejected, DecodeError, DeviceError, DeviceUnavailable
from gateway.domain.model import ChargerSnapshot, DeviceFailed, MeterSnapshot, Reading, utc_now
from gateway.domain.ports import Clock, SnapshotSink
from gateway.services.backoff import Backoff
from gateway.services.tasks import raise_if_cancelling
from gateway.services.telemetry import Telemetry

log = logging.getLogger(__name__)

DeviceSnapshot = ChargerSnapshot | MeterSnapshot


class _UtcClock:
    def now(self) -> datetime:
        return utc_now()


class ModbusDevice:
    """Polls one Modbus device described by ``profile`` and hands snapshots to ``sink``.

    A charger profile yields one ``ChargerSnapshot`` per socket (1..``sockets``), a meter profile
    one ``MeterSnapshot``. ``unit_id`` None means the profile's default. Timing is in seconds:
    ``timeout_s`` bounds each request (and the connect), ``poll_interval_s`` is the period while the
    device answers; after failures the retry delay starts at ``poll_interval_s`` and doubles up
    to ``backoff_max_s`` (never below the poll interval), with jitter
    (50-100 % of each step).

    The device is reached over ``line`` (Modbus TCP, RTU over serial or RTU over TCP; shared with
    the other devices on the same bus, see ``transport.py``), or for short at Modbus TCP
    ``host:port``.
    """

    def __init__(
        self,
        name: str,
        profile: Profile,
        *,
        host: str | None = None,
        port: int = 502,
        line: ModbusLine | None = None,
        unit_id: int | None = None,
        poll_interval_s: float = 5.0,
        timeout_s: float = 3.0,
        sink: SnapshotSink,
        clock: Clock | None = None,
        sockets: int = 1,
        backoff_max_s: float = 10.0,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.name = name
        self.profile = profile
        if line is None:
            if host is None:
                raise ValueError("give the device a line or a host")
            line = ModbusLine(TcpTransport(host, port), timeout_s)
        self._line = line
        self._map = DeviceMap(profile, unit_id=unit_id, sockets=sockets)
        self._poll_interval_s = poll_interval_s
        self._timeout_s = timeout_s
        self._backoff = Backoff(poll_interval_s, max(backoff_max_s, poll_interval_s))
        self._request_delay_s = profile.modbus.request_delay_ms / 1000
        self._sink = sink
        self._telemetry = telemetry or Telemetry()
        self._clock: Clock = clock or _UtcClock()
        self._where = f"{name} ({line.transport})"
        self._reads = ReadPlan(self._map, self._where)
        self._commands = CommandPlanner(self._map, name)

    @property
    def read_blocks(self) -> list[ReadBlock]:
        """The reads one poll makes (for diagnostics: `ocpp-gateway probe`)."""
        return self._reads.blocks

    @property
    def optional_retry_s(self) -> float:
        """How long (s) an optional value the device refused stays unread before it is tried again."""
        return self._reads.retry_s

    @optional_retry_s.setter
    def optional_retry_s(self, seconds: float) -> None:
        self._reads.retry_s = seconds

    async def run(self) -> None:
        """Poll until cancelled, feeding the watchdog alongside; failures are reported, never raised."""
        try:
            async with asyncio.TaskGroup() as tasks:
                if self.profile.watchdog is not None:
                    tasks.create_task(self._keep_watchdog(), name=f"{self.name} watchdog")
                await self._poll_forever()
        finally:
            self.close()

    async def set_current_limit_a(self, amps: float, *, socket: int = 1) -> None:
        """Limit charging on ``socket`` to ``amps`` amperes (per phase).

        The value is rounded down to the register's resolution (1 A, 0.1 A, 1 mA, or 0.1 A for
        float registers); below the profile's ``min_a`` (usually 6 A, the least IEC 61851 can
        signal) charging pauses the way the profile says (limit register 0, or enable off).
        Raises ``CommandRejected`` if the profile has no current limit, ``amps`` is not a number
        from 0 to ``max_a``, or the device refuses the value; ``DeviceError`` if the bus fails.
        The limit is remembered and written again after the device was away.
        """
        await self._send(self._commands.current_limit(amps, socket))

    async def set_enabled(self, on: bool, *, socket: int = 1) -> None:
        """Allow (``on``) or stop charging on ``socket``: a coil, a register, or the current limit.

        Through the current limit, "off" writes the profile's ``off_value`` (0 A) and "on" writes
        the last limit again (``min_a`` if none was set). Raises ``CommandRejected`` if the
        profile cannot switch charging or the device refuses; ``DeviceError`` if the bus fails.
        """
        await self._send(self._commands.enable(on, socket))

    async def _poll_forever(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            started = loop.time()
            try:
                snapshots = await self.poll_once()
                raise_if_cancelling()
            except DeviceError as exc:
                raise_if_cancelling(exc)  # a timeout that was really our cancellation
                self._telemetry.poll_finished(self.name, loop.time() - started, ok=False)
                failures += 1
                self._report_failure(exc, failures)
                await asyncio.sleep(self._backoff.next_delay())
                continue
            self._telemetry.poll_finished(self.name, loop.time() - started, ok=True)
            if failures:
                self._backoff.reset()
                log.debug("%s answers again after %d failed poll(s)", self._where, failures)  # the Site says it
                failures = 0
                await self._restore_commands()
            for snapshot in snapshots:
                self._sink.apply(snapshot)
            await asyncio.sleep(max(0.0, self._poll_interval_s - (loop.time() - started)))

    async def _restore_commands(self) -> None:
        """The device was away and may have fallen back to its defaults: repeat the last commands."""
        writes = self._commands.restore_writes()
        if not writes:
            return
        try:
            await self._send(writes)
        except (DeviceError, CommandRejected) as exc:
            log.warning("%s: could not repeat the last commands after reconnecting: %s", self._where, exc)
        else:
            log.info("%s: repeated the last commands (%s)", self._where, "; ".join(w.purpose for w in writes))

    async def _keep_watchdog(self) -> None:
        """Write the watchdog register every period while polling; failures show in the poll loop."""
        dog = self.profile.watchdog
        assert dog is not None
        timeout_s = dog.timeout_s
        reread = dog.timeout_register is not None  # the device keeps its timeout: read it (again)
        while True:
            try:
                if reread:
                    timeout_s = await self._device_watchdog_timeout_s() or dog.timeout_s
                    reread = False
                await self._send(self._commands.watchdog_writes())
                raise_if_cancelling()
            except (DeviceError, CommandRejected) as exc:
                raise_if_cancelling(exc)
                log.debug("%s: watchdog not fed: %s", self._where, exc)
                reread = dog.timeout_register is not None
            await asyncio.sleep(self._watchdog_period_s(timeout_s))

    async def _device_watchdog_timeout_s(self) -> float | None:
        """The timeout (s) in the device's timeout register; None if it reads 0 (off) or is refused."""
        dog = self.profile.watchdog
        assert dog is not None and dog.timeout_register is not None
        reg = dog.timeout_register
        loc = self._map.locations(reg, 1)[0]
        client = await self._connected()
        try:
            words = await bus.read(
                client, loc.table, loc.address, loc.width, loc.unit_id, where=self._where, timeout_s=self._timeout_s
            )
        except ExceptionResponse as exc:
            if not exc.refused:
                raise
            log.debug("%s: no watchdog timeout register, using the profile's: %s", self._where, exc)
            return None
        raw = decode_raw(reg, words)
        seconds = to_quantity(reg, raw) if isinstance(raw, int | float) else None
        return seconds if seconds is not None and seconds > 0 else None

    def _watchdog_period_s(self, timeout_s: float | None) -> float:
        """How long until the next feed: the profile's period, else half the timeout (as evcc does)."""
        dog = self.profile.watchdog
        assert dog is not None
        if dog.period_s is not None:
            return dog.period_s
        if timeout_s is None:  # no timeout known (device says 0 = off): feeding now and then does no harm
            return max(self._poll_interval_s, 1.0)
        return timeout_s / 2

    async def _send(self, writes: list[RegisterWrite]) -> None:
        """Write in order; on a bus failure drop the connection (the poll loop reconnects) and raise."""
        if not writes:
            return
        try:
            client = await self._connected()
            for request in writes:
                await bus.write(client, request, where=self._where, timeout_s=self._timeout_s)
                log.debug("%s: wrote %s", self._where, request)
        except DeviceError:
            self.close()
            raise_if_cancelling()  # a timeout that was really our cancellation
            raise
        raise_if_cancelling()

    async def poll_once(self) -> list[DeviceSnapshot]:
        """Read every register group once and decode it; raises a ``DeviceError`` on failure.

        Does not touch the sink, so tests (and ``probe``) can poll deterministically.
        ``measured_at`` is the clock time right after the last read.
        """
        image = RegisterImage()
        try:
            client = await self._connected()

            async def request(block: ReadBlock) -> list[int]:
                return await self._request(client, block)

            now = asyncio.get_running_loop().time()
            unavailable = await self._reads.read(image, request, now, self._request_delay_s)
        except DeviceError:
            self.close()
            raise
        measured_at = self._clock.now()
        try:
            return [
                self._snapshot(image, socket, measured_at, unavailable) for socket in range(1, self._map.sockets + 1)
            ]
        except (ValueError, TypeError, struct.error, ModbusException) as exc:
            self.close()
            raise DecodeError(f"{self._where}: cannot decode the registers: {exc}") from exc

    def close(self) -> None:
        """Let go of the connection (the next poll reconnects; other devices on the line keep it)."""
        self._line.release(self.name)

    async def _connected(self) -> LineClient:
        try:
            return await self._line.connect(self.name)
        except DeviceUnavailable as exc:
            raise DeviceUnavailable(f"{self._where}: {exc}") from exc

    async def _request(self, client: LineClient, block: ReadBlock) -> list[int]:
        """Read one block (errors translated in ``bus.read``)."""
        return await bus.read(
            client, block.table, block.address, block.count, block.unit_id, where=self._where, timeout_s=self._timeout_s
        )

    def _snapshot(
        self, image: RegisterImage, socket: int, measured_at: datetime, unavailable: frozenset[EntryId]
    ) -> DeviceSnapshot:
        decoded = self._map.decode(image, socket, unavailable)
        reading = Reading(measured_at=measured_at, **decoded.values)  # type: ignore[arg-type]
        if self.profile.kind == "meter":
            return MeterSnapshot(device=self.name, reading=reading)
        return ChargerSnapshot(
            device=self.name,
            socket=socket,
            reading=reading,
            vehicle_state=decoded.vehicle_state,
            faults=decoded.faults,
            charging_enabled=decoded.charging_enabled,
            id_tag=decoded.id_tag,
        )

    def _report_failure(self, exc: DeviceError, failures: int) -> None:
        self._sink.apply(DeviceFailed(device=self.name, reason=str(exc), failed_at=self._clock.now()))
        # The Site logs the state change (once the device counts as lost): one line, not one per poll.
        log.debug("poll failed (%d in a row): %s", failures, exc)
