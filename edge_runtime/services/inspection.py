"""Inspections: image -> map, score, verdict (by the inferencer); records, recent maps in
RAM, latency statistics, metrics and events."""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from dataclasses import asdict, dataclass

import numpy as np

from edge_runtime.inference.thresholds import Thresholds
from edge_runtime.services import events
from edge_runtime.services.errors import GoneError, found
from edge_runtime.services.health import Health
from edge_runtime.services.metrics import Metrics
from edge_runtime.services.models import ModelRegistry
from edge_runtime.services.products import ProductService
from edge_runtime.storage import repositories as repo
from edge_runtime.storage.db import Database, StorageFullError

log = logging.getLogger("edge_runtime.inspection")
# ids of inspections whose record could not be written (disk full): far above any row id,
# so their maps stay reachable in RAM and never collide with a later record
UNRECORDED_BASE = 2**62


@dataclass
class InspectionRecord:
    """One inspection as the API reports it (the row plus what decided it)."""

    id: int
    product_id: int
    product: str
    score: float
    verdict: str
    threshold: float
    latency_ms: float
    model_version: str


@dataclass
class RecentMap:
    rgb: np.ndarray  # uint8 (S, S, 3)
    anomaly_map: np.ndarray  # float16 (S, S)
    thresholds: Thresholds


class InspectionService:
    PRUNE_EVERY = 1000

    def __init__(self, db: Database, registry: ModelRegistry, products: ProductService,
                 metrics: Metrics, bus: events.EventBus, keep_recent_maps: int,
                 keep_records: int = 100_000, health: Health | None = None) -> None:
        self.db, self.registry, self.products = db, registry, products
        self.health = health
        self.dropped_records = 0
        self._unrecorded = itertools.count(UNRECORDED_BASE)
        self.metrics, self.bus = metrics, bus
        self.keep_records = keep_records
        self._lock = threading.Lock()
        self._latencies: collections.deque[float] = collections.deque(maxlen=2000)
        self._recent: collections.OrderedDict[int, RecentMap] = collections.OrderedDict()
        self._keep = keep_recent_maps

    def inspect(self, product: dict, data: bytes, source: str = "upload") -> InspectionRecord:
        thresholds = self.products.thresholds(product)  # 409 before decoding anything
        live = self.registry.live  # one reference for the whole request: swaps can't break it
        started = time.perf_counter()
        rgb = live.inferencer.load(data)
        prediction = live.inferencer.predict(rgb, thresholds)
        seconds = time.perf_counter() - started
        inspection_id = self._record(product["id"], prediction.score, prediction.label,
                                     thresholds.image, seconds * 1000, live.version, source)
        self.metrics.observe_inspection(product["name"], prediction.label, seconds)
        with self._lock:
            self._latencies.append(seconds * 1000)
            if self._keep:
                self._recent[inspection_id] = RecentMap(
                    rgb, prediction.anomaly_map.astype(np.float16), thresholds)
                while len(self._recent) > self._keep:
                    self._recent.popitem(last=False)
        record = InspectionRecord(inspection_id, product["id"], product["name"],
                                  prediction.score, prediction.label, thresholds.image,
                                  round(seconds * 1000, 3), live.version)
        self.bus.publish(events.INSPECTION, asdict(record) | {"source": source})
        return record

    def _record(self, product_id: int, score: float, label: str, threshold: float,
                latency_ms: float, version: str, source: str) -> int:
        """The inspection's row id. On a full disk the verdict still goes out: the record is
        counted and dropped, and the map stays in RAM under an id no row will ever have."""
        try:
            with self.db.connect(durable=False) as conn:
                inspection_id = repo.add_inspection(conn, product_id, score, label, threshold,
                                                    latency_ms, version, source)
                if inspection_id % self.PRUNE_EVERY == 0:
                    repo.prune_inspections(conn, self.keep_records)
        except StorageFullError as exc:
            self.dropped_records += 1
            if self.dropped_records == 1 or self.dropped_records % 1000 == 0:
                log.error("%s: %d inspection record(s) dropped", exc, self.dropped_records)
            if self.health:
                self.health.set("records", f"disk full: {self.dropped_records} inspection "
                                           f"record(s) dropped; verdicts keep flowing")
            return next(self._unrecorded)
        if self.dropped_records and self.health:
            self.health.clear("records")  # space came back; the count stays in /status
        return inspection_id

    def get(self, inspection_id: int) -> dict:
        with self.db.connect(write=False) as conn:
            return found(repo.get_inspection(conn, inspection_id),
                         f"no inspection with id {inspection_id}")

    def recent_map(self, inspection_id: int) -> RecentMap:
        """The map of a recent inspection; 404 if it never existed, 410 if no longer kept."""
        with self._lock:
            recent = self._recent.get(inspection_id)
        if recent is None:
            self.get(inspection_id)
            raise GoneError(f"the map of inspection {inspection_id} is no longer kept "
                            f"(the last {self._keep} are kept in memory)")
        return recent

    def latency_stats(self) -> dict:
        with self._lock:
            values = np.array(self._latencies)
        if not len(values):
            return {"count": 0}
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        return {"count": int(len(values)), "p50_ms": round(float(p50), 3),
                "p95_ms": round(float(p95), 3), "p99_ms": round(float(p99), 3)}
