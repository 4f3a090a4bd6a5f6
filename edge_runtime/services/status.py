"""/status: one view of the daemon for operators, the page and Prometheus."""

from __future__ import annotations

import platform
import sys
import time

import psutil

import edge_runtime
from edge_runtime.camera import MonitoredCamera
from edge_runtime.replay.accounting import read_accounting
from edge_runtime.services.heads import HeadService
from edge_runtime.services.inspection import STUDENT, InspectionService
from edge_runtime.services.jobs import JobManager
from edge_runtime.services.line import LineService
from edge_runtime.services.models import ModelRegistry
from edge_runtime.services.products import ProductService
from edge_runtime.settings import Settings

JOB_KEYS = ("id", "product_id", "status", "phase", "percent", "epoch", "epochs", "step",
            "steps", "loss", "eta_seconds", "cancel_requested")


class StatusService:
    def __init__(self, settings: Settings, registry: ModelRegistry, products: ProductService,
                 jobs: JobManager, inspections: InspectionService, camera: MonitoredCamera,
                 line: LineService, heads: HeadService | None = None) -> None:
        self.settings, self.registry, self.products = settings, registry, products
        self.jobs, self.inspections, self.camera, self.line = jobs, inspections, camera, line
        self.heads = heads
        self.started_at = time.time()

    def collect(self) -> dict:
        live = self.registry.live
        job = self.jobs.active()
        status = {
            "version": edge_runtime.__version__,
            "model_version": live.version if live else None,
            "products": [{"id": p["id"], "name": p["name"], "trained": p["trained"],
                          "served_by": self._served_by(p)} for p in self.products.list()],
            "job": {k: job[k] for k in JOB_KEYS} if job else None,
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
            "inference_latency": self.inspections.latency_stats(),
            "macs": live.manifest.training.get("macs") if live else None,
            "replay_store": read_accounting(self.settings.layout.replay),
            "heads": self.heads.status() if self.heads else None,
            "camera": {"kind": self.camera.name, "error": self.camera.error},
            "torch_imported": "torch" in sys.modules,  # must stay False: training is a worker's
            "platform": {"machine": platform.machine(), "python": platform.python_version()},
            # what ONNX Runtime really runs on (model.providers, minus what it fell back from)
            "providers": live.inferencer.session.get_providers() if live else None,
        }
        line = self.line.status()
        if line is not None:
            status["serial_bridge"] = line
        return status

    def _served_by(self, product: dict) -> str | None:
        """Who would answer an inspection of ``product`` now (None: nobody yet)."""
        if product["trained"]:
            return STUDENT
        head = self.heads.inferencer(product["id"]) if self.heads else None
        return head.head.kind if head is not None else None
