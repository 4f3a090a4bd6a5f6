"""/status: one view of the daemon for operators, the page and Prometheus."""

from __future__ import annotations

import platform
import sys
import time

import psutil

import edge_runtime
from edge_runtime.camera import MonitoredCamera
from edge_runtime.memory import peak_rss_mb
from edge_runtime.replay.accounting import read_accounting
from edge_runtime.services.heads import HeadService
from edge_runtime.services.health import Health
from edge_runtime.services.inspection import InspectionService
from edge_runtime.services.jobs import JobManager
from edge_runtime.services.line import LineService
from edge_runtime.services.models import ModelRegistry
from edge_runtime.services.products import ProductService
from edge_runtime.settings import Settings


class WorkerMemory:
    """Live and peak RSS of the running job's worker (its pid is on the job row).

    Sampled on each /status and /metrics read; the peak is the kernel's VmHWM where there
    is one, else the largest sample seen."""

    def __init__(self) -> None:
        self._job: int | None = None
        self._peak = 0.0

    def read(self, job: dict | None) -> dict | None:
        if not job or not job.get("pid"):
            return None
        try:
            rss = psutil.Process(job["pid"]).memory_info().rss / 2**20
        except psutil.Error:
            return None
        if job["id"] != self._job:
            self._job, self._peak = job["id"], 0.0
        self._peak = max(self._peak, rss, peak_rss_mb(job["pid"]) or 0.0)
        return {"pid": job["pid"], "rss_mb": round(rss, 1), "peak_rss_mb": round(self._peak, 1)}


JOB_KEYS = ("id", "product_id", "status", "phase", "percent", "epoch", "epochs", "step",
            "steps", "loss", "eta_seconds", "cancel_requested")


class StatusService:
    def __init__(self, settings: Settings, registry: ModelRegistry, products: ProductService,
                 jobs: JobManager, inspections: InspectionService, camera: MonitoredCamera,
                 line: LineService, heads: HeadService | None = None,
                 health: Health | None = None) -> None:
        self.settings, self.registry, self.products = settings, registry, products
        self.jobs, self.inspections, self.camera, self.line = jobs, inspections, camera, line
        self.heads = heads
        self.started_at = time.time()
        self.worker = WorkerMemory()
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
            "products": [{"id": p["id"], "name": p["name"], "trained": p["trained"],
                          "served_by": p["served_by"]} for p in self.products.list()],
            "job": {k: job[k] for k in JOB_KEYS} if job else None,
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
            "worker": self.worker.read(job),  # the training worker's RSS, during a job
            "inference_latency": self.inspections.latency_stats(),
            "macs": live.manifest.training.get("macs") if live else None,
            "replay_store": self._replay(live.version if live else None),
            "heads": self.heads.status() if self.heads else None,
            "camera": {"kind": self.camera.name, "error": self.camera.error},
            "torch_imported": "torch" in sys.modules,  # must stay False: training is a worker's
            "dropped_inspection_records": self.inspections.dropped_records,
            "platform": {"machine": platform.machine(), "python": platform.python_version()},
            # what ONNX Runtime really runs on (model.providers, minus what it fell back from)
            "providers": live.inferencer.session.get_providers() if live else None,
        }
        status["problems"] = self.health.problems()
        line = self.line.status()
        if line is not None:
            status["serial_bridge"] = line
        return status

