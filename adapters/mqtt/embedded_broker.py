"""A small in-process MQTT broker (amqtt) for sites, demos and laptops that have no broker.

A real installation should use the site's own broker (Mosquitto, the home automation's
add-on); this exists so ``ocpp-gateway demo`` works out of the box when no ``mosquitto`` is
installed (see adapters.mqtt.private_mosquitto). It listens on one TCP port, accepts anonymous
clients and keeps retained messages in memory only.

amqtt 0.12.1 (pinned) sends every client, as it connects, the retained messages matching *any*
client's subscriptions, not its own. Once someone watches ``#`` (as the README tells users to),
a ``mosquitto_pub`` is flooded with every retained state topic before its PUBLISH is read; it
has already sent DISCONNECT and closed, amqtt handles the disconnect first and drops the
command without a word. ``_FixedBroker`` sends a connecting client only what matches its own
subscriptions (those of a resumed persistent session), which is what amqtt's comment there
says it means to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from amqtt.broker import Broker
from amqtt.errors import BrokerError

from gateway.domain.errors import GatewayError

log = logging.getLogger(__name__)


class _FixedBroker(Broker):
    """amqtt's Broker with retained messages sent only for subscriptions the client holds."""

    async def _publish_retained_messages_for_subscription(self, subscription: tuple[str, int], session: Any) -> None:
        topic_filter = subscription[0]
        holders = self._subscriptions.get(topic_filter, [])
        if not any(holder.client_id == session.client_id for holder, _qos in holders):
            return  # another client's filter: amqtt calls this for all of them at every connect
        await super()._publish_retained_messages_for_subscription(subscription, session)


async def broker_answers(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True if something accepts TCP connections on ``host:port`` within ``timeout_s`` seconds.

    A plain connect, not an MQTT handshake: it only answers "is a broker already there, or
    should the demo start one?", and must not leave a half-open MQTT session behind.
    """
    try:
        async with asyncio.timeout(timeout_s):
            _reader, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class EmbeddedBroker:
    """amqtt's ``Broker`` on one TCP listener with anonymous access; ``start()`` then ``stop()``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host = host
        self.port = port
        self._broker: Broker | None = None

    def _config(self) -> dict[str, Any]:
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }

    async def start(self) -> None:
        """Listen on ``host:port``; raises ``GatewayError`` naming the address if that fails."""
        if self._broker is not None:
            return
        broker = _FixedBroker(self._config())
        try:
            await broker.start()
        except BrokerError as exc:
            raise GatewayError(f"embedded MQTT broker cannot listen on {self.host}:{self.port}: {exc}") from exc
        self._broker = broker
        log.info("embedded MQTT broker listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        """Close the listener and drop all sessions and retained messages; safe to call twice."""
        broker, self._broker = self._broker, None
        if broker is None:
            return
        await broker.shutdown()
        log.info("embedded MQTT broker on %s:%d stopped", self.host, self.port)

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
