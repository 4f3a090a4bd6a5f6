"""Inspections: image -> map, score, verdict (by the inferencer); records, recent maps in
RAM, latency statistics, metrics and events."""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import asdict, dataclass

import numpy as np

from edge_runtime.inference.inferencer import AnomalyInferencer
from edge_runtime.inference.thresholds import Thresholds
from edge_runtime.services import events
from edge_runtime.services.errors import GoneError, found
from edge_runtime.services.heads import HeadService
from edge_runtime.services.metrics import Metrics
from edge_runtime.services.models import ModelRegistry
from edge_runtime.services.products import ProductService
from edge_runtime.storage import repositories as repo
from edge_runtime.storage.db import Database


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
    head: str  # who answered: "student", or the memory-bank head's kind before training


STUDENT = "student"


@dataclass(frozen=True)
class Answerer:
    """What decides one inspection: a graph, its thresholds, and its name."""

    inferencer: AnomalyInferencer
    thresholds: Thresholds
    version: str
    head: str


@dataclass
class RecentMap:
    rgb: np.ndarray  # uint8 (S, S, 3)
    anomaly_map: np.ndarray  # float16 (S, S)
    thresholds: Thresholds


class InspectionService:
    PRUNE_EVERY = 1000

    def __init__(self, db: Database, registry: ModelRegistry, products: ProductService,
                 metrics: Metrics, bus: events.EventBus, keep_recent_maps: int,
                 keep_records: int = 100_000, heads: HeadService | None = None) -> None:
        self.db, self.registry, self.products = db, registry, products
        self.heads = heads
        self.metrics, self.bus = metrics, bus
        self.keep_records = keep_records
        self._lock = threading.Lock()
        self._latencies: collections.deque[float] = collections.deque(maxlen=2000)
        self._recent: collections.OrderedDict[int, RecentMap] = collections.OrderedDict()
        self._keep = keep_recent_maps

    def answerer(self, product: dict) -> Answerer:
        """The student once the live model knows the product; until then the product's
        memory-bank head; NotTrainedError (409) when neither exists yet."""
        live = self.registry.live  # one reference for the whole request: swaps can't break it
        calibrated = live.thresholds(product["name"]) if live else None
        overrides = product["image_threshold_override"], product["pixel_threshold_override"]
        if live is not None and calibrated is not None:
            return Answerer(live.inferencer, calibrated.overridden(*overrides), live.version,
                            STUDENT)
        head = self.heads.inferencer(product["id"]) if self.heads else None
        if head is None or head.head.thresholds is None:
            self.products.thresholds(product)  # raises NotTrainedError, the usual message
        assert head is not None and head.head.thresholds is not None
        return Answerer(head, head.head.thresholds.overridden(*overrides),
                        f"head-{head.head.kind}", head.head.kind)

    def inspect(self, product: dict, data: bytes, source: str = "upload") -> InspectionRecord:
        answerer = self.answerer(product)  # 409 before decoding anything
        thresholds = answerer.thresholds
        started = time.perf_counter()
        rgb = answerer.inferencer.load(data)
        prediction = answerer.inferencer.predict(rgb, thresholds)
        seconds = time.perf_counter() - started
        with self.db.connect(durable=False) as conn:
            inspection_id = repo.add_inspection(conn, product["id"], prediction.score,
                                                prediction.label, thresholds.image,
                                                seconds * 1000, answerer.version, source)
            if inspection_id % self.PRUNE_EVERY == 0:
                repo.prune_inspections(conn, self.keep_records)
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
                                  round(seconds * 1000, 3), answerer.version, answerer.head)
        self.bus.publish(events.INSPECTION, asdict(record) | {"source": source})
        return record

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
