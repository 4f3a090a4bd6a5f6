"""Fleet metrics read at scrape time: training jobs, the serving model, the serial line,
and the process (CPU, memory, file descriptors) through prometheus_client's collectors."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from edge_runtime.services.line import LineService
from edge_runtime.services.models import ModelRegistry
from edge_runtime.storage import repositories as repo
from edge_runtime.storage.db import Database

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
# bridge counters exported as edge_runtime_serial_<name>_total
SERIAL_COUNTERS = ("triggers", "verdicts", "deadline_missed", "late_answers", "handler_errors",
                   "verdicts_lost", "frames_rx", "frames_tx", "bytes_rx", "heartbeats_rx",
                   "device_errors", "bad_bodies")


class FleetCollector(Collector):
    def __init__(self, db: Database, registry: ModelRegistry, line: LineService) -> None:
        self.db, self.registry, self.line = db, registry, line

    def collect(self) -> Iterator:
        yield from self._jobs()
        yield from self._model()
        yield from self._serial()

    def _jobs(self) -> Iterator:
        with self.db.connect(write=False) as conn:
            counts = repo.count_jobs_by_status(conn)
        family = CounterMetricFamily("edge_runtime_training_jobs",
                                     "Training jobs ever created, by current status",
                                     labels=["status"])
        for status in JOB_STATES:
            family.add_metric([status], counts.get(status, 0))
        yield family

    def _model(self) -> Iterator:
        live = self.registry.live
        info = InfoMetricFamily("edge_runtime_model", "The model version that serves",
                                labels=["version", "products"])
        if live is not None:
            info.add_metric([live.version, ",".join(sorted(live.manifest.thresholds))], {})
        yield info
        yield GaugeMetricFamily("edge_runtime_model_versions", "Model versions on disk",
                                value=len(self.registry.versions()))

    def _serial(self) -> Iterator:
        status = self.line.status()
        if status is None:
            return
        counters = status["counters"]
        for name in SERIAL_COUNTERS:
            yield CounterMetricFamily(f"edge_runtime_serial_{name}",
                                      f"serial bridge: {name.replace('_', ' ')}",
                                      value=counters.get(name, 0))
        for name in ("reconnects", "corrupt_frames", "overflows"):
            yield CounterMetricFamily(f"edge_runtime_serial_{name}",
                                      f"serial link: {name.replace('_', ' ')}",
                                      value=status[name])
        up = GaugeMetricFamily("edge_runtime_serial_link_up",
                               "1 while the port is open and the controller sends heartbeats")
        up.add_metric([], int(status["state"] == "up"))
        yield up
        latency = status["trigger_to_verdict"]
        if latency:
            family = GaugeMetricFamily("edge_runtime_serial_trigger_to_verdict_seconds",
                                       "Trigger to verdict time, recent", labels=["quantile"])
            family.add_metric(["0.5"], latency["p50_ms"] / 1000)
            family.add_metric(["0.99"], latency["p99_ms"] / 1000)
            yield family

    def describe(self) -> list:
        return []  # values change with state; no registration-time collect


def register_fleet_metrics(registry: CollectorRegistry, db: Database, models: ModelRegistry,
                           line: LineService) -> None:
    registry.register(FleetCollector(db, models, line))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
