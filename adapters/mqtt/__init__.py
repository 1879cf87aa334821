"""MQTT adapter: retained Site state and availability for building management and home automation."""

from adapters.mqtt.bridge import MqttBridge
from adapters.mqtt.embedded_broker import EmbeddedBroker, broker_answers

__all__ = ["EmbeddedBroker", "MqttBridge", "broker_answers"]
