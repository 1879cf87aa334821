"""Shared fixtures: real peers on loopback (Mosquitto, pymodbus simulators, an ocpp CSMS, socat ptys)."""

pytest_plugins = ["tests.fixtures.ocpp", "tests.fixtures.mosquitto", "tests.fixtures.modbus", "tests.fixtures.serial"]
