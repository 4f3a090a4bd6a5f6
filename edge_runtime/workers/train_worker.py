"""Training worker: one job, in its own process (torch lives here, never in the API).

load the job (what to learn, from which captures, on top of which live model) -> the
training recipe (training/recipe.py) -> record the outcome. Only the API process makes the
new version current. Progress, cancellation and the outcome go through the jobs table.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import shutil
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.data_layout import DataLayout
from edge_runtime.dataset import spread
from edge_runtime.inference import model_dir as md
from edge_runtime.settings import Settings
from edge_runtime.storage import repositories as repo
from edge_runtime.storage.db import Database


def set_parent_death_signal() -> None:
    """Linux: die with the daemon, so a kill -9 of the daemon leaves no orphan trainer."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class JobReporter:
    """Throttled progress writes; cancellation and parent death as should_stop."""

    def __init__(self, db: Database, job_id: int, parent: int) -> None:
        self.db, self.job_id, self.parent = db, job_id, parent
        self.started = time.monotonic()
        self._last_write = 0.0
        self._last_check = 0.0
        self._stop = False

    def update(self, force: bool = False, **values) -> None:
        now = time.monotonic()
        if force or now - self._last_write > 0.5:
            self._last_write = now
            with self.db.connect() as conn:
                repo.update_job(conn, self.job_id, only_if_active=True, **values)

    def phase(self, name: str) -> None:
        self.update(force=True, phase=name)

    def progress(self, p) -> None:
        done = (p.epoch - 1) * p.steps + p.step
        total = p.epochs * p.steps
        elapsed = time.monotonic() - self.started
        eta = elapsed / done * (total - done) if done else None
        self.update(force=p.val_loss is not None, phase="training", epoch=p.epoch,
                    epochs=p.epochs, step=p.step, steps=p.steps, loss=p.loss, eta_seconds=eta)

    def should_stop(self) -> bool:
        now = time.monotonic()
        if now - self._last_check > 0.5:
            self._last_check = now
            if os.getppid() != self.parent:
                self._stop = True
            with self.db.connect(write=False) as conn:
                job = repo.get_job(conn, self.job_id)
            self._stop = self._stop or job is None or bool(job["cancel_requested"])
        return self._stop


@dataclass
class JobInput:
    """Everything a job learns from, read once from the database and the model root."""

    job_id: int
    product: str
    images: list[Path]
    earlier: dict[str, list[Path]]  # products the live model knows -> their captures
    current: str | None  # the live version the student continues from
    epochs: int


def load_job(db: Database, layout: DataLayout, job_id: int, settings: Settings) -> JobInput:
    cfg = settings.training
    with db.connect() as conn:
        job = repo.get_job(conn, job_id)
        product = repo.get_product(conn, job["product_id"])
        names = {p["name"]: p["id"] for p in repo.list_products(conn)}
        captures = {pid: [layout.capture(c["file"]) for c in repo.list_captures(conn, pid)]
                    for pid in names.values()}
        repo.update_job(conn, job_id, status="running", started_at=time.time(),
                        pid=os.getpid(), phase="loading")
    params = json.loads(job["params"])
    current = md.current_version(layout.models)
    known = md.read_manifest(layout.models / current).thresholds if current else {}
    earlier = {name: spread(captures.get(names.get(name), []), cfg.max_images)
               for name in known if name != product["name"]}
    images = spread(captures[product["id"]], params.get("max_images", cfg.max_images))
    return JobInput(job_id, product["name"], images, earlier, current,
                    params.get("epochs", cfg.epochs))


def train(job: JobInput, settings: Settings, layout: DataLayout, reporter: JobReporter):
    """The recipe, continuing from the live student, with replay of earlier products."""
    import torch

    from edge_runtime.model.macs import inference_macs
    from edge_runtime.model.torch_model import ModelSpec
    from edge_runtime.model.weights import resolve_backbone_files
    from edge_runtime.training.bundle import ModelBundle
    from edge_runtime.training.continual import ContinualTrainer
    from edge_runtime.training.loop import TrainConfig
    from edge_runtime.training.recipe import Hooks, learn_product

    cfg = settings.training
    torch.set_num_threads(cfg.threads)
    previous = layout.models / job.current if job.current else None
    spec = ModelSpec.from_dict(md.read_manifest(previous).spec) if previous else ModelSpec()
    bundle = ModelBundle(spec, resolve_backbone_files(settings.model.weights_dir or None),
                         cfg.seed, cfg.threads, work_dir=layout.job_work(job.job_id))
    if previous:
        bundle.load_student(previous)
    replay, config = settings.replay, TrainConfig(epochs=job.epochs, seed=cfg.seed)
    trainer = ContinualTrainer(bundle, "replay", replay.codec, layout.replay,
                               replay.samples or None, config,
                               budget_bytes=replay.budget_bytes, selection=replay.selection)
    macs = inference_macs(bundle.spec, bundle.trunk, bundle.teacher, bundle.student)
    return learn_product(
        trainer, job.product, job.images, layout.models / f"v{job.job_id:06d}", job.earlier,
        training_info={"job": job.job_id, "macs": macs, "codec": replay.codec},
        hooks=Hooks(phase=reporter.phase, progress=reporter.progress,
                    should_stop=reporter.should_stop))


def run(job_id: int, settings: Settings, parent: int) -> int:
    from edge_runtime.training.loop import TrainingCancelled

    layout = settings.layout
    db = Database(layout.db)
    reporter = JobReporter(db, job_id, parent)
    job = load_job(db, layout, job_id, settings)
    try:
        learned = train(job, settings, layout, reporter)
    except TrainingCancelled:
        with db.connect() as conn:
            repo.update_job(conn, job_id, only_if_active=True, status="cancelled",
                            finished_at=time.time(), phase="cancelled")
        return 0
    with db.connect() as conn:
        repo.update_job(conn, job_id, only_if_active=True, status="succeeded",
                        version=learned.directory.name, finished_at=time.time(),
                        phase="done", eta_seconds=0.0)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="edge-runtime training worker")
    parser.add_argument("--job", type=int, required=True)
    parser.add_argument("--settings-file", type=Path, required=True)
    parser.add_argument("--parent", type=int, default=os.getppid())
    args = parser.parse_args(argv)
    settings = Settings.from_json(args.settings_file.read_text())
    try:
        return run(args.job, settings, args.parent)
    except Exception as exc:  # noqa: BLE001 - every failure is reported on the job
        traceback.print_exc()
        db = Database(settings.layout.db)
        with db.connect() as conn:
            repo.update_job(conn, args.job, only_if_active=True, status="failed",
                            error=f"{type(exc).__name__}: {exc}", finished_at=time.time())
        return 1
    finally:
        shutil.rmtree(settings.layout.job_work(args.job), ignore_errors=True)


if __name__ == "__main__":
    set_parent_death_signal()
    sys.exit(main())
