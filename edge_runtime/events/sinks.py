"""The daemon's event sinks: one outbox file, an MQTT publisher and/or a webhook sender.

``emit`` is what the in-process event bus calls: it builds the versioned payload and
appends it to the outbox, nothing more, so a request never waits for a broker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_runtime.events.config import (
    MqttSettings,
    WebhookSettings,
    device_id,
    validate_mqtt,
    validate_webhook,
)
from edge_runtime.events.outbox import Outbox
from edge_runtime.events.schemas import envelope

log = logging.getLogger("edge_runtime.events")


class EventSinks:
    def __init__(self, outbox_path: str | Path, mqtt: MqttSettings, webhook: WebhookSettings,
                 health: Callable[[], dict] | None = None) -> None:
        validate_mqtt(mqtt)
        validate_webhook(webhook)
        sinks = tuple(name for name, on in (("mqtt", mqtt.enabled), ("webhook", webhook.url))
                      if on)
        if not sinks:
            raise ValueError("no event sink is enabled")
        self.device_id = device_id(mqtt)
        self.outbox = Outbox(outbox_path, sinks, mqtt.outbox_max_messages)
        self._health = health or dict
        self.unsubscribe: Callable[[], None] = lambda: None  # set by whoever subscribes us
        self.mqtt = self.webhook = None
        if mqtt.enabled:
            from edge_runtime.events.mqtt import MqttPublisher  # paho only when MQTT is on

            self.mqtt = MqttPublisher(mqtt, self.outbox, health=self._status_health)
        if webhook.url:
            from edge_runtime.events.webhook import WebhookSender

            self.webhook = WebhookSender(webhook, self.outbox)

    @staticmethod
    def wanted(mqtt: MqttSettings, webhook: WebhookSettings) -> bool:
        return mqtt.enabled or bool(webhook.url)

    def _status_health(self) -> dict:
        health = dict(self._health())
        if "mqtt" in self.outbox.sinks:
            health.update(outbox_depth=self.outbox.depth("mqtt"),
                          outbox_dropped=self.outbox.dropped("mqtt"))
        return health

    def emit(self, kind: str, when: float | None = None, **fields: Any) -> str:
        """Queue one event of topic ``kind`` for every sink; returns its msg_id."""
        return self.outbox.put(kind, envelope(kind, self.device_id, when, **fields))

    def start(self) -> EventSinks:
        for sink in (self.mqtt, self.webhook):
            if sink is not None:
                sink.start()
        return self

    def stop(self) -> None:
        for sink in (self.mqtt, self.webhook):
            if sink is not None:
                sink.stop()
        self.outbox.close()

    def stats(self) -> dict[str, dict]:
        """Per sink: queued messages, age of the oldest, dropped at the bound, delivered."""
        out = {}
        for name in self.outbox.sinks:
            sender = self.mqtt if name == "mqtt" else self.webhook
            out[name] = {
                "depth": self.outbox.depth(name),
                "oldest_age_s": self.outbox.oldest_age_s(name),
                "dropped": self.outbox.dropped(name),
                "delivered": sender.delivered,
                "connected": sender.connected if name == "mqtt" else None,
            }
        return out
