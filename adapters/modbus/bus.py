"""One Modbus request, answered or translated into the gateway's errors.

pymodbus reports problems in two styles: by exception, and by a response whose ``isError()`` is
true. This is the one place where both become ``DeviceUnavailable`` (no connection),
``DeviceTimeout`` (no answer), ``ExceptionResponse`` (the device said no) or ``DecodeError`` (the
answer is garbage: wrong length, another function or unit), and - for writes - where "the device
cannot take this value" becomes ``CommandRejected``. Nothing pymodbus-specific leaves here.

A device that answers as another unit id never reaches us over Modbus TCP: pymodbus drops such
frames and the request times out (``DeviceTimeout``); serial framers that pass them on are caught
by the unit id check below (``DecodeError``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager

from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from adapters.modbus.commands import RegisterWrite
from adapters.modbus.errors import ExceptionResponse
from adapters.modbus.profile import BIT_TABLES, TABLE_NAMES, Table
from adapters.modbus.transport import LineClient
from gateway.domain.errors import CommandRejected, DecodeError, DeviceTimeout, DeviceUnavailable

_READ_FUNCTION = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


async def read(
    client: LineClient, table: Table, address: int, count: int, unit_id: int, *, where: str, timeout_s: float
) -> list[int]:
    """``count`` registers (or bits as 0/1) of ``table`` from ``address`` of unit ``unit_id``.

    ``where`` names the device in error messages; ``timeout_s`` is what the client waits (for the
    message only). Raises ``ExceptionResponse`` for an exception answer, ``DecodeError`` for
    garbage, ``DeviceTimeout`` / ``DeviceUnavailable`` when there is no answer or no connection.
    """
    call = {
        "coil": client.read_coils,
        "discrete": client.read_discrete_inputs,
        "holding": client.read_holding_registers,
        "input": client.read_input_registers,
    }[table]
    where = f"{where} {TABLE_NAMES[table]} {address}..{address + count - 1} of unit {unit_id}"
    with translate_errors(where, timeout_s):
        response = await call(address, count=count, device_id=unit_id)
    _check(response, where, _READ_FUNCTION[table], unit_id)
    if table in BIT_TABLES:
        bits = list(response.bits)
        if not count <= len(bits) < count + 8:  # bits come padded to whole bytes
            raise DecodeError(f"{where}: got {len(bits)} bits instead of {count}")
        return [int(b) for b in bits[:count]]
    registers = list(response.registers)
    if len(registers) != count:
        raise DecodeError(f"{where}: got {len(registers)} {TABLE_NAMES[table]} instead of {count}")
    return registers


async def write(client: LineClient, request: RegisterWrite, *, where: str, timeout_s: float) -> None:
    """Send one write; ``CommandRejected`` if the device refuses the value, a ``DeviceError`` otherwise."""
    where = f"{where} {request}"
    fc, address, unit = request.function, request.address, request.unit_id
    with translate_errors(where, timeout_s):
        if fc == 5:
            response = await client.write_coil(address, bool(request.values[0]), device_id=unit)
        elif fc == 15:
            response = await client.write_coils(address, [bool(v) for v in request.values], device_id=unit)
        elif fc == 6:
            response = await client.write_register(address, request.values[0], device_id=unit)
        else:
            response = await client.write_registers(address, list(request.values), device_id=unit)
    try:
        _check(response, where, fc, unit)
    except ExceptionResponse as exc:
        if exc.refused:  # illegal function / address / value: this device does not take it
            raise CommandRejected(str(exc)) from exc
        raise


def _check(response: ModbusPDU, where: str, function: int, unit_id: int) -> None:
    if response.isError():
        raise ExceptionResponse(where, int(getattr(response, "exception_code", 0)))
    if response.function_code != function:
        raise DecodeError(f"{where}: the answer is for function {response.function_code}, not {function}")
    if unit_id and response.dev_id not in (0, unit_id):
        raise DecodeError(f"{where}: the answer comes from unit {response.dev_id}, not {unit_id}")


@contextmanager
def translate_errors(where: str, timeout_s: float) -> Iterator[None]:
    """pymodbus and socket exceptions -> the gateway's device errors, with one readable line."""
    try:
        yield
    except ConnectionException as exc:
        raise DeviceUnavailable(f"{where}: connection lost") from exc
    except ModbusIOException as exc:
        if "device id" in str(exc) or "transaction id" in str(exc):
            raise DecodeError(f"{where}: the answer does not belong to this request ({exc})") from exc
        raise DeviceTimeout(f"{where}: no answer within {timeout_s:g} s") from exc
    except TimeoutError as exc:
        raise DeviceTimeout(f"{where}: no answer within {timeout_s:g} s") from exc
    except OSError as exc:
        raise DeviceUnavailable(f"{where}: {exc.strerror or exc}") from exc
    except (ModbusException, struct.error, IndexError) as exc:  # a frame pymodbus could not parse
        raise DecodeError(f"{where}: {exc}") from exc
