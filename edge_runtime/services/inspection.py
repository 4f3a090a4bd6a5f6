"""Inspections: image -> map, score, verdict; latency statistics; recent maps in RAM."""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass

import numpy as np

from edge_runtime import repositories as repo
from edge_runtime.db import Database
from edge_runtime.preprocess import load_rgb, normalise
from edge_runtime.services.models import ModelRegistry


class NotTrainedError(RuntimeError):
    """The product has no trained model yet (HTTP 409)."""


@dataclass
class InspectionResult:
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
    pixel_threshold: float


class InspectionService:
    PRUNE_EVERY = 1000

    def __init__(self, db: Database, registry: ModelRegistry, keep_recent_maps: int,
                 keep_records: int = 100_000) -> None:
        self.db, self.registry = db, registry
        self.keep_records = keep_records
        self._lock = threading.Lock()
        self._latencies: collections.deque[float] = collections.deque(maxlen=2000)
        self._recent: collections.OrderedDict[int, RecentMap] = collections.OrderedDict()
        self._keep = keep_recent_maps
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()

    def thresholds(self, product: dict) -> dict:
        live = self.registry.live
        trained = live.thresholds(product["name"]) if live else None
        if trained is None:
            raise NotTrainedError(f"product {product['name']!r} has no trained model yet; "
                                  f"add captures and POST /products/{product['id']}/train")
        return {
            "image": product["image_threshold_override"] or trained["image"],
            "pixel": product["pixel_threshold_override"] or trained["pixel"],
        }

    def inspect(self, product: dict, data: bytes, source: str = "upload") -> InspectionResult:
        thresholds = self.thresholds(product)
        live = self.registry.live  # one reference for the whole request: swaps can't break it
        started = time.perf_counter()
        rgb = load_rgb(data, live.inferencer.image_size)
        amap, score = live.inferencer.forward(normalise(rgb)[None])
        latency_ms = (time.perf_counter() - started) * 1000
        score = float(score[0])
        verdict = "reject" if score > thresholds["image"] else "pass"
        with self.db.connect(durable=False) as conn:
            inspection_id = repo.add_inspection(conn, product["id"], score, verdict,
                                                thresholds["image"], latency_ms, live.version,
                                                source)
            if inspection_id % self.PRUNE_EVERY == 0:
                repo.prune_inspections(conn, self.keep_records)
        with self._lock:
            self._latencies.append(latency_ms)
            self.counts[(product["name"], verdict)] += 1
            if self._keep:
                self._recent[inspection_id] = RecentMap(rgb, amap[0, 0].astype(np.float16),
                                                        thresholds["pixel"])
                while len(self._recent) > self._keep:
                    self._recent.popitem(last=False)
        return InspectionResult(inspection_id, product["id"], product["name"], score, verdict,
                                thresholds["image"], round(latency_ms, 3), live.version)

    def recent_map(self, inspection_id: int) -> RecentMap | None:
        with self._lock:
            return self._recent.get(inspection_id)

    def latency_stats(self) -> dict:
        with self._lock:
            values = np.array(self._latencies)
        if not len(values):
            return {"count": 0}
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        return {"count": int(len(values)), "p50_ms": round(float(p50), 3),
                "p95_ms": round(float(p95), 3), "p99_ms": round(float(p99), 3)}
