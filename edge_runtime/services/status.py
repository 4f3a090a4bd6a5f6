"""/status: one view of the daemon for operators, the page and Prometheus."""

from __future__ import annotations

import sys
import time

import psutil

import edge_runtime
from edge_runtime.camera import MonitoredCamera
from edge_runtime.replay.accounting import read_accounting
from edge_runtime.services.health import Health
from edge_runtime.services.inspection import InspectionService
from edge_runtime.services.jobs import JobManager
from edge_runtime.services.line import LineService
from edge_runtime.services.models import ModelRegistry
from edge_runtime.services.products import ProductService
from edge_runtime.settings import Settings

JOB_KEYS = ("id", "product_id", "status", "phase", "epoch", "epochs", "step", "steps", "loss",
            "eta_seconds", "cancel_requested")


class StatusService:
    def __init__(self, settings: Settings, registry: ModelRegistry, products: ProductService,
                 jobs: JobManager, inspections: InspectionService, camera: MonitoredCamera,
                 line: LineService, health: Health | None = None) -> None:
        self.settings, self.registry, self.products = settings, registry, products
        self.jobs, self.inspections, self.camera, self.line = jobs, inspections, camera, line
        self.started_at = time.time()
        self.health = health or Health(settings.layout.root)

    def _replay(self, version: str | None) -> dict | None:
        """The live version's replay store; damage is a degraded state, never a 500."""
        directory = self.settings.layout.replay_of(version)
        try:
            accounting = read_accounting(directory)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.health.set("replay", f"replay store {directory} is unreadable ({exc}); the "
                                      f"next training job starts it afresh")
            return None
        self.health.clear("replay")
        return accounting

    def health_view(self) -> dict:
        """/health: ok, or degraded with what is wrong (verdicts flow either way)."""
        problems = self.health.problems()
        return {"status": "degraded" if problems else "ok", "problems": problems}

    def collect(self) -> dict:
        live = self.registry.live
        job = self.jobs.active()
        status = {
            "version": edge_runtime.__version__,
            "model_version": live.version if live else None,
            "products": [{"id": p["id"], "name": p["name"], "trained": p["trained"]}
                         for p in self.products.list()],
            "job": {k: job[k] for k in JOB_KEYS} if job else None,
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
            "inference_latency": self.inspections.latency_stats(),
            "macs": live.manifest.training.get("macs") if live else None,
            "replay_store": self._replay(live.version if live else None),
            "camera": {"kind": self.camera.name, "error": self.camera.error},
            "torch_imported": "torch" in sys.modules,  # must stay False: training is a worker's
            "dropped_inspection_records": self.inspections.dropped_records,
        }
        status["problems"] = self.health.problems()
        line = self.line.status()
        if line is not None:
            status["serial_bridge"] = line
        return status
