"""Training worker: one job, in its own process (torch lives here, never in the API).

load the job (what to learn, from which captures, on top of which live model) -> the
training recipe (training/recipe.py) -> record the outcome. Only the API process makes the
new version current. Progress, cancellation and the outcome go through the jobs table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from edge_runtime.atomic import fsync_dir
from edge_runtime.data_layout import REPLAY_DIR, DataLayout
from edge_runtime.dataset import spread
from edge_runtime.inference import model_dir as md
from edge_runtime.memory import limit_malloc_arenas, settle, trim_heap
from edge_runtime.replay.snapshot import snapshot_store
from edge_runtime.settings import Settings
from edge_runtime.storage import repositories as repo
from edge_runtime.storage.db import Database
from edge_runtime.workers.lifetime import set_parent_death_signal

# where each phase starts on the job's 0-100 % bar (training is the bulk of the time)
PHASE_PERCENT = {"loading": 0.0, "features": 3.0, "training": 25.0, "saving": 85.0,
                 "calibrating": 90.0, "promoting": 98.0}
SAVE_SECONDS = 3.0  # ONNX export + checksums of a model directory, measured on 2 cores
CALIBRATION_COST = 1.5  # merged graph per image vs trunk per image (both in ORT)


def watch_parent(parent: int, interval: float = 0.5) -> threading.Thread:
    """Second line of defence, in every phase (features, saving, calibrating): exit as soon
    as the daemon process is gone (this process is re-parented), and only then."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(3)

    thread = threading.Thread(target=watch, name="parent-watch", daemon=True)
    thread.start()
    return thread


class JobReporter:
    """Progress of one job: phase, percent and an ETA from measured rates.

    The ETA counts what is left of every phase: the remaining training steps at the rate
    measured after the first step (which carries the warm-up that made the old ETA start
    10x too high), plus saving and calibration, estimated from the measured per-image cost
    of the features. Cancellation and parent death arrive as should_stop."""

    def __init__(self, db: Database, job_id: int, parent: int) -> None:
        self.db, self.job_id, self.parent = db, job_id, parent
        self.started = time.monotonic()
        self._last_write = 0.0
        self._last_check = 0.0
        self._stop = False
        self._phase_started = self.started
        self._per_image: float | None = None  # trunk seconds per image, from features
        self._calibration_images = 0
        self._first_step: tuple[int, float] | None = None

    def update(self, force: bool = False, **values) -> None:
        now = time.monotonic()
        if force or now - self._last_write > 0.5:
            self._last_write = now
            with self.db.connect() as conn:
                repo.update_job(conn, self.job_id, only_if_active=True, **values)

    def phase(self, name: str) -> None:
        now = time.monotonic()
        print(f"{time.strftime('%H:%M:%S')} job {self.job_id}: {name} "
              f"({now - self.started:.1f} s)", flush=True)
        self._phase_started = now
        values: dict = {"phase": name, "percent": PHASE_PERCENT.get(name, 0.0)}
        if name in ("saving", "calibrating"):
            values["eta_seconds"] = self._tail_seconds(name)
        self.update(force=True, **values)

    def plan(self, images: int, calibration_images: int) -> None:
        """What the job will process: its images, and all held-out images calibrated."""
        self._calibration_images = calibration_images
        print(f"job {self.job_id}: {images} images, {calibration_images} calibration images",
              flush=True)

    def _tail_seconds(self, phase: str = "training") -> float | None:
        if self._per_image is None:
            return None
        calibrate = self._per_image * CALIBRATION_COST * self._calibration_images
        return calibrate + (SAVE_SECONDS if phase in ("training", "saving") else 0.0)

    def features(self, done: int, total: int) -> None:
        elapsed = time.monotonic() - self._phase_started
        self._per_image = elapsed / max(done, 1)
        span = PHASE_PERCENT["training"] - PHASE_PERCENT["features"]
        self.update(force=done == total, phase="features",
                    percent=PHASE_PERCENT["features"] + span * done / max(total, 1),
                    eta_seconds=None if done < total else self._tail_seconds())

    def progress(self, p) -> None:
        done = (p.epoch - 1) * p.steps + p.step
        total = max(p.epochs * p.steps, 1)
        now = time.monotonic()
        if self._first_step is None:
            self._first_step = (done, now)
        first_done, first_time = self._first_step
        eta = None
        if done > first_done:
            step_seconds = (now - first_time) / (done - first_done)
            eta = step_seconds * (total - done) + (self._tail_seconds() or 0.0)
        span = PHASE_PERCENT["saving"] - PHASE_PERCENT["training"]
        self.update(force=p.val_loss is not None, phase="training", epoch=p.epoch,
                    epochs=p.epochs, step=p.step, steps=p.steps, loss=p.loss, eta_seconds=eta,
                    percent=round(PHASE_PERCENT["training"] + span * done / total, 2))
        if p.val_loss is not None:
            print(f"job {self.job_id}: epoch {p.epoch}/{p.epochs} loss {p.loss:.5g} "
                  f"val {p.val_loss:.5g}", flush=True)

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
    epochs: int | None  # None: as the recipe plans it
    forget: list[str] = field(default_factory=list)  # deleted products the model still knows


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
    # a product deleted since the live model learned it is dropped (not in ``names``)
    earlier = {name: spread(captures[names[name]], cfg.max_images)
               for name in known if name != product["name"] and name in names}
    forget = sorted(name for name in known if name not in names)
    images = spread(captures[product["id"]], params.get("max_images", cfg.max_images))
    return JobInput(job_id, product["name"], images, earlier, current,
                    params.get("epochs", cfg.epochs if cfg.recipe == "paper" else None),
                    forget)


def train(job: JobInput, settings: Settings, layout: DataLayout, reporter: JobReporter,
          replay_dir: Path):
    """The recipe, continuing from the live student, with replay of earlier products."""
    limit_malloc_arenas()  # before torch and ORT start their threads
    import torch

    from edge_runtime.model.torch_model import ModelSpec
    from edge_runtime.model.weights import resolve_backbone_files
    from edge_runtime.training.bundle import ModelBundle
    from edge_runtime.training.continual import ContinualTrainer
    from edge_runtime.training.loop import Progress, TrainConfig
    from edge_runtime.training.recipe import (
        Hooks,
        calibration_policy,
        heldout_images,
        learn_product,
    )

    cfg = settings.training
    torch.set_num_threads(cfg.threads)
    torch.set_num_interop_threads(1)  # the loop has no parallel ops to overlap

    def phase(name: str) -> None:
        """Between phases: the last one's freed memory and its code pages (torch's import,
        ORT's extraction) back to the OS."""
        settle()
        reporter.phase(name)

    def progress(p: Progress) -> None:
        if p.step == p.steps:  # an epoch's end: its validation's and steps' freed blocks
            trim_heap()  # (tcmalloc keeps them otherwise: ~40 MB over 10 epochs)
        reporter.progress(p)
    previous = layout.models / job.current if job.current else None
    spec = (ModelSpec.from_dict(md.read_manifest(previous).spec) if previous
            else ModelSpec.paste(recipe=cfg.recipe))
    bundle = ModelBundle(spec, resolve_backbone_files(settings.model.weights_dir or None),
                         cfg.seed, cfg.threads, work_dir=layout.job_work(job.job_id))
    if previous:
        bundle.load_student(previous)
        bundle.reuse_trunk_graph(previous)
    fixed = {"epochs": job.epochs, "target_steps": 0} if job.epochs else {}
    config = TrainConfig.for_recipe(cfg.recipe, seed=cfg.seed, **fixed)
    replay = settings.replay
    trainer = ContinualTrainer(bundle, "replay", replay.codec, replay_dir,
                               replay.samples or None, config,
                               budget_bytes=replay.budget_bytes, selection=replay.selection,
                               low_memory=cfg.low_memory)
    for name in job.forget:  # deleted products: no longer rehearsed
        if trainer.store is not None:
            trainer.store.remove(name)
    held = sum(len(heldout_images(paths, trainer.config)) for paths in job.earlier.values())
    reporter.plan(len(job.images), held + len(heldout_images(job.images, trainer.config)))
    return learn_product(
        trainer, job.product, job.images, layout.models / f"v{job.job_id:06d}", job.earlier,
        training_info={"job": job.job_id, "codec": trainer.store.codec.name},
        hooks=Hooks(phase=phase, features=reporter.features,
                    progress=progress, should_stop=reporter.should_stop),
        policy=calibration_policy(cfg.recipe))


def stage_replay(layout: DataLayout, job: JobInput) -> Path:
    """The job trains against its own copy of the live replay store (hard links: group files
    are immutable), so nothing shared changes until the new version is promoted."""
    stage = layout.job_work(job.job_id) / "replay"
    shutil.rmtree(stage, ignore_errors=True)
    source = layout.replay_of(job.current)
    if source.is_dir():
        snapshot_store(source, stage)
    return stage


def run(job_id: int, settings: Settings, parent: int) -> int:
    from edge_runtime.training.loop import TrainingCancelled

    layout = settings.layout
    db = Database(layout.db, create=False)
    reporter = JobReporter(db, job_id, parent)
    job = load_job(db, layout, job_id, settings)
    try:
        learned = train(job, settings, layout, reporter, stage_replay(layout, job))
    except TrainingCancelled:
        with db.connect() as conn:
            repo.update_job(conn, job_id, only_if_active=True, status="cancelled",
                            finished_at=time.time(), phase="cancelled")
        return 0
    # The version directory becomes complete with its replay store, then the API promotes
    # it and only then says "succeeded" (services/jobs.py; JobManager.recover after a crash).
    install_replay(layout.job_work(job_id) / "replay", learned.directory)
    reporter.phase("promoting")
    with db.connect() as conn:
        repo.update_job(conn, job_id, only_if_active=True, version=learned.directory.name,
                        phase=repo.TRAINED_PHASE, eta_seconds=0.5)
    return 0


def install_replay(stage: Path, version_dir: Path) -> None:
    """Move the job's replay store into its version directory (one rename, same disk)."""
    target = version_dir / REPLAY_DIR
    if target.exists():
        shutil.rmtree(target)
    os.replace(stage, target)
    fsync_dir(version_dir)


def record_failure(settings: Settings, job_id: int, exc: BaseException) -> None:
    """Best effort: the error on the job, waiting out a busy database; if even that fails,
    the API marks the job failed from the exit code and the log's last line."""
    try:
        db = Database(settings.layout.db, create=False)
        with db.connect() as conn:
            repo.update_job(conn, job_id, only_if_active=True, status="failed",
                            error=f"{type(exc).__name__}: {exc}", finished_at=time.time())
    except Exception:  # noqa: BLE001 - the exit code still tells the API
        traceback.print_exc()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="edge-runtime training worker")
    parser.add_argument("--job", type=int, required=True)
    parser.add_argument("--settings-file", type=Path, required=True)
    parser.add_argument("--parent", type=int, default=os.getppid())
    args = parser.parse_args(argv)
    watch_parent(args.parent)
    settings = Settings.from_json(args.settings_file.read_text())
    try:
        return run(args.job, settings, args.parent)
    except Exception as exc:  # noqa: BLE001 - every failure is reported on the job
        traceback.print_exc()
        record_failure(settings, args.job, exc)
        return 1
    finally:
        shutil.rmtree(settings.layout.job_work(args.job), ignore_errors=True)


if __name__ == "__main__":
    set_parent_death_signal()
    sys.exit(main())
