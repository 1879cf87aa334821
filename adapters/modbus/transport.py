"""How the engine reaches a device: Modbus TCP, RTU over a serial line, or RTU over TCP.

The transports differ only in which pymodbus client carries the requests, so that choice lives
in one function, ``make_client``; the rest of the engine sees a ``LineClient``.

A *line* is one physical path to one or more devices: an RS-485 bus behind a serial port, a
serial gateway reached over TCP, or a Modbus TCP endpoint. Devices on the same line (stations
with different unit ids) must share one connection - a serial port can be opened only once, and
many serial gateways accept a single TCP client - and must take turns: two requests on an RS-485
bus at the same time garble both. ``ModbusLine`` owns that connection and a lock per line;
``ModbusLines`` hands every device of the same line the same ``ModbusLine``.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Literal

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.client.base import ModbusBaseClient
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from adapters.modbus.profile_schema import SerialSettings
from gateway.domain.errors import DeviceUnavailable

Framer = Literal["tcp", "rtu"]
Parity = Literal["N", "E", "O"]
DEFAULT_TCP_PORT = 502


@dataclass(frozen=True, slots=True)
class TcpTransport:
    """A TCP endpoint. ``framer="tcp"``: Modbus TCP (MBAP header); ``"rtu"``: a serial gateway that
    passes RTU frames (unit id + CRC) through a TCP socket unchanged ("RTU over TCP")."""

    host: str
    port: int = DEFAULT_TCP_PORT
    framer: Framer = "tcp"

    def __str__(self) -> str:
        where = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        return f"{where} RTU over TCP" if self.framer == "rtu" else where


@dataclass(frozen=True, slots=True)
class SerialTransport:
    """A serial port with RTU framing; the usual notation ``9600 8N1`` is baud, data bits, parity,
    stop bits. Every device on the bus must use the same settings."""

    device: str
    baudrate: int = 9600
    parity: Parity = "N"
    stopbits: int = 1
    bytesize: int = 8

    def __post_init__(self) -> None:
        if self.baudrate <= 0:
            raise ValueError(f"baudrate must be positive, not {self.baudrate}")
        if self.parity not in ("N", "E", "O"):
            raise ValueError(f"parity must be N, E or O, not {self.parity!r}")
        if self.stopbits not in (1, 2) or self.bytesize not in (7, 8):
            raise ValueError(f"{self.bytesize}{self.parity}{self.stopbits}: data bits are 7 or 8, stop bits 1 or 2")

    def __str__(self) -> str:
        return f"{self.device} {self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"


Transport = TcpTransport | SerialTransport


def serial_transport(
    device: str,
    usual: SerialSettings | None,
    *,
    baudrate: int | None = None,
    parity: Parity | None = None,
    stopbits: int | None = None,
    bytesize: int | None = None,
) -> SerialTransport:
    """A serial port's settings: what the installer gave wins, then the profile's ``usual``, then 9600 8N1."""
    defaults: SerialSettings | SerialTransport = usual or SerialTransport(device)
    return SerialTransport(
        device,
        baudrate=baudrate or defaults.baudrate,
        parity=parity or defaults.parity,
        stopbits=stopbits or defaults.stopbits,
        bytesize=bytesize or defaults.bytesize,
    )


def line_key(transport: Transport) -> str:
    """What makes two devices share a line: the port path, or the TCP endpoint and framing."""
    if isinstance(transport, SerialTransport):
        return f"serial:{os.path.realpath(transport.device)}"
    return f"{transport.framer}:{transport.host}:{transport.port}"


def make_client(settings: Transport, timeout_s: float, *, name: str = "modbus") -> ModbusBaseClient:
    """A pymodbus client for ``settings``, not yet connected.

    ``timeout_s`` bounds the connect and each answer. The client never retries or reconnects by
    itself (``retries=0, reconnect_delay=0``): the engine owns retries, backoff and the log.
    """
    if isinstance(settings, SerialTransport):
        return AsyncModbusSerialClient(
            settings.device,
            framer=FramerType.RTU,
            baudrate=settings.baudrate,
            parity=settings.parity,
            stopbits=settings.stopbits,
            bytesize=settings.bytesize,
            name=name,
            timeout=timeout_s,
            retries=0,
            reconnect_delay=0,
        )
    return AsyncModbusTcpClient(
        settings.host,
        port=settings.port,
        framer=FramerType.RTU if settings.framer == "rtu" else FramerType.SOCKET,
        name=name,
        timeout=timeout_s,
        retries=0,
        reconnect_delay=0,
    )


class LineClient:
    """The Modbus functions the engine uses, each taking the line's turn for one request/answer.

    Results and errors are pymodbus' own; ``bus.py`` translates them.
    """

    def __init__(self, client: ModbusBaseClient, turn: asyncio.Lock) -> None:
        self._client = client
        self._turn = turn

    @property
    def connected(self) -> bool:
        return bool(self._client.connected)

    async def read_coils(self, address: int, *, count: int = 1, device_id: int = 1) -> ModbusPDU:
        async with self._turn:
            return await self._client.read_coils(address, count=count, device_id=device_id)

    async def read_discrete_inputs(self, address: int, *, count: int = 1, device_id: int = 1) -> ModbusPDU:
        async with self._turn:
            return await self._client.read_discrete_inputs(address, count=count, device_id=device_id)

    async def read_holding_registers(self, address: int, *, count: int = 1, device_id: int = 1) -> ModbusPDU:
        async with self._turn:
            return await self._client.read_holding_registers(address, count=count, device_id=device_id)

    async def read_input_registers(self, address: int, *, count: int = 1, device_id: int = 1) -> ModbusPDU:
        async with self._turn:
            return await self._client.read_input_registers(address, count=count, device_id=device_id)

    async def write_coil(self, address: int, value: bool, *, device_id: int = 1) -> ModbusPDU:
        async with self._turn:
            return await self._client.write_coil(address, value, device_id=device_id)

    async def write_coils(self, address: int, values: list[bool], *, device_id: int = 1) -> ModbusPDU:
        async with self._turn:
            return await self._client.write_coils(address, values, device_id=device_id)

    async def write_register(self, address: int, value: int, *, device_id: int = 1) -> ModbusPDU:
        async with self._turn:
            return await self._client.write_register(address, value, device_id=device_id)

    async def write_registers(self, address: int, values: list[int], *, device_id: int = 1) -> ModbusPDU:
        async with self._turn:
            return await self._client.write_registers(address, values, device_id=device_id)


class ModbusLine:
    """One connection shared by every device on a line, opened on first use, one request at a time.

    Devices ``connect()`` before each poll and ``release()`` when they fail or stop. The line
    closes when its last user releases it, or when the connection itself is gone: one station on
    an RS-485 bus that stops answering must not cut off the others, but a single device that
    times out gets a fresh connection, as before lines existed.
    """

    def __init__(self, transport: Transport, timeout_s: float) -> None:
        self.transport = transport
        self.timeout_s = timeout_s
        self._client: ModbusBaseClient | None = None
        self._turn = asyncio.Lock()
        self._users: set[str] = set()
        self.connects = 0  # how often a connection was opened (diagnostics and tests)

    @property
    def is_open(self) -> bool:
        return self._client is not None and bool(self._client.connected)

    async def connect(self, user: str) -> LineClient:
        """The line's client, connected first if needed; raises ``DeviceUnavailable`` if it cannot be."""
        async with self._turn:
            if not self.is_open:
                self._drop()
                client = make_client(self.transport, self.timeout_s, name=user)
                if not await client.connect():
                    client.close()
                    raise DeviceUnavailable(self._cannot_connect())
                self._client = client
                self.connects += 1
            self._users.add(user)
            assert self._client is not None
            return LineClient(self._client, self._turn)

    def release(self, user: str) -> None:
        """``user`` failed or stopped: close the connection if nobody else uses it or it is broken."""
        self._users.discard(user)
        if not self._users or not self.is_open:
            self._drop()

    def close(self) -> None:
        """Close the connection whoever uses it (the next ``connect()`` opens it again)."""
        self._users.clear()
        self._drop()

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _cannot_connect(self) -> str:
        if isinstance(self.transport, SerialTransport):
            if not os.path.exists(self.transport.device):
                return "cannot open the serial port: no such device"
            return "cannot open the serial port (in use, or no permission)"
        return f"cannot connect (refused, unreachable or no answer within {self.timeout_s:g} s)"


class ModbusLines:
    """The lines of one gateway: devices with the same ``line_key`` get the same ``ModbusLine``.

    Each line waits as long as its most patient device (the largest ``timeout_s``). Raises
    ``ValueError`` when two devices name the same serial port with different settings.
    """

    def __init__(self) -> None:
        self._lines: dict[str, ModbusLine] = {}

    def line(self, transport: Transport, timeout_s: float) -> ModbusLine:
        key = line_key(transport)
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = ModbusLine(transport, timeout_s)
        elif line.transport != transport and isinstance(transport, SerialTransport):
            raise ValueError(f"{transport.device} is already used as {line.transport}, not {transport}")
        line.timeout_s = max(line.timeout_s, timeout_s)
        return line

    def close(self) -> None:
        for line in self._lines.values():
            line.close()
