"""Inspections: image -> map, score, verdict (by the inferencer); records, recent maps in
RAM, latency statistics, metrics and events."""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace

import numpy as np

from edge_runtime.inference.heads import Head
from edge_runtime.inference.inferencer import AnomalyInferencer
from edge_runtime.inference.thresholds import REJECT, Thresholds
from edge_runtime.services import events
from edge_runtime.services.errors import GoneError, found
from edge_runtime.services.heads import HeadService
from edge_runtime.services.health import Health
from edge_runtime.services.map_store import MapStore, RecentMap
from edge_runtime.services.metrics import Metrics
from edge_runtime.services.models import LiveModel, ModelRegistry
from edge_runtime.services.products import STUDENT, ProductService, override_applies
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
    head: str  # who answered: "student", or the memory-bank head's kind before training


@dataclass(frozen=True)
class Answerer:
    """What decides one inspection: a graph, its thresholds, and its name."""

    inferencer: AnomalyInferencer
    thresholds: Thresholds
    version: str
    head: str


class InspectionService:
    PRUNE_EVERY = 1000
    MAX_PENDING = 32  # maps waiting to be written

    def __init__(self, db: Database, registry: ModelRegistry, products: ProductService,
                 metrics: Metrics, bus: events.EventBus, keep_recent_maps: int,
                 keep_records: int = 100_000, maps: MapStore | None = None,
                 heads: HeadService | None = None, health: Health | None = None) -> None:
        self.db, self.registry, self.products = db, registry, products
        self.maps, self.heads, self.health = maps, heads, health
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="maps")
        self._pending = 0
        self.dropped_records = 0
        self._unrecorded = itertools.count(UNRECORDED_BASE)
        self.metrics, self.bus = metrics, bus
        self.keep_records = keep_records
        self._lock = threading.Lock()
        self._latencies: collections.deque[float] = collections.deque(maxlen=2000)
        self._recent: collections.OrderedDict[int, RecentMap] = collections.OrderedDict()
        self._keep = keep_recent_maps

    def answerer(self, product: dict) -> Answerer:
        """Who answers (``calibrated``), with the operator's threshold override when it was
        set on that path's scores and its calibration still holds: a head's and the
        student's scores are on other scales, and a retrained student's or a refitted
        head's on a new one, so an override never decides on a scale it was not set on."""
        path = self.calibrated(product)
        if not override_applies(product, path.head, path.thresholds):
            return path
        overrides = product["image_threshold_override"], product["pixel_threshold_override"]
        return replace(path, thresholds=path.thresholds.overridden(*overrides))

    def _route(self, product: dict) -> tuple[LiveModel | None, Thresholds | None, Head | None]:
        """(live model, the student's calibration or None, the head if it answers): the
        student once the live model knows the product, unless the product's memory-bank
        head was chosen over it (HeadService.serves); before training the head."""
        live = self.registry.live  # one reference for the whole request: swaps can't break it
        calibrated = live.thresholds(product["name"]) if live else None
        head = self.heads.head(product["id"]) if self.heads else None
        if head is None or head.thresholds is None:
            return live, calibrated, None
        if calibrated is not None and not self.heads.serves(product["id"], live.version):
            return live, calibrated, None
        return live, calibrated, head

    def calibrated(self, product: dict) -> Answerer:
        """Who answers, with its calibrated thresholds only; NotTrainedError (409) when
        neither the student nor a head knows the product yet."""
        live, calibrated, head = self._route(product)
        inferencer = self.heads.inferencer(product["id"]) if head is not None else None
        if inferencer is not None:
            return Answerer(inferencer, head.thresholds, f"head-{head.kind}", head.kind)
        if live is None or calibrated is None:
            self.products.require_trained(product)  # raises NotTrainedError
        return Answerer(live.inferencer, calibrated, live.version, STUDENT)

    def serving(self, product: dict) -> tuple[str, Thresholds] | None:
        """(who answers, its calibrated thresholds) for views, without opening a session;
        None before anything can answer."""
        _, calibrated, head = self._route(product)
        if head is not None:
            return head.kind, head.thresholds
        return (STUDENT, calibrated) if calibrated is not None else None

    def inspect(self, product: dict, data: bytes | np.ndarray,
                source: str = "upload") -> InspectionRecord:
        """``data``: an encoded upload, or a camera's RGB array (never re-encoded)."""
        answerer = self.answerer(product)  # 409 before decoding anything
        thresholds = answerer.thresholds
        started = time.perf_counter()
        rgb = answerer.inferencer.load(data)
        prediction = answerer.inferencer.predict(rgb, thresholds)
        seconds = time.perf_counter() - started
        inspection_id = self._record(product["id"], prediction.score, prediction.label,
                                     thresholds.image, seconds * 1000, answerer.version, source)
        self.metrics.observe_inspection(product["name"], prediction.label, seconds)
        recent = RecentMap(rgb, prediction.anomaly_map.astype(np.float16), thresholds,
                           prediction.score, prediction.label)
        with self._lock:
            self._latencies.append(seconds * 1000)
            if self._keep:
                self._recent[inspection_id] = recent
                while len(self._recent) > self._keep:
                    self._recent.popitem(last=False)
        if prediction.label == REJECT:  # a reject may be looked at much later
            self._keep_in_background(inspection_id, recent)
        record = InspectionRecord(inspection_id, product["id"], product["name"],
                                  prediction.score, prediction.label, thresholds.image,
                                  round(seconds * 1000, 3), answerer.version, answerer.head)
        self.bus.publish(events.INSPECTION, asdict(record) | {
            "source": source, "created_at": time.time(),
            "map_url": f"/inspections/{inspection_id}/map.png"})
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
        if recent is not None:
            return recent
        row = self.get(inspection_id)
        kept = self.maps.load(row["map_file"]) if self.maps and row["map_file"] else None
        if kept is None:
            raise GoneError(f"the map of inspection {inspection_id} is no longer kept (the "
                            f"last {self._keep} are kept in memory, rejects and reviewed "
                            "parts on disk within inspection.keep_maps_mb)")
        return kept

    def _keep_in_background(self, inspection_id: int, recent: RecentMap) -> None:
        """Compressing and fsyncing a map takes milliseconds on an SD card: one writer
        thread does it off the request path; a burst beyond MAX_PENDING is not kept."""
        with self._lock:
            if self._pending >= self.MAX_PENDING:
                return
            self._pending += 1

        def write() -> None:
            try:
                self.keep_map(inspection_id, recent)
            except Exception:  # noqa: BLE001 - a lost map must never fail the line
                log.exception("could not keep the map of inspection %d", inspection_id)
            finally:
                with self._lock:
                    self._pending -= 1

        self._writer.submit(write)

    def keep_map(self, inspection_id: int, recent: RecentMap) -> None:
        """Write the map to disk (rejects, reviewed parts) and note it on the row."""
        if self.maps is None:
            return
        name = self.maps.save(inspection_id, recent)
        if name:
            with self.db.connect(durable=False) as conn:
                repo.set_inspection_map_file(conn, inspection_id, name)

    def list(self, limit: int = 50, offset: int = 0, **filters) -> dict:
        with self.db.connect(write=False) as conn:
            rows, total = repo.list_inspections(conn, limit=limit, offset=offset, **filters)
        with self._lock:
            in_ram = {row["id"] for row in rows} & self._recent.keys()
        for row in rows:
            row["map_kept"] = bool(row["map_kept"]) and self.maps is not None and \
                self.maps.has(row["id"])
            row["map_available"] = row["map_kept"] or row["id"] in in_ram
            row["map_url"] = f"/inspections/{row['id']}/map.png"
        return {"total": total, "limit": limit, "offset": offset, "inspections": rows}

    def counts(self, window_s: float = 3600) -> list[dict]:
        with self.db.connect(write=False) as conn:
            return repo.inspection_counts(conn, time.time() - window_s)

    def forget_product(self, product_id: int) -> None:
        """Drop the maps of a deleted product (RAM and disk) before its rows go."""
        with self.db.connect(write=False) as conn:
            files = repo.product_map_files(conn, product_id)
        if self.maps:
            for name in files:
                self.maps.delete(name)

    def latency_stats(self) -> dict:
        with self._lock:
            values = np.array(self._latencies)
        if not len(values):
            return {"count": 0}
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        return {"count": int(len(values)), "p50_ms": round(float(p50), 3),
                "p95_ms": round(float(p95), 3), "p99_ms": round(float(p99), 3)}
