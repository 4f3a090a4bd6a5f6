"""Prometheus metrics with prometheus_client: counters and histograms in seconds.

One registry per daemon (not the library's global one), so several apps in one process
(tests) never share counters. Values that are state rather than events (uptime, memory,
the live model, replay bytes) are read from /status's collector at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# inference is ~5-30 ms on a board; a stalled one reaches seconds
LATENCY_BUCKETS = (0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2,
                   0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.inspections = Counter(
            "edge_runtime_inspections", "Inspections by product and verdict",
            ["product", "verdict"], registry=self.registry)
        self.latency = Histogram(
            "edge_runtime_inference_latency_seconds",
            "Decode + inference time of one inspection", buckets=LATENCY_BUCKETS,
            registry=self.registry)

    def observe_inspection(self, product: str, verdict: str, seconds: float) -> None:
        self.inspections.labels(product, verdict).inc()
        self.latency.observe(seconds)

    def add_state(self, status: Callable[[], dict]) -> None:
        self.registry.register(_StateCollector(status))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(self, status: Callable[[], dict]) -> None:
        self.status = status

    def collect(self):
        s = self.status()

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"edge_runtime_{name}", doc, value=value)

        yield gauge("up", "1 while the daemon serves", 1)
        yield gauge("uptime_seconds", "Seconds since the daemon started", s["uptime_seconds"])
        yield gauge("resident_memory_bytes", "RSS of the API process",
                    s["rss_mb"] * 2**20)
        worker = s.get("worker")
        if worker:
            yield gauge("worker_resident_memory_bytes", "RSS of the training worker",
                        worker["rss_mb"] * 2**20)
            yield gauge("worker_peak_resident_memory_bytes", "Peak RSS of the training worker",
                        worker["peak_rss_mb"] * 2**20)
        yield gauge("model_loaded", "1 when a model version serves",
                    int(s["model_version"] is not None))
        yield gauge("training_job_running", "1 while a training job runs",
                    int(s["job"] is not None))
        yield gauge("camera_error", "1 when the last camera frame failed",
                    int(s["camera"]["error"] is not None))
        store = s["replay_store"]
        if store:
            family = GaugeMetricFamily("edge_runtime_replay_bytes", "Replay store bytes",
                                       labels=["codec", "kind"])
            family.add_metric([store["codec"], "payload"], store["payload_bytes"])
            family.add_metric([store["codec"], "metadata"], store["metadata_bytes"])
            yield family
            if store["budget_bytes"] is not None:
                yield gauge("replay_budget_bytes", "Replay store byte budget",
                            store["budget_bytes"])
            samples = GaugeMetricFamily("edge_runtime_replay_samples",
                                        "Replay samples kept per product", labels=["product"])
            for product, kept in store["products"].items():
                samples.add_metric([product], kept["samples"])
            yield samples
        heads = s.get("heads")
        if heads:
            yield gauge("head_bytes", "Bytes of the memory-bank heads serving products",
                        heads["bytes"])

    def describe(self):
        return []
