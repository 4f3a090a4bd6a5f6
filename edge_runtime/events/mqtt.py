"""MQTT delivery of the outbox with paho-mqtt, on its own threads (never a request's).

paho runs the network loop (connect, reconnect with back-off, keep-alive, resending QoS 1
messages that were in flight when the connection dropped); the dispatcher thread here
feeds it a window of the oldest outbox messages in order and deletes a message from the
outbox only when paho reports the broker's PUBACK. A message handed to paho but not yet
acknowledged when the process stops is still in the outbox and is sent again at the next
start: delivery is at-least-once, and ``msg_id`` lets a subscriber drop the duplicates.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt

from edge_runtime.events.config import MqttSettings, device_id, parse_broker_url
from edge_runtime.events.outbox import Outbox
from edge_runtime.events.schemas import status_payload

log = logging.getLogger("edge_runtime.events.mqtt")
SINK = "mqtt"


class MqttPublisher:
    """Drains the ``mqtt`` sink of an outbox to a broker; keeps a retained device status."""

    def __init__(self, settings: MqttSettings, outbox: Outbox, window: int = 64,
                 health: Callable[[], dict] | None = None) -> None:
        self.settings, self.outbox, self.window = settings, outbox, window
        self.device_id = device_id(settings)
        self.base_topic = f"{settings.topic_prefix.rstrip('/')}/{self.device_id}"
        self.status_topic = f"{self.base_topic}/status"
        self._health = health or dict
        self.command_topic = f"{self.base_topic}/command"
        self.on_command: Callable[[bytes, bool], None] | None = None  # set before start()
        self._commands: queue.SimpleQueue[tuple[bytes, bool] | None] = queue.SimpleQueue()
        self._command_thread = threading.Thread(target=self._run_commands,
                                                name="mqtt-commands", daemon=True)
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._inflight: dict[int, int] = {}  # paho mid -> outbox seq
        self._last_seq = 0  # highest seq handed to paho in this process
        self._connected = threading.Event()
        self._generation = 0  # bumped on every CONNACK
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mqtt-dispatch", daemon=True)
        self.delivered = 0
        self.connects = 0
        self.client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id=s.client_id or f"edge-runtime-{self.device_id}",
                             protocol=mqtt.MQTTv311, clean_session=True)
        if s.username:
            client.username_pw_set(s.username, s.password or None)
        if parse_broker_url(s.url).tls:
            client.tls_set(ca_certs=s.ca_file or None, certfile=s.cert_file or None,
                           keyfile=s.key_file or None)
        client.will_set(self.status_topic, json.dumps(status_payload(self.device_id, "offline")),
                        qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.max_inflight_messages_set(self.window)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    # paho callbacks: network thread; keep them tiny and lock-free
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("MQTT broker refused the connection: %s", reason_code)
            return
        if self.on_command is not None:
            client.subscribe(self.command_topic, qos=1)
        self._generation += 1
        self.connects += 1
        self._connected.set()
        self.outbox.notify(SINK)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._connected.is_set() and not self._stop.is_set():
            log.warning("MQTT connection lost (%s); messages wait in the outbox", reason_code)
        self._connected.clear()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._acks.put(mid)
        self.outbox.notify(SINK)

    def _on_message(self, client, userdata, message) -> None:
        if message.topic == self.command_topic and self.on_command is not None:
            self._commands.put((bytes(message.payload), bool(message.retain)))

    def _run_commands(self) -> None:
        while (item := self._commands.get()) is not None:
            try:
                self.on_command(*item)
            except Exception:  # noqa: BLE001 - one bad command must not stop the others
                log.exception("MQTT command handler failed")

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> MqttPublisher:
        broker = parse_broker_url(self.settings.url)
        self.client.connect_async(broker.host, broker.port, keepalive=self.settings.keepalive_s)
        self.client.loop_start()
        self._thread.start()
        if self.on_command is not None:
            self._command_thread.start()
        return self

    def stop(self, drain_s: float = 2.0) -> None:
        """Wait up to ``drain_s`` for the outbox to empty, say "offline", disconnect."""
        if self._thread.ident is None:
            return  # never started
        deadline = time.monotonic() + drain_s
        while (self.connected and self.outbox.depth(SINK)
               and time.monotonic() < deadline):
            time.sleep(0.02)
        self._stop.set()
        self.outbox.notify(SINK)
        self._thread.join(5)
        if self._command_thread.ident is not None:
            self._commands.put(None)
            self._command_thread.join(5)
        self._collect_acks()  # acknowledgements that came in while the dispatcher stopped
        if self.connected:
            info = self.client.publish(
                self.status_topic, json.dumps(status_payload(self.device_id, "offline")),
                qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(1.0)
        self.client.disconnect()
        self.client.loop_stop()

    def _run(self) -> None:
        generation, last_status = 0, 0.0
        while not self._stop.is_set():
            try:
                self._collect_acks()
                self.outbox.checkpoint()
                if not self._connected.is_set():
                    self.outbox.wait(SINK, 0.2)
                    continue
                now = time.monotonic()
                if generation != self._generation or (
                        now - last_status >= self.settings.status_interval_s):
                    generation, last_status = self._generation, now
                    self._publish_status()
                self._feed()
                self.outbox.wait(SINK, 0.5)
            except Exception:  # a bad row or a paho error must not kill delivery for good
                log.exception("MQTT dispatcher error; retrying in 1 s")
                self._stop.wait(1.0)

    def _collect_acks(self) -> None:
        done = []
        while True:
            try:
                mid = self._acks.get_nowait()
            except queue.Empty:
                break
            seq = self._inflight.pop(mid, None)
            if seq is not None:
                done.append(seq)
        if done:
            self.outbox.ack(SINK, done)
            self.delivered += len(done)

    def _feed(self) -> None:
        room = self.window - len(self._inflight)
        if room <= 0:
            return
        for message in self.outbox.peek(SINK, after_seq=self._last_seq, limit=room):
            info = self.client.publish(f"{self.base_topic}/{message.topic}", message.payload,
                                       qos=self.settings.qos)
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                return
            # MQTT_ERR_NO_CONN still keeps a QoS>0 message queued in paho: it goes out (and
            # is acknowledged) after the reconnect, so it counts as handed over.
            self._last_seq = message.seq
            if self.settings.qos == 0:
                self.outbox.ack(SINK, [message.seq])
                self.delivered += 1
            else:
                self._inflight[info.mid] = message.seq

    def _publish_status(self) -> None:
        payload = status_payload(self.device_id, "online", **self._health())
        self.client.publish(self.status_topic, json.dumps(payload), qos=1, retain=True)
