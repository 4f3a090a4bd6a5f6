"""Outbox, MQTT publisher and webhook against real components: a SQLite file, a Mosquitto
broker started and stopped here, a publisher process killed with SIGKILL, an HTTP server."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema_rs
import pytest
from mosquitto import Mosquitto, Subscriber, make_pki

from edge_runtime.daemon_process import free_port
from edge_runtime.events.config import (
    EventConfigError,
    MqttSettings,
    WebhookSettings,
    validate_mqtt,
)
from edge_runtime.events.outbox import Outbox
from edge_runtime.events.schemas import SCHEMAS
from edge_runtime.events.sinks import EventSinks

REPO = Path(__file__).resolve().parents[1]
NO_WEBHOOK = WebhookSettings()


def _verdict(sinks: EventSinks, i: int) -> str:
    return sinks.emit("verdict", inspection_id=i, product="bottle", score=0.01 * i,
                      threshold=0.5, verdict="pass", latency_ms=12.5, model_version="v1",
                      source="serial", trigger_seq=1000 + i)


def _assert_valid(message: dict) -> None:
    body = {k: v for k, v in message.items() if not k.startswith("_")}
    jsonschema_rs.validate(SCHEMAS[body["schema"]], body)


def test_outbox_bound_drops_oldest_counts_and_survives_reopen(tmp_path):
    box = Outbox(tmp_path / "outbox.db", ("mqtt", "webhook"), max_messages=5)
    ids = [box.put("verdict", {"n": i}) for i in range(8)]
    assert box.depth("mqtt") == 5 and box.dropped("mqtt") == 3
    kept = box.peek("mqtt")
    assert [json.loads(m.payload)["n"] for m in kept] == [3, 4, 5, 6, 7]
    assert [m.msg_id for m in kept] == ids[3:]
    box.ack("mqtt", [m.seq for m in kept[:2]])  # one sink's ack leaves the other's copy
    assert box.depth("mqtt") == 3 and box.depth("webhook") == 5
    assert box.oldest_age_s("mqtt") >= 0
    box.close()

    box = Outbox(tmp_path / "outbox.db", ("mqtt", "webhook"), max_messages=5)
    assert box.depth("mqtt") == 3 and box.dropped("mqtt") == 3 and box.dropped("webhook") == 3
    assert [json.loads(m.payload)["n"] for m in box.peek("mqtt")] == [5, 6, 7]
    box.put("verdict", {"n": 8})  # below the bound for mqtt: nothing more dropped there
    assert box.dropped("mqtt") == 3 and box.dropped("webhook") == 4
    box.close()


def test_config_is_checked():
    validate_mqtt(MqttSettings())  # off: nothing to check
    on = MqttSettings(enabled=True)
    validate_mqtt(on)
    for bad, words in [(replace(on, url="http://x"), "mqtt.url"),
                       (replace(on, qos=3), "mqtt.qos"),
                       (replace(on, ca_file="/ca.crt"), "mqtts"),
                       (replace(on, url="mqtts://h", cert_file="c"), "key_file"),
                       (replace(on, device_id="a/+"), "must not contain")]:
        with pytest.raises(EventConfigError, match=words):
            validate_mqtt(bad)


PUBLISHER = textwrap.dedent("""
    import sys, time
    from edge_runtime.events.config import MqttSettings, WebhookSettings
    from edge_runtime.events.sinks import EventSinks
    url, outbox, first, last = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    sinks = EventSinks(outbox, MqttSettings(enabled=True, url=url, device_id="line-3"),
                       WebhookSettings()).start()
    for i in range(first, last):
        sinks.emit("verdict", inspection_id=i, product="bottle", score=0.5, threshold=0.4,
                   verdict="reject", latency_ms=9.0, model_version="v2", source="upload",
                   trigger_seq=None)
    print("emitted", flush=True)
    time.sleep(600)
""")


def test_nothing_lost_broker_down_publisher_killed_and_restarted(tmp_path):
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    sub = Subscriber(broker, "edge-runtime/line-3/#")
    settings = MqttSettings(enabled=True, url=broker.url, device_id="line-3")
    outbox = tmp_path / "outbox.db"
    try:
        sinks = EventSinks(outbox, settings, NO_WEBHOOK).start()
        for i in range(60):
            _verdict(sinks, i)
        assert len(sub.wait_for(60, kind="verdict")) == 60
        broker.stop()  # the broker goes away; events keep coming and wait on disk
        for i in range(60, 120):
            _verdict(sinks, i)
        time.sleep(0.3)
        assert sinks.stats()["mqtt"]["depth"] == 60 and not sinks.mqtt.connected
        sinks.stop()  # the daemon restarts while the broker is still down

        # a second process queues more, and is killed with SIGKILL before the broker is back
        process = subprocess.Popen([sys.executable, "-c", PUBLISHER, broker.url, str(outbox),
                                    "120", "160"], stdout=subprocess.PIPE, cwd=REPO)
        assert process.stdout.readline().strip() == b"emitted"
        process.send_signal(signal.SIGKILL)
        process.wait()

        sinks = EventSinks(outbox, settings, NO_WEBHOOK).start()  # third life: full outbox
        assert sinks.stats()["mqtt"]["depth"] == 100
        broker.start()
        for i in range(160, 200):
            _verdict(sinks, i)
        verdicts = sub.wait_for(200, timeout=60, kind="verdict")
        assert [m["inspection_id"] for m in verdicts] == list(range(200))  # none lost, in order
        for message in sub.messages:
            _assert_valid(message)
        deadline = time.monotonic() + 10
        while sinks.stats()["mqtt"]["depth"] and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = sinks.stats()["mqtt"]
        assert stats["depth"] == 0 and stats["dropped"] == 0 and stats["oldest_age_s"] == 0
        sinks.stop()
    finally:
        sub.close()
        broker.stop()
    assert len(sub.messages) >= len(sub.unique)  # duplicates (if any) were only retries


def test_status_is_retained_and_last_will_says_offline(tmp_path):
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    settings = MqttSettings(enabled=True, url=broker.url, device_id="line-7")
    process = subprocess.Popen([sys.executable, "-c", PUBLISHER, broker.url,
                                str(tmp_path / "outbox.db"), "0", "1"],
                               stdout=subprocess.PIPE, cwd=REPO)
    try:
        assert process.stdout.readline().strip() == b"emitted"
        time.sleep(0.5)
        late = Subscriber(broker, "edge-runtime/line-3/status", client_id="late")
        status = late.wait_for(1)
        assert status[0]["state"] == "online" and status[0]["_retain"]
        process.send_signal(signal.SIGKILL)  # no DISCONNECT: the broker sends the will
        process.wait()
        offline = late.wait_for(2, timeout=10)
        assert offline[-1]["state"] == "offline"
        late.close()
        sinks = EventSinks(tmp_path / "outbox2.db", settings, NO_WEBHOOK).start()
        time.sleep(0.3)
        sinks.stop()  # a clean stop publishes "offline" itself
        last = Subscriber(broker, "edge-runtime/line-7/status", client_id="last")
        assert last.wait_for(1)[0]["state"] == "offline"
        last.close()
    finally:
        if process.poll() is None:
            process.kill()
        broker.stop()


def test_tls_client_certificate_and_password(tmp_path):
    pki = make_pki(tmp_path / "pki")
    broker = Mosquitto(tmp_path / "broker", users={"line": "s3cret-pass", "reader": "r3ad"},
                       pki=pki)
    broker.start()
    sub = Subscriber(broker, "plant/#", username="reader", password="r3ad")
    tls = MqttSettings(enabled=True, url=f"mqtts://127.0.0.1:{broker.tls_port}",
                       username="line", password="wrong", device_id="line-9",
                       topic_prefix="plant", ca_file=str(pki.ca),
                       cert_file=str(pki.client_cert), key_file=str(pki.client_key))
    outbox = tmp_path / "outbox.db"
    try:
        sinks = EventSinks(outbox, tls, NO_WEBHOOK).start()
        for i in range(5):
            _verdict(sinks, i)
        time.sleep(1.5)
        assert not sinks.mqtt.connected and sinks.stats()["mqtt"]["depth"] == 5
        assert sub.wait_for(1, timeout=0.5) == []  # refused: nothing got through
        sinks.stop()
        sinks = EventSinks(outbox, replace(tls, password="s3cret-pass"), NO_WEBHOOK).start()
        received = sub.wait_for(5, kind="verdict")
        assert [m["inspection_id"] for m in received] == [0, 1, 2, 3, 4]
        assert all(m["_topic"].startswith("plant/line-9/") for m in received)
        sinks.stop()
    finally:
        sub.close()
        broker.stop()


class _Receiver(BaseHTTPRequestHandler):
    fail_first = 0
    bodies: list[dict] = []
    headers_seen: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        cls = type(self)
        if cls.fail_first > 0:
            cls.fail_first -= 1
            self.send_response(503)
        else:
            cls.bodies.append(body)
            cls.headers_seen.append(dict(self.headers))
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_webhook_retries_in_order_until_the_receiver_takes_them(tmp_path):
    port = free_port()
    settings = WebhookSettings(url=f"http://127.0.0.1:{port}/events", token="t0ken")
    sinks = EventSinks(tmp_path / "outbox.db", MqttSettings(device_id="line-1"), settings)
    sinks.webhook.min_backoff_s, sinks.webhook.max_backoff_s = 0.05, 0.2
    sinks.start()
    for i in range(10):
        _verdict(sinks, i)
    time.sleep(0.5)  # nobody listens yet: connection refused, retried
    assert sinks.stats()["webhook"]["depth"] == 10 and sinks.webhook.failures >= 2
    _Receiver.fail_first, _Receiver.bodies, _Receiver.headers_seen = 3, [], []
    server = ThreadingHTTPServer(("127.0.0.1", port), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        deadline = time.monotonic() + 15
        while len(_Receiver.bodies) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [b["inspection_id"] for b in _Receiver.bodies] == list(range(10))
        assert all(h["Authorization"] == "Bearer t0ken" for h in _Receiver.headers_seen)
        assert [h["X-Message-Id"] for h in _Receiver.headers_seen] == [
            b["msg_id"] for b in _Receiver.bodies]
        for body in _Receiver.bodies:
            _assert_valid(body)
        assert sinks.stats()["webhook"]["depth"] == 0
    finally:
        sinks.stop()
        server.shutdown()


def test_outbox_metrics_parse_with_prometheus_client(tmp_path):
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from edge_runtime.events.metrics import EventSinksCollector

    mqtt = MqttSettings(enabled=True, url=f"mqtt://127.0.0.1:{free_port()}",  # nobody there
                        device_id="d", outbox_max_messages=3)
    sinks = EventSinks(tmp_path / "outbox.db", mqtt, NO_WEBHOOK).start()
    try:
        for i in range(5):
            _verdict(sinks, i)
        time.sleep(0.05)
        registry = CollectorRegistry()
        registry.register(EventSinksCollector(sinks))
        text = generate_latest(registry).decode()
    finally:
        sinks.stop()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("edge_runtime_outbox_messages", (("sink", "mqtt"),))] == 3
    assert samples[("edge_runtime_outbox_dropped_total", (("sink", "mqtt"),))] == 2
    assert samples[("edge_runtime_outbox_oldest_age_seconds", (("sink", "mqtt"),))] >= 0.05
    assert samples[("edge_runtime_mqtt_connected", ())] == 0


def test_bus_events_become_versioned_payloads_job_progress_throttled(tmp_path):
    from types import SimpleNamespace

    from edge_runtime.events.daemon import BusToOutbox
    from edge_runtime.services import events
    from edge_runtime.services.errors import NotFoundError

    def product(product_id: int) -> dict:
        if product_id != 1:
            raise NotFoundError("gone")
        return {"id": 1, "name": "bottle"}

    runtime = SimpleNamespace(models=SimpleNamespace(live=SimpleNamespace(version="v000001")),
                              products=SimpleNamespace(get=product))
    mqtt = MqttSettings(enabled=True, url=f"mqtt://127.0.0.1:{free_port()}", device_id="d")
    sinks = EventSinks(tmp_path / "outbox.db", mqtt, NO_WEBHOOK)  # not started: rows stay
    bus = events.EventBus()
    bus.subscribe(BusToOutbox(sinks, runtime))
    job = {"id": 7, "product_id": 1, "status": "queued", "phase": "", "epoch": 0, "epochs": 3,
           "step": 0, "steps": 0, "loss": None, "eta_seconds": None, "version": None,
           "error": None, "pid": 123}
    bus.publish(events.JOB, job)
    for step in range(1, 20):  # 19 progress updates within a second: one event
        bus.publish(events.JOB, job | {"status": "running", "phase": "training",
                                       "step": step, "steps": 20, "loss": 0.5})
    bus.publish(events.JOB, job | {"status": "succeeded", "phase": "done", "version": "v000007"})
    bus.publish(events.JOB, job | {"id": 8, "product_id": 99, "status": "failed",
                                   "error": "boom"})
    bus.publish(events.MODEL, {"version": "v000007", "job_id": 7, "products": ["bottle"]})
    bus.publish(events.INSPECTION, {"id": 5, "product_id": 1, "product": "bottle", "score": 0.1,
                                    "verdict": "pass", "threshold": 0.2, "latency_ms": 5.0,
                                    "model_version": "v000007", "source": "upload"})
    messages = [json.loads(m.payload) for m in sinks.outbox.peek("mqtt")]
    sinks.stop()
    kinds = [(m["schema"], m.get("status") or m.get("event") or m.get("verdict"))
             for m in messages]
    assert kinds == [("job", "queued"), ("job", "running"), ("job", "succeeded"),
                     ("job", "failed"), ("model", "promoted"), ("verdict", "pass")]
    for message in messages:
        _assert_valid(message)
    assert messages[1]["product"] == "bottle" and messages[1]["step"] == 1
    assert messages[2]["model_version"] == "v000007" and messages[3]["product"] is None
    assert (messages[4]["previous_version"], messages[4]["origin"]) == ("v000001", "training")
    assert messages[5]["trigger_seq"] is None and "pid" not in messages[1]
