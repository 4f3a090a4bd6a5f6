"""The MQTT phase of service_load.py: the same daemon data restarted with MQTT off and on,
in interleaved rounds, against a real Mosquitto on loopback. Reports the inspection p50 of
both, the verdict-to-subscriber delivery time, and how many verdicts never arrived."""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import REPO

from edge_runtime.daemon_process import Daemon
from edge_runtime.events.config import MqttSettings, WebhookSettings
from edge_runtime.events.sinks import EventSinks

sys.path.insert(0, str(REPO / "tests"))
from mosquitto import Mosquitto, Subscriber  # noqa: E402  (the tests' broker harness)


def _round(data_dir: Path, env: dict, hammer: Callable, jpegs: list[bytes], count: int,
           clients: int, label: str) -> tuple[dict, int]:
    """(the measured run, how many inspections succeeded including the warm-up)."""
    daemon = Daemon(data_dir, env=env)
    daemon.start()
    try:
        warm = hammer(daemon, jpegs, 20, clients, f"{label} warm-up")
        result = hammer(daemon, jpegs, count, clients, label)
    finally:
        daemon.stop()
    return result, warm["count"] - warm["errors"] + result["count"] - result["errors"]


def enqueue_cost_us(broker: Mosquitto, count: int = 2000) -> tuple[float, float]:
    """What a request pays for its verdict event: one outbox append (p50, p99 in us)."""
    settings = MqttSettings(enabled=True, url=broker.url, device_id="bench-enqueue")
    sinks = EventSinks(Path(tempfile.mkdtemp()) / "outbox.db", settings, WebhookSettings())
    sinks.start()
    costs = []
    try:
        for i in range(count):
            started = time.perf_counter()
            sinks.emit("verdict", inspection_id=i, product="bottle", score=0.01, threshold=0.02,
                       verdict="pass", latency_ms=6.0, model_version="v000001",
                       source="upload", trigger_seq=None)
            costs.append((time.perf_counter() - started) * 1e6)
    finally:
        sinks.stop()
    return float(np.percentile(costs, 50)), float(np.percentile(costs, 99))


def run_mqtt_phase(data_dir: Path, jpegs: list[bytes], count: int, clients: int,
                   hammer: Callable, rounds: int = 3) -> dict:
    broker = Mosquitto(Path(tempfile.mkdtemp()) / "broker")
    broker.start()
    sub = Subscriber(broker, "edge-runtime/bench/verdict", client_id="bench")
    on = {"EDGE_RUNTIME_MQTT_ENABLED": "true", "EDGE_RUNTIME_MQTT_URL": broker.url,
          "EDGE_RUNTIME_MQTT_DEVICE_ID": "bench"}
    per_round = count
    off_p50, on_p50, sent = [], [], 0
    try:
        for r in range(rounds):
            off, _ = _round(data_dir, {}, hammer, jpegs, per_round, clients,
                            f"mqtt off {r + 1}/{rounds}")
            off_p50.append(off["p50_ms"])
            result, ok = _round(data_dir, on, hammer, jpegs, per_round, clients,
                                f"mqtt on {r + 1}/{rounds}")
            on_p50.append(result["p50_ms"])
            sent += ok
        received = sub.wait_for(sent, timeout=30)
        delays = [(sub.received_at[m["msg_id"]] - m["time"]) * 1000 for m in received]
        enqueue_p50, enqueue_p99 = enqueue_cost_us(broker)
    finally:
        sub.close()
        broker.stop()
    return {"p50_off_ms": float(np.median(off_p50)), "p50_on_ms": float(np.median(on_p50)),
            "rounds_off_ms": off_p50, "rounds_on_ms": on_p50,
            "delivery_p50_ms": float(np.percentile(delays, 50)) if delays else float("nan"),
            "delivery_p99_ms": float(np.percentile(delays, 99)) if delays else float("nan"),
            "sent": sent, "received": len(received), "lost": sent - len(received),
            "enqueue_p50_us": enqueue_p50, "enqueue_p99_us": enqueue_p99}


def report(mqtt: dict) -> dict:
    """Print the phase's lines; return its keys for the benchmark's JSON line."""
    print(f"MQTT on vs off (interleaved daemon restarts): p50 {mqtt['p50_on_ms']:.2f} ms vs "
          f"{mqtt['p50_off_ms']:.2f} ms (target: within 10%; rounds on "
          f"{[round(v, 1) for v in mqtt['rounds_on_ms']]}, off "
          f"{[round(v, 1) for v in mqtt['rounds_off_ms']]}); verdict to subscriber p50 "
          f"{mqtt['delivery_p50_ms']:.2f} ms, p99 {mqtt['delivery_p99_ms']:.2f} ms; "
          f"{mqtt['received']}/{mqtt['sent']} verdicts received, lost {mqtt['lost']}; "
          f"outbox append on the request thread p50 {mqtt['enqueue_p50_us']:.0f} us, "
          f"p99 {mqtt['enqueue_p99_us']:.0f} us")
    return {"mqtt_p50_ms": round(mqtt["p50_on_ms"], 2),
            "mqtt_off_p50_ms": round(mqtt["p50_off_ms"], 2),
            "mqtt_delivery_p50_ms": round(mqtt["delivery_p50_ms"], 2),
            "mqtt_delivery_p99_ms": round(mqtt["delivery_p99_ms"], 2),
            "mqtt_lost": mqtt["lost"],
            "mqtt_enqueue_p50_us": round(mqtt["enqueue_p50_us"], 1),
            "mqtt_enqueue_p99_us": round(mqtt["enqueue_p99_us"], 1)}
