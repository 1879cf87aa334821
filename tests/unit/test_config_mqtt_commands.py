"""``[mqtt.commands]``: MQTT command topics are off unless switched on, and typos are named."""

from __future__ import annotations

import pytest

from adapters.mqtt.commands import SWITCHES
from gateway.config import MqttCommandsConfig, parse_config
from gateway.domain.errors import ConfigError
from tests.unit.test_config import base


def test_commands_are_off_by_default_and_each_can_be_switched_on() -> None:
    assert parse_config(base()).mqtt.commands.enabled == frozenset()
    config = parse_config({**base(), "mqtt": {"commands": {"soc_input": True, "soc_target": False}}})
    assert config.mqtt.commands.enabled == {"soc_input"}


def test_every_switch_has_a_command_topic() -> None:
    assert set(MqttCommandsConfig.model_fields) == SWITCHES


def test_an_unknown_command_is_named_by_its_key_path() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({**base(), "mqtt": {"commands": {"soc_imput": True}}})
    assert caught.value.problems == [("mqtt.commands.soc_imput", "unknown key (check the spelling)")]
