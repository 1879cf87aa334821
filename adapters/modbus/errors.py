"""The one Modbus-specific error the engine, identify() and probe share: an exception response.

It is a ``DecodeError`` (the device answered, but not with data), with the Modbus exception code
kept, because what happens next depends on it: "illegal address" for an optional register
makes that value unavailable, while "device failure" fails the poll.
"""

from __future__ import annotations

from pymodbus.constants import ExcCodes

from gateway.domain.errors import DecodeError

REFUSED_CODES = frozenset({int(ExcCodes.ILLEGAL_FUNCTION), int(ExcCodes.ILLEGAL_ADDRESS), int(ExcCodes.ILLEGAL_VALUE)})


def code_name(code: int) -> str:
    """``illegal_address``, ``device_failure``, ...; ``unknown`` for codes Modbus does not define."""
    return ExcCodes(code).name.lower() if code in {int(c) for c in ExcCodes} else "unknown"


class ExceptionResponse(DecodeError):
    """The device answered the request described by ``where`` with Modbus exception ``code``."""

    def __init__(self, where: str, code: int) -> None:
        self.code = code
        super().__init__(f"{where}: the device answered with Modbus exception {code} ({code_name(code)})")

    @property
    def refused(self) -> bool:
        """The device does not support this function, address or value (codes 1-3), as opposed to failing."""
        return self.code in REFUSED_CODES
