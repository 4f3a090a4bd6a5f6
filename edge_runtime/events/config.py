"""Settings of the event sinks: the `[mqtt]` and `[webhook]` sections of config.toml."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit


class EventConfigError(ValueError):
    """A sink cannot start with this configuration; the message names the key."""


@dataclass(frozen=True)
class MqttSettings:
    enabled: bool = False
    url: str = "mqtt://127.0.0.1:1883"  # mqtt://host[:1883] or mqtts://host[:8883]
    username: str = ""
    password: str = ""
    client_id: str = ""  # empty: edge-runtime-<device_id>
    device_id: str = ""  # empty: the host name
    topic_prefix: str = "edge-runtime"  # topics are <prefix>/<device_id>/<kind>
    qos: int = 1
    ca_file: str = ""  # mqtts: CA bundle of the broker (empty: the system CAs)
    cert_file: str = ""  # mqtts: client certificate, for brokers that require one
    key_file: str = ""
    keepalive_s: int = 30
    status_interval_s: float = 60.0  # refresh of the retained device status
    outbox_max_messages: int = 100_000  # per sink; past it the oldest are dropped (counted)
    commands: bool = False  # obey <prefix>/<device_id>/command (needs api.token)


@dataclass(frozen=True)
class WebhookSettings:
    url: str = ""  # empty: no webhook; http(s)://... receives every event as a JSON POST
    token: str = ""  # sent as "Authorization: Bearer <token>" when set
    timeout_s: float = 5.0


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    tls: bool


def parse_broker_url(url: str) -> Broker:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise EventConfigError(f"mqtt.url must look like mqtt://host:1883 or mqtts://host:8883, "
                               f"got {url!r}")
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as exc:
        raise EventConfigError(f"mqtt.url has an invalid port: {url!r}") from exc
    return Broker(parts.hostname, port, tls)


def device_id(settings: MqttSettings) -> str:
    return settings.device_id or socket.gethostname()


def validate_mqtt(settings: MqttSettings) -> None:
    """Raise EventConfigError for a configuration that cannot work (checked at start-up)."""
    if not settings.enabled:
        return
    broker = parse_broker_url(settings.url)
    if settings.qos not in (0, 1, 2):
        raise EventConfigError("mqtt.qos must be 0, 1 or 2 (1 or 2 for nothing lost)")
    if any(c in settings.topic_prefix + device_id(settings) for c in "#+"):
        raise EventConfigError("mqtt.topic_prefix and mqtt.device_id must not contain # or +")
    if (settings.cert_file or settings.ca_file or settings.key_file) and not broker.tls:
        raise EventConfigError("mqtt.ca_file/cert_file/key_file need an mqtts:// url")
    if bool(settings.cert_file) != bool(settings.key_file):
        raise EventConfigError("mqtt.cert_file and mqtt.key_file go together")
    if settings.password and not settings.username:
        raise EventConfigError("mqtt.password is set without mqtt.username")
    if settings.outbox_max_messages < 1:
        raise EventConfigError("mqtt.outbox_max_messages must be >= 1")
    if settings.keepalive_s < 5:
        raise EventConfigError("mqtt.keepalive_s must be >= 5")


def validate_webhook(settings: WebhookSettings) -> None:
    if settings.url and urlsplit(settings.url).scheme not in ("http", "https"):
        raise EventConfigError(f"webhook.url must be http(s)://..., got {settings.url!r}")
    if settings.timeout_s <= 0:
        raise EventConfigError("webhook.timeout_s must be positive")
