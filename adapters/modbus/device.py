"""The profile-driven Modbus poller: one per device (charger or meter), feeding the Site.

``ModbusDevice.run()`` polls forever and never lets a device problem escape: a failed poll
becomes ``DeviceFailed`` for the Site, the connection is dropped and retried with backoff, and
the log says so once (as Home Assistant's modbus hub does: a WARNING when the device starts
failing, DEBUG while it stays down, INFO once when it answers again).

pymodbus reports problems in two styles, by exception and by a response whose ``isError()`` is
true; ``_request`` is the one place where both become ``DeviceUnavailable`` / ``DeviceTimeout`` /
``DecodeError``. Nothing pymodbus-specific leaves this module.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from adapters.modbus.layout import TABLE_NAMES, DeviceMap, ReadBlock, RegisterImage
from adapters.modbus.profile import BIT_TABLES, Profile
from gateway.domain.errors import DecodeError, DeviceError, DeviceTimeout, DeviceUnavailable
from gateway.domain.model import ChargerSnapshot, DeviceFailed, MeterSnapshot, Reading, utc_now
from gateway.domain.ports import Clock, SnapshotSink
from gateway.services.backoff import Backoff

log = logging.getLogger(__name__)

DeviceSnapshot = ChargerSnapshot | MeterSnapshot


class _UtcClock:
    def now(self) -> datetime:
        return utc_now()


class ModbusDevice:
    """Polls one Modbus TCP device described by ``profile`` and hands snapshots to ``sink``.

    A charger profile yields one ``ChargerSnapshot`` per socket (1..``sockets``), a meter profile
    one ``MeterSnapshot``. ``unit_id`` None means the profile's default. Timing is in seconds:
    ``timeout_s`` bounds each request (and the connect), ``poll_interval_s`` is the period while the
    device answers; after failures the retry delay starts at ``poll_interval_s`` and doubles up
    to ``backoff_max_s`` (never below the poll interval), with jitter
    (50-100 % of each step).
    """

    def __init__(
        self,
        name: str,
        profile: Profile,
        *,
        host: str,
        port: int = 502,
        unit_id: int | None = None,
        poll_interval_s: float = 5.0,
        timeout_s: float = 3.0,
        sink: SnapshotSink,
        clock: Clock | None = None,
        sockets: int = 1,
        backoff_max_s: float = 10.0,
    ) -> None:
        self.name = name
        self.profile = profile
        self._host, self._port = host, port
        self._map = DeviceMap(profile, unit_id=unit_id, sockets=sockets)
        self._blocks = self._map.read_blocks()
        self._poll_interval_s = poll_interval_s
        self._timeout_s = timeout_s
        self._backoff = Backoff(poll_interval_s, max(backoff_max_s, poll_interval_s))
        self._request_delay_s = profile.modbus.request_delay_ms / 1000
        self._sink = sink
        self._clock: Clock = clock or _UtcClock()
        self._client: AsyncModbusTcpClient | None = None
        self._where = f"{name} ({host}:{port})"

    @property
    def read_blocks(self) -> list[ReadBlock]:
        """The reads one poll makes (for diagnostics: `ocpp-gateway probe`)."""
        return list(self._blocks)

    async def run(self) -> None:
        """Poll until cancelled; failures are reported to the sink and retried, never raised."""
        loop = asyncio.get_running_loop()
        failures = 0
        try:
            while True:
                started = loop.time()
                try:
                    snapshots = await self.poll_once()
                except DeviceError as exc:
                    failures += 1
                    self._report_failure(exc, failures)
                    await asyncio.sleep(self._backoff.next_delay())
                    continue
                if failures:
                    self._backoff.reset()
                    log.info("%s answers again after %d failed poll(s)", self._where, failures)
                    failures = 0
                for snapshot in snapshots:
                    self._sink.apply(snapshot)
                await asyncio.sleep(max(0.0, self._poll_interval_s - (loop.time() - started)))
        finally:
            self.close()

    async def poll_once(self) -> list[DeviceSnapshot]:
        """Read every register group once and decode it; raises a ``DeviceError`` on failure.

        Does not touch the sink, so tests (and ``probe``) can poll deterministically.
        ``measured_at`` is the clock time right after the last read.
        """
        image = RegisterImage()
        try:
            client = await self._connected()
            for index, block in enumerate(self._blocks):
                if index and self._request_delay_s:
                    await asyncio.sleep(self._request_delay_s)
                image.put(block.unit_id, block.table, block.address, await self._request(client, block))
        except DeviceError:
            self.close()
            raise
        measured_at = self._clock.now()
        try:
            return [self._snapshot(image, socket, measured_at) for socket in range(1, self._map.sockets + 1)]
        except (ValueError, TypeError, struct.error, ModbusException) as exc:
            self.close()
            raise DecodeError(f"{self._where}: cannot decode the registers: {exc}") from exc

    def close(self) -> None:
        """Drop the connection (the next poll reconnects)."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def _connected(self) -> AsyncModbusTcpClient:
        if self._client is not None and self._client.connected:
            return self._client
        self.close()
        # reconnect_delay=0: pymodbus must not reconnect behind our back; run() owns retries
        client = AsyncModbusTcpClient(
            self._host, port=self._port, name=self.name, timeout=self._timeout_s, retries=0, reconnect_delay=0
        )
        if not await client.connect():
            client.close()
            raise DeviceUnavailable(
                f"{self._where}: cannot connect (refused, unreachable or no answer within {self._timeout_s:g} s)"
            )
        self._client = client
        return client

    async def _request(self, client: AsyncModbusTcpClient, block: ReadBlock) -> list[int]:
        """Read one block; the one place where both pymodbus error styles become domain errors."""
        read = {
            "coil": client.read_coils,
            "discrete": client.read_discrete_inputs,
            "holding": client.read_holding_registers,
            "input": client.read_input_registers,
        }[block.table]
        where = f"{self._where} {block}"
        with _translate_errors(where, self._timeout_s):
            response = await read(block.address, count=block.count, device_id=block.unit_id)
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            name = ExcCodes(code).name.lower() if code in set(ExcCodes) else "unknown"
            raise DecodeError(f"{where}: the device answered with Modbus exception {code} ({name})")
        values = list(response.bits if block.table in BIT_TABLES else response.registers)
        if len(values) < block.count:
            raise DecodeError(f"{where}: got {len(values)} {TABLE_NAMES[block.table]} instead of {block.count}")
        return values[: block.count]

    def _snapshot(self, image: RegisterImage, socket: int, measured_at: datetime) -> DeviceSnapshot:
        decoded = self._map.decode(image, socket)
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
        )

    def _report_failure(self, exc: DeviceError, failures: int) -> None:
        self._sink.apply(DeviceFailed(device=self.name, reason=str(exc), failed_at=self._clock.now()))
        if failures == 1:
            log.warning("%s; retrying in the background", exc)
        else:
            log.debug("still failing (%d): %s", failures, exc)


@contextmanager
def _translate_errors(where: str, timeout_s: float) -> Iterator[None]:
    """pymodbus and socket exceptions -> the gateway's device errors, with one readable line."""
    try:
        yield
    except ConnectionException as exc:
        raise DeviceUnavailable(f"{where}: connection lost") from exc
    except (ModbusIOException, TimeoutError) as exc:
        raise DeviceTimeout(f"{where}: no answer within {timeout_s:g} s") from exc
    except OSError as exc:
        raise DeviceUnavailable(f"{where}: {exc.strerror or exc}") from exc
    except ModbusException as exc:
        raise DecodeError(f"{where}: {exc}") from exc
