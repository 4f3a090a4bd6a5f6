"""The daemon's services, built once at start-up and wired to each other, typed."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from edge_runtime.camera import MonitoredCamera, make_camera
from edge_runtime.inference.preprocess import set_decode_slots
from edge_runtime.inference.thresholds import Thresholds
from edge_runtime.services.captures import CaptureService
from edge_runtime.services.events import EventBus
from edge_runtime.services.fleet_metrics import register_fleet_metrics
from edge_runtime.services.heads import HeadOptions, HeadService
from edge_runtime.services.health import Health
from edge_runtime.services.inspection import InspectionService
from edge_runtime.services.jobs import JobManager
from edge_runtime.services.line import LineService
from edge_runtime.services.map_store import MapStore
from edge_runtime.services.metrics import Metrics
from edge_runtime.services.models import ModelRegistry
from edge_runtime.services.products import STUDENT, ProductService
from edge_runtime.services.removal import ProductRemoval
from edge_runtime.services.review import ReviewService
from edge_runtime.services.status import StatusService
from edge_runtime.settings import Settings
from edge_runtime.storage.db import open_database

log = logging.getLogger("edge_runtime")


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    events: EventBus
    metrics: Metrics
    models: ModelRegistry
    products: ProductService
    captures: CaptureService
    inspections: InspectionService
    jobs: JobManager
    line: LineService
    status: StatusService
    camera: MonitoredCamera
    reviews: ReviewService
    removal: ProductRemoval
    heads: HeadService
    health: Health


def build_runtime(settings: Settings) -> Runtime:
    """Open state, fail jobs a crash interrupted, load the last good model."""
    layout = settings.layout
    layout.root.mkdir(parents=True, exist_ok=True)
    set_decode_slots(settings.api.decode_slots)
    db, damaged = open_database(layout.db)
    db.keep_open()
    bus, metrics = EventBus(), Metrics()
    health = Health(layout.root)
    if damaged:
        log.error(damaged)
        health.set("state", damaged)
    models = ModelRegistry(layout.models, settings.model.threads, settings.model.spinning,
                           providers=settings.model.providers)
    jobs = JobManager(settings, db, models, bus)
    jobs.recover()
    models.open_last_good()
    cam = settings.camera
    camera = MonitoredCamera(make_camera(
        cam.kind, cam.directory, device=cam.device, width=cam.width, height=cam.height,
        pixel_format=cam.pixel_format, pipeline=cam.pipeline))
    products = ProductService(db, models)
    heads = HeadService(layout.heads, HeadOptions.from_settings(settings))
    stale_heads = heads.load_all()

    def fit_head(product: dict) -> None:
        """Captures stored: refit the head of a product the student does not know yet, or
        of any product when the head may answer for trained ones too."""
        may_serve = settings.heads.serve != "student" or not products.is_trained(product)
        if settings.heads.auto_fit and may_serve:
            heads.request_fit(product["id"], lambda: captures.paths(product["id"]))

    def choose(live, only: int | None = None) -> None:
        """Student or head, per trained product of ``live`` (heads.serve = auto)."""
        for pid, name in products.names().items():
            if only in (None, pid) and name in live.manifest.thresholds:
                heads.request_choice(pid, live.directory, lambda p=pid: captures.paths(p))

    models.on_live(choose)

    def head_ready(product_id: int) -> None:
        live = models.live
        if live is not None:
            choose(live, product_id)

    heads.on_ready = head_ready
    captures = CaptureService(db, layout, camera, on_stored=fit_head)
    for product_id in stale_heads:  # fitted again from the stored captures, as after storing
        if product_id in products.names():
            fit_head(products.get(product_id))
    if models.live:
        choose(models.live)  # made for another version, or never
    maps = MapStore(layout.maps, int(settings.inspection.keep_maps_mb * 2**20))
    inspections = InspectionService(db, models, products, metrics, bus,
                                    settings.inspection.keep_recent_maps,
                                    settings.inspection.keep_records, maps, heads=heads,
                                    health=health)
    products.serving = inspections.serving

    def calibration_then(product: dict, who: str) -> Thresholds | None:
        """What an earlier release's override was set on: the student's calibration, or
        the head's (the stale one being refitted, if so)."""
        if who == STUDENT:
            return models.thresholds(product["name"])
        if product["id"] in heads.replaced:
            return heads.replaced[product["id"]]
        head = heads.head(product["id"])
        return head.thresholds if head is not None and head.kind == who else None

    for name in products.record_override_bases(calibration_then):
        log.info("%s: the operator's threshold override now names its calibration", name)
    line = LineService(settings.serial, products, camera, inspections)
    status = StatusService(settings, models, products, jobs, inspections, camera, line, heads,
                           health)
    metrics.add_state(status.collect)
    register_fleet_metrics(metrics.registry, db, models, line)
    reviews = ReviewService(db, layout, inspections, products, captures, bus)
    removal = ProductRemoval(db, products, captures, inspections, jobs, bus, heads)
    return Runtime(settings, bus, metrics, models, products, captures, inspections, jobs, line,
                   status, camera, reviews, removal, heads, health)
