"""Config of the Modbus devices: ``[[chargers]]`` and ``[[meters]]``, and how each is reached."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from gateway.config_sharing import GridPhases
from gateway.config_strict import Name, Port, Strict

# Serial line settings; what a device leaves out comes from its profile, else 9600 8N1.
BAUDRATES = (1200, 2400, 4800, 9600, 14400, 19200, 38400, 57600, 115200, 230400)
TCP_KEYS = ("port", "framer")
SERIAL_KEYS = ("baudrate", "parity", "stopbits", "bytesize")


class DeviceConfig(Strict):
    """A Modbus device; the profile (a file in adapters/profiles) says what its registers mean.

    It is reached either over TCP (``host``, ``port``; ``framer = "rtu"`` for a serial gateway
    that passes RTU frames through TCP) or on a serial port (``serial`` and the line settings).
    Serial settings left out come from the profile's defaults, else 9600 8N1; devices on the
    same port share the line and must agree on them (checked against the profiles in app.py).
    """

    name: Name
    profile: Name
    host: Annotated[str, Field(min_length=1)] | None = None
    port: Port = 502
    framer: Literal["tcp", "rtu"] = "tcp"
    serial: Annotated[str, Field(min_length=1)] | None = None  # e.g. /dev/ttyUSB0
    baudrate: int | None = None
    parity: Literal["N", "E", "O"] | None = None
    stopbits: Literal[1, 2] | None = None
    bytesize: Literal[7, 8] | None = None
    unit_id: Annotated[int, Field(ge=0, le=255)] | None = None  # None: the profile's default
    poll_interval_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    # Consecutive failed polls before the device counts as lost (its connectors go Faulted):
    # one lost packet on a busy RS-485 bus should not page anyone.
    offline_after_failures: Annotated[int, Field(ge=1, le=100)] = 3

    @field_validator("baudrate")
    @classmethod
    def _standard_baudrate(cls, baudrate: int | None) -> int | None:
        if baudrate is not None and baudrate not in BAUDRATES:
            raise ValueError(f"{baudrate} is not a standard rate ({', '.join(map(str, BAUDRATES))})")
        return baudrate

    def transport_problems(self) -> list[tuple[str, str]]:
        """What is wrong with the choice of transport, by key relative to this device ("" = itself)."""
        if self.host is not None and self.serial is not None:
            return [("", "give either host (Modbus TCP) or serial (RTU on a serial port), not both")]
        if self.host is None and self.serial is None:
            return [("", "give either host (Modbus TCP) or serial (RTU on a serial port)")]
        given = self.model_fields_set
        if self.serial is not None:
            return [(key, "only for a TCP device (host = ...)") for key in TCP_KEYS if key in given]
        return [(key, "only for a serial device (serial = ...)") for key in SERIAL_KEYS if key in given]


class ChargerConfig(DeviceConfig):
    connectors: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)]  # site numbers, socket order
    grid_phases: GridPhases | None = None  # how it is wired to the grid (see gateway.config_sharing)


class MeterConfig(DeviceConfig):
    connector: Annotated[int, Field(ge=0)] | None = None  # 0: the site meter upstream; None: MQTT only
    # The most power it can measure, in kW: its register may not rise faster (a glitch is refused).
    # Default: its connector's max_power_kw, or 2000 kW for a site meter or one on MQTT only.
    max_power_kw: Annotated[float, Field(gt=0, le=100_000)] | None = None
