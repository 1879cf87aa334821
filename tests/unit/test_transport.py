"""Transports: config keys and their errors, the pymodbus client each choice makes, turn-taking on a line."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from adapters.modbus.profile import load_profile
from adapters.modbus.transport import LineClient, ModbusLines, SerialTransport, TcpTransport, make_client
from gateway.config import parse_config
from gateway.config_checks import check_profiles, transport_for
from gateway.domain.errors import ConfigError


def config(*chargers: dict[str, Any], meters: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    numbered = [
        {"name": f"c{i}", "profile": "abb-terra-ac", "connectors": [i + 1], **c} for i, c in enumerate(chargers)
    ]
    return {
        "site": {"id": "s1"},
        "upstream": {"url": "ws://csms.example/ocpp", "charge_point_id": "GW1"},
        "chargers": numbered,
        "meters": [{"name": f"m{i}", "profile": "eastron-sdm630", **m} for i, m in enumerate(meters)],
    }


def problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return caught.value.problems


def test_tcp_serial_and_rtu_over_tcp_devices() -> None:
    parsed = parse_config(
        config(
            {"host": "10.0.0.2"},
            {"host": "10.0.0.3", "port": 4001, "framer": "rtu"},
            {"serial": "/dev/ttyUSB0", "baudrate": 19200, "parity": "E"},
        )
    )
    transports = [transport_for(c, load_profile(c.profile)) for c in parsed.chargers]
    assert transports == [
        TcpTransport("10.0.0.2", 502),
        TcpTransport("10.0.0.3", 4001, framer="rtu"),
        SerialTransport("/dev/ttyUSB0", baudrate=19200, parity="E", stopbits=1, bytesize=8),
    ]
    assert [str(t) for t in transports] == ["10.0.0.2:502", "10.0.0.3:4001 RTU over TCP", "/dev/ttyUSB0 19200 8E1"]


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ({"host": "10.0.0.2", "serial": "/dev/ttyUSB0"}, ("chargers[0]", "give either host (Modbus TCP) or serial")),
        ({}, ("chargers[0]", "give either host (Modbus TCP) or serial (RTU on a serial port)")),
        ({"serial": "/dev/ttyUSB0", "port": 502}, ("chargers[0].port", "only for a TCP device (host = ...)")),
        ({"serial": "/dev/ttyUSB0", "framer": "rtu"}, ("chargers[0].framer", "only for a TCP device (host = ...)")),
        ({"host": "10.0.0.2", "baudrate": 9600}, ("chargers[0].baudrate", "only for a serial device (serial = ...)")),
        ({"host": "10.0.0.2", "parity": "E"}, ("chargers[0].parity", "only for a serial device (serial = ...)")),
        ({"serial": "/dev/ttyUSB0", "baudrate": 9601}, ("chargers[0].baudrate", "9601 is not a standard rate")),
        ({"serial": "/dev/ttyUSB0", "parity": "X"}, ("chargers[0].parity", "Input should be 'N', 'E' or 'O'")),
        ({"serial": "/dev/ttyUSB0", "stopbits": 3}, ("chargers[0].stopbits", "Input should be 1 or 2")),
        ({"host": "10.0.0.2", "framer": "ascii"}, ("chargers[0].framer", "Input should be 'tcp' or 'rtu'")),
    ],
)
def test_transport_mistakes_name_the_key(device: dict[str, Any], expected: tuple[str, str]) -> None:
    [(key, reason)] = problems(config(device))
    assert (key, reason[: len(expected[1])]) == expected


def test_devices_on_one_port_must_agree_and_have_their_own_unit_ids() -> None:
    bus = {"serial": "/dev/ttyUSB0"}
    clash = parse_config(config({**bus, "unit_id": 1}, {**bus, "unit_id": 1}, {**bus, "unit_id": 2, "baudrate": 19200}))
    assert check_profiles(clash) == [
        ("chargers[1].unit_id", "unit id 1 on /dev/ttyUSB0 9600 8N1 is already chargers[0]'s"),
        (
            "chargers[2].serial",
            "chargers[0] uses this port as /dev/ttyUSB0 9600 8N1; devices on one bus need the same "
            "baudrate, parity, stopbits, bytesize, not /dev/ttyUSB0 19200 8N1",
        ),
    ]
    fine = parse_config(config({**bus, "unit_id": 1}, meters=({**bus, "unit_id": 2},)))
    assert check_profiles(fine) == []
    # the meter's profile default is unit 1, like the charger's: the same clash, found through the profile
    assert [key for key, _ in check_profiles(parse_config(config(bus, meters=(bus,))))] == ["meters[0].unit_id"]


async def test_make_client_picks_the_pymodbus_client_and_framing() -> None:
    tcp = make_client(TcpTransport("10.0.0.2"), 1.5)
    assert isinstance(tcp, AsyncModbusTcpClient) and tcp.ctx.framer.__class__.__name__ == "FramerSocket"
    assert (tcp.comm_params.host, tcp.comm_params.port, tcp.comm_params.timeout_connect) == ("10.0.0.2", 502, 1.5)
    rtu_tcp = make_client(TcpTransport("10.0.0.3", 4001, framer="rtu"), 1.0)
    assert isinstance(rtu_tcp, AsyncModbusTcpClient) and rtu_tcp.ctx.framer.__class__.__name__ == "FramerRTU"
    serial = make_client(SerialTransport("/dev/ttyUSB0", 57600, "O", 2, 7), 0.5)
    assert isinstance(serial, AsyncModbusSerialClient)
    params = serial.comm_params
    assert (params.host, params.baudrate, params.parity, params.stopbits, params.bytesize) == (
        "/dev/ttyUSB0",
        57600,
        "O",
        2,
        7,
    )
    assert serial.ctx.framer.__class__.__name__ == "FramerRTU" and serial.ctx.retries == 0


def test_serial_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="data bits are 7 or 8"):
        SerialTransport("/dev/ttyUSB0", bytesize=9)
    with pytest.raises(ValueError, match="parity must be N, E or O"):
        SerialTransport("/dev/ttyUSB0", parity="M")  # type: ignore[arg-type]


def test_one_port_one_line_and_settings_must_match() -> None:
    lines = ModbusLines()
    line = lines.line(SerialTransport("/dev/ttyUSB0"), 0.5)
    assert lines.line(SerialTransport("/dev/ttyUSB0"), 2.0) is line
    assert line.timeout_s == 2.0  # the most patient device sets the line's timeout
    assert lines.line(TcpTransport("10.0.0.2"), 1.0) is lines.line(TcpTransport("10.0.0.2", 502), 1.0)
    assert lines.line(TcpTransport("10.0.0.2", framer="rtu"), 1.0) is not lines.line(TcpTransport("10.0.0.2"), 1.0)
    with pytest.raises(ValueError, match="already used as /dev/ttyUSB0 9600 8N1, not /dev/ttyUSB0 19200 8N1"):
        lines.line(SerialTransport("/dev/ttyUSB0", 19200), 0.5)


class SlowClient:
    """Stands in for a pymodbus client: each request takes a while and records when it is on the wire."""

    def __init__(self) -> None:
        self.on_wire: list[str] = []
        self.log: list[str] = []
        self.connected = True

    async def read_input_registers(self, address: int, *, count: int, device_id: int) -> str:
        self.on_wire.append(f"unit {device_id}")
        self.log.append(f"start {device_id}")
        assert len(self.on_wire) == 1, f"two requests on the wire at once: {self.on_wire}"
        await asyncio.sleep(0)  # let the other request try to cut in
        await asyncio.sleep(0)
        self.log.append(f"end {device_id}")
        self.on_wire.remove(f"unit {device_id}")
        return f"answer {device_id}"


async def test_requests_on_one_line_take_turns() -> None:
    fake = SlowClient()
    turn = asyncio.Lock()
    first, second = LineClient(fake, turn), LineClient(fake, turn)  # type: ignore[arg-type]
    answers = await asyncio.gather(
        *(c.read_input_registers(0, count=2, device_id=u) for c, u in ((first, 1), (second, 2), (first, 1)))
    )
    assert answers == ["answer 1", "answer 2", "answer 1"]
    assert fake.log == ["start 1", "end 1", "start 2", "end 2", "start 1", "end 1"]
