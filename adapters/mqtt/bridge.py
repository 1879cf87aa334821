"""The MQTT bridge: publishes the Site's state as retained JSON and keeps an availability topic;
takes the command topics the config switches on (adapters.mqtt.commands).

Building management and home automation read the gateway from a broker. They need the current
state at any moment (so every state topic is retained), to know when the gateway is gone (a Last
Will sets ``availability`` to ``offline``) and to recover by themselves after a broker restart
(so after every (re)connect the bridge publishes ``online`` and the whole current view again).

A broker outage is an expected failure: one WARNING when it starts, INFO when it ends, never a
traceback. The bridge keeps following the Site while the broker is away, remembering only *which*
topics changed, so a long outage costs no memory and nothing stale is sent when it ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Collection, Mapping

import aiomqtt

from adapters.mqtt.commands import CommandHandler, shown_topic
from adapters.mqtt.discovery import DEFAULT_DISCOVERY_PREFIX, Discovery
from adapters.mqtt.payloads import (
    AVAILABILITY_OFFLINE,
    AVAILABILITY_ONLINE,
    Payload,
    Topics,
    encode,
    fault_event,
    same_state,
)
from adapters.mqtt.refusals import PROTOCOLS, refusal_reason
from adapters.mqtt.state_topics import SITE_SUMMARY_EVENTS, StateKey, StateTopics
from gateway.config import MqttTlsConfig
from gateway.domain.events import (
    BacklogChanged,
    FaultCleared,
    FaultRaised,
)
from gateway.domain.model import iso_utc
from gateway.services.backoff import Backoff
from gateway.services.event_stream import EventStream
from gateway.services.session_tally import SessionTally
from gateway.services.site import Site
from gateway.services.tasks import cancel_and_wait, raise_if_cancelling
from gateway.services.telemetry import Telemetry

log = logging.getLogger(__name__)

#: Seconds between MQTT PINGs; a half-open TCP link is noticed after 1.5 x this.
KEEPALIVE_S = 30
#: Seconds to wait for a CONNACK / PUBACK before treating the broker as gone.
BROKER_TIMEOUT_S = 10.0
#: Seconds we spend telling the broker ``offline`` on shutdown; a dead broker must not stall it.
GOODBYE_TIMEOUT_S = 2.0
#: First reconnect delay in seconds (capped by ``reconnect_max_s``).
RECONNECT_INITIAL_S = 0.5
#: A connection must last this long (seconds) before the backoff starts again from the first
#: delay; a broker that accepts and then drops us at once (e.g. another client with our id) must
#: not make us reconnect twice a second.
STABLE_CONNECTION_S = 10.0

#: Fault events kept while the broker is away; the oldest go first beyond this.
MAX_PENDING_FAULT_EVENTS = 500
# Summary topics (the outbox's backlog, the site) change with every message queued or
# delivered and every poll of any device: they are published at most this often, always with
# the latest figures.
SUMMARY_PUBLISH_S = 1.0


class _ConnectionLost(aiomqtt.MqttError):
    """The open connection dropped; aiomqtt's own message for it names its iterator, not the cause."""


def _bytes(payload: object) -> bytes:
    """A message's payload as bytes (paho delivers bytes; aiomqtt's type also allows others)."""
    if payload is None:
        return b""
    return bytes(payload) if isinstance(payload, bytes | bytearray) else str(payload).encode()


async def _close_quietly(client: aiomqtt.Client) -> None:
    """Disconnect if still connected; errors here are moot (the link is going away anyway) and
    must not replace the exception in flight, least of all a cancellation."""
    try:
        await asyncio.wait_for(client.__aexit__(None, None, None), GOODBYE_TIMEOUT_S)
    except (aiomqtt.MqttError, TimeoutError) as exc:
        log.debug("MQTT disconnect not clean: %s", exc)


class MqttBridge:
    """Publishes the Site to an MQTT broker; ``run()`` until cancelled.

    ``connected`` is set once ``online`` and all retained state are published after a connect and
    cleared when the connection is lost, so callers (and tests) can wait for a usable link.
    ``qos`` applies to state topics; availability always uses QoS 1 (as does the Last Will).
    ``commands``: the ``[mqtt.commands]`` switches that are on (see adapters.mqtt.commands).
    ``discovery_prefix``: Home Assistant's discovery prefix (adapters.mqtt.discovery); None: none.
    ``protocol``: ``"3.1.1"`` or ``"5"``; ``tls``: the ``[mqtt.tls]`` table, None for plain TCP.
    ``max_current_a``: per connector, its charger's highest current (a higher ceiling is refused).
    ``tally``: the sessions' tally to show (seeded from the history); the bridge runs it.
    """

    def __init__(
        self,
        site: Site,
        *,
        host: str,
        port: int,
        topic_prefix: str,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        qos: int = 1,
        reconnect_max_s: float = 30.0,
        commands: Collection[str] = (),
        discovery_prefix: str | None = DEFAULT_DISCOVERY_PREFIX,
        protocol: str = "3.1.1",
        tls: MqttTlsConfig | None = None,
        telemetry: Telemetry | None = None,
        max_current_a: Mapping[int, float] | None = None,
        tally: SessionTally | None = None,
    ) -> None:
        if qos not in (0, 1, 2):
            raise ValueError(f"MQTT qos must be 0, 1 or 2, not {qos!r}")
        if protocol not in PROTOCOLS:
            raise ValueError(f"MQTT protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
        if reconnect_max_s <= 0:
            raise ValueError(f"reconnect_max_s must be positive, not {reconnect_max_s!r}")
        if tls is not None and tls.insecure:
            log.warning(
                "MQTT over TLS to %s:%d does NOT check that the broker's certificate is for that host "
                "([mqtt.tls] insecure = true): whoever can redirect the traffic can pose as the broker",
                host,
                port,
            )
        self.topics = Topics(topic_prefix)
        self._state = StateTopics(site, self.topics, tally)
        self._state.follow_tally(self._mark)
        self.connected = asyncio.Event()
        self._telemetry = telemetry or Telemetry()  # the link's state, for the status page
        self._commands = CommandHandler(site, self.topics, commands, max_current_a=max_current_a)
        self._discovery = Discovery(discovery_prefix, self.topics, frozenset(commands)) if discovery_prefix else None
        # Built once (the Site's devices are fixed), so two entities with one id fail at start-up.
        self._discovery_configs = [] if self._discovery is None else self._discovery.configs(site)
        self._discovery_cleared = [] if self._discovery is None else self._discovery.cleared(site)
        self._site = site
        self._host = host
        self._port = port
        self._client_id = client_id
        self._username = username
        self._password = password
        self._qos = qos
        self._protocol = protocol
        self._tls = tls
        self._refusal_logged: str | None = None  # the broker's refusal last logged as an ERROR
        self._backoff = Backoff(RECONNECT_INITIAL_S, reconnect_max_s)
        self._last: dict[str, Payload] = {}  # topic -> last payload the broker acknowledged
        self._dirty: dict[StateKey, None] = {}  # an ordered set of topics to republish
        self._wake = asyncio.Event()
        self._fault_events: deque[tuple[str, Payload]] = deque(maxlen=MAX_PENDING_FAULT_EVENTS)
        self._outage_logged = False
        self._ever_connected = False
        self._up_since: float | None = None  # loop time of the last successful (re)publish
        self._due: dict[StateKey, asyncio.TimerHandle] = {}  # summary topics waiting for their turn

    def __repr__(self) -> str:  # never show the password
        return f"MqttBridge({self._host}:{self._port}, prefix={self.topics.prefix!r})"

    # -- lifecycle -------------------------------------------------------------------------------
    async def run(self) -> None:
        """Follow the Site and keep the broker up to date, reconnecting forever; stop by cancelling.

        On cancellation ``offline`` is published (retained) before a clean disconnect.
        """
        stream = self._site.subscribe()
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._collect(stream), name="mqtt-collect")
                tasks.create_task(self._connection_loop(), name="mqtt-connection")
                tasks.create_task(self._state.tally.run(), name="session tally")
        finally:
            self.connected.clear()
            self._site.unsubscribe(stream)
            for handle in self._due.values():  # a later run() starts with nothing pending
                handle.cancel()
            self._due.clear()

    async def _connection_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self._connect_and_serve()
            except aiomqtt.MqttError as exc:
                raise_if_cancelling(exc)
                self._lost(exc)
            self.connected.clear()
            if self._up_since is not None and loop.time() - self._up_since >= STABLE_CONNECTION_S:
                self._backoff.reset()
            self._up_since = None
            await asyncio.sleep(self._backoff.next_delay())

    def _new_client(self) -> aiomqtt.Client:
        """A fresh client per attempt: aiomqtt 2.x clients do not reconnect by themselves."""
        tls = self._tls
        return aiomqtt.Client(
            self._host,
            self._port,
            identifier=self._client_id,
            username=self._username,
            password=self._password,
            will=aiomqtt.Will(self.topics.availability, AVAILABILITY_OFFLINE, qos=1, retain=True),
            keepalive=KEEPALIVE_S,
            timeout=BROKER_TIMEOUT_S,
            protocol=PROTOCOLS[self._protocol],
            tls_params=None if tls is None else aiomqtt.TLSParameters(tls.ca_file, tls.cert_file, tls.key_file),
            tls_insecure=None if tls is None else tls.insecure,
        )

    async def _connect_and_serve(self) -> None:
        """Connect, publish everything, follow the Site; raises ``MqttError`` when the link is lost."""
        client = self._new_client()
        await client.__aenter__()
        try:
            await self._serve_until_lost(client)
        finally:
            await _close_quietly(client)

    async def _serve_until_lost(self, client: aiomqtt.Client) -> None:
        # Two plain tasks rather than a TaskGroup: on Python 3.11 a TaskGroup whose child fails
        # while the group is exiting reports the child's error *instead of* our own cancellation
        # and leaves the task marked as cancelling, which would turn "stop" into "reconnect".
        # The watcher runs from the start so a connection lost during the full republish is
        # noticed at once, not after a PUBACK timeout.
        watch = asyncio.create_task(self._watch_connection(client), name="mqtt-watch")
        serve = asyncio.create_task(self._serve(client), name="mqtt-serve")
        try:
            await asyncio.wait((watch, serve), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await cancel_and_wait(watch, serve)
            await self._say_offline(client)
            raise
        await cancel_and_wait(watch, serve)
        for task in (watch, serve):
            if task.done() and not task.cancelled() and task.exception() is not None:
                task.result()  # re-raise: MqttError means "reconnect", anything else is a bug
        raise _ConnectionLost("the MQTT session ended unexpectedly")

    async def _watch_connection(self, client: aiomqtt.Client) -> None:
        """Carry out command messages (see adapters.mqtt.commands), answering invalid ones on the
        error topic; raise ``MqttError`` as soon as the connection drops (aiomqtt reports it via
        ``messages``)."""
        try:
            async for message in client.messages:
                topic, payload, retained = str(message.topic), _bytes(message.payload), bool(message.retain)
                if self._discovery is not None and topic == self._discovery.status_topic:
                    await self._home_assistant_status(client, payload, retained)
                    continue
                error = self._handle_command(topic, payload, retained)
                if error is not None:
                    await client.publish(self.topics.error, encode(error), qos=self._qos)
        except aiomqtt.MqttError as exc:
            raise _ConnectionLost("closed by the broker or the network") from exc

    def _handle_command(self, topic: str, payload: bytes, retained: bool) -> Payload | None:
        """One command message; whatever it holds, it must not end the bridge.

        Bad input is answered by the handler itself (adapters.mqtt.commands). An exception that
        gets out of it anyway is a bug of ours, not the sender's: one ERROR line (the traceback
        at DEBUG), an answer saying the command was not carried out, and the next message is
        taken as usual: one message must never stop the bridge, let alone the gateway.
        """
        try:
            return self._commands.handle(topic, payload, retained=retained)
        except Exception as exc:
            shown = shown_topic(topic)
            log.error("MQTT command %s failed (a bug, please report it): %s: %s", shown, type(exc).__name__, exc)
            log.debug("MQTT command %s failed", shown, exc_info=True)
            reason = "internal error; not carried out (see the gateway's log)"
            return {"topic": shown, "reason": reason, "at": iso_utc(self._site.clock.now())}

    async def _serve(self, client: aiomqtt.Client) -> None:
        # Forget what the previous broker had: it may have restarted without persistence, or be a
        # different broker altogether. Changes from now on are marked dirty again.
        self._last.clear()
        self._dirty.clear()
        self._wake.clear()
        await client.publish(self.topics.availability, AVAILABILITY_ONLINE, qos=1, retain=True)
        await client.subscribe(self.topics.commands, qos=1)  # a switched-off command is still logged once
        await client.subscribe(self.topics.site_commands, qos=1)
        if self._discovery is not None:
            await client.subscribe(self._discovery.status_topic, qos=1)
        count = 0
        for key in self._state.all_keys():
            count += await self._publish_key(client, key)
        await self._publish_discovery(client)
        self._up_since = asyncio.get_running_loop().time()
        self._came_up(count)
        self.connected.set()
        self._telemetry.mqtt_changed(True)
        await self._publish_fault_events(client)
        while True:
            await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, {}
            for key in dirty:
                await self._publish_key(client, key)
            await self._publish_fault_events(client)

    async def _publish_fault_events(self, client: aiomqtt.Client) -> None:
        """Fault events in the order they happened; one leaves the queue only once the broker has it."""
        while self._fault_events:
            topic, payload = self._fault_events[0]
            await client.publish(topic, encode(payload), qos=self._qos)
            self._fault_events.popleft()

    async def _say_offline(self, client: aiomqtt.Client) -> None:
        """Best effort: a clean disconnect suppresses the Will, so say ``offline`` ourselves."""
        self.connected.clear()
        self._telemetry.mqtt_changed(False, "stopping")
        try:
            await client.publish(
                self.topics.availability, AVAILABILITY_OFFLINE, qos=1, retain=True, timeout=GOODBYE_TIMEOUT_S
            )
        except aiomqtt.MqttError as exc:
            log.debug("could not publish MQTT availability offline on shutdown: %s", exc)
        else:
            log.info("MQTT bridge stopped; published %s offline", self.topics.availability)

    # -- Home Assistant discovery (adapters.mqtt.discovery) -----------------------------------------
    async def _publish_discovery(self, client: aiomqtt.Client) -> int:
        """Every discovery config (retained, QoS 1), and an empty retained message on the config of
        each command entity that is switched off, so that HA drops it. Returns the configs sent."""
        for topic, config in self._discovery_configs:
            await client.publish(topic, encode(config), qos=1, retain=True)
        for topic in self._discovery_cleared:
            await client.publish(topic, b"", qos=1, retain=True)
        return len(self._discovery_configs)

    async def _home_assistant_status(self, client: aiomqtt.Client, payload: bytes, retained: bool) -> None:
        """HA announces ``online`` when it (re)starts: send it every config again, and ``online``.

        A retained ``online`` comes when we subscribe, right after publishing everything: ignored.
        """
        if retained or payload.strip() != AVAILABILITY_ONLINE.encode():
            return
        await client.publish(self.topics.availability, AVAILABILITY_ONLINE, qos=1, retain=True)
        count = await self._publish_discovery(client)
        log.info("Home Assistant is online: republished %d discovery configs and availability", count)

    # -- logging of the broker's health ----------------------------------------------------------
    def _lost(self, exc: aiomqtt.MqttError) -> None:
        """One WARNING per outage; a refusal that needs a change of config (credentials, TLS) is
        an ERROR instead, once per cause, then DEBUG while it goes on."""
        was_up = self.connected.is_set()
        self.connected.clear()
        refusal = refusal_reason(exc, self._username, self._protocol)
        self._telemetry.mqtt_changed(False, refusal or str(exc))
        if not self._outage_logged:  # a new outage: a refusal logged in an earlier one is news again
            self._refusal_logged = None
        if refusal is not None and refusal != self._refusal_logged:
            self._refusal_logged = refusal
            self._outage_logged = True
            log.error(
                "MQTT broker %s:%d %s; retrying with backoff up to %g s",
                self._host,
                self._port,
                refusal,
                self._backoff.max_s,
            )
            return
        if self._outage_logged:
            log.debug("MQTT broker %s:%d still unavailable: %s", self._host, self._port, exc)
            return
        self._outage_logged = True
        what = "connection lost" if was_up or self._ever_connected else "not reachable"
        log.warning(
            "MQTT broker %s:%d %s (%s); retrying with backoff up to %g s",
            self._host,
            self._port,
            what,
            exc,
            self._backoff.max_s,
        )

    def _came_up(self, published: int) -> None:
        if self._outage_logged:
            log.info(
                "MQTT broker %s:%d is back; republished availability and %d state topics",
                self._host,
                self._port,
                published,
            )
        else:
            log.info("connected to MQTT broker %s:%d as %r", self._host, self._port, self._client_id)
        self._outage_logged = False
        self._ever_connected = True

    # -- from Site events to topics ----------------------------------------------------------------
    async def _collect(self, stream: EventStream) -> None:
        """Turn events into dirty topics, connected or not; the publisher reads the Site's view.

        Fault events are kept (up to MAX_PENDING_FAULT_EVENTS) until published, so a fault that
        comes and goes while the broker is away is still told.
        """
        async for event in stream:
            if isinstance(event, BacklogChanged):
                self._publish_soon(("outbox",))
            if isinstance(event, SITE_SUMMARY_EVENTS):
                self._publish_soon(("site",))
            if isinstance(event, FaultRaised | FaultCleared):
                raised = isinstance(event, FaultRaised)
                if event.meter is not None:
                    topic = self.topics.meter_fault(event.meter)
                else:
                    topic = self.topics.connector_fault(event.connector_id or 0)
                payload = fault_event(event.connector_id, event.fault, raised=raised, at=event.at, meter=event.meter)
                self._fault_events.append((topic, payload))
            for key in self._state.keys_for(event):
                self._dirty[key] = None
            self._wake.set()

    def _publish_soon(self, key: StateKey) -> None:
        """Mark a summary topic dirty within SUMMARY_PUBLISH_S, once however often it changes."""
        if key not in self._due:
            self._due[key] = asyncio.get_running_loop().call_later(SUMMARY_PUBLISH_S, self._now_due, key)

    def _now_due(self, key: StateKey) -> None:
        del self._due[key]
        self._mark(key)

    def _mark(self, key: StateKey) -> None:
        self._dirty[key] = None
        self._wake.set()

    async def _publish_key(self, client: aiomqtt.Client, key: StateKey) -> int:
        """Publish one state topic unless it says nothing new; returns 1 if a message went out."""
        rendered = self._state.render(key)
        if rendered is None:
            return 0
        topic, payload = rendered
        if same_state(self._last.get(topic), payload):
            return 0
        await client.publish(topic, encode(payload), qos=self._qos, retain=True)
        self._last[topic] = payload
        return 1
