"""Prometheus view of the event sinks, read at scrape time (nothing to keep in sync)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edge_runtime.events.sinks import EventSinks


class EventSinksCollector(Collector):
    def __init__(self, sinks: EventSinks) -> None:
        self.sinks = sinks

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("edge_runtime_outbox_messages",
                                  "events waiting in the on-disk outbox", labels=["sink"])
        age = GaugeMetricFamily("edge_runtime_outbox_oldest_age_seconds",
                                "how long the oldest undelivered event has waited",
                                labels=["sink"])
        dropped = CounterMetricFamily("edge_runtime_outbox_dropped",
                                      "events dropped because the outbox was full (lifetime)",
                                      labels=["sink"])
        delivered = CounterMetricFamily("edge_runtime_events_delivered",
                                        "events acknowledged by the sink since start",
                                        labels=["sink"])
        connected = GaugeMetricFamily("edge_runtime_mqtt_connected",
                                      "1 while the MQTT broker connection is up")
        for sink, stats in self.sinks.stats().items():
            depth.add_metric([sink], stats["depth"])
            age.add_metric([sink], stats["oldest_age_s"])
            dropped.add_metric([sink], stats["dropped"])
            delivered.add_metric([sink], stats["delivered"])
            if stats["connected"] is not None:
                connected.add_metric([], int(stats["connected"]))
        yield from (depth, age, dropped, delivered)
        if connected.samples:
            yield connected
