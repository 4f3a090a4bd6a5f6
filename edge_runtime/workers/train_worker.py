"""Training worker: one job, in its own process (torch lives here, never in the API).

Continual training of one product with replay from the on-disk store, starting from the
live student. Writes a complete new model version directory; only the API process makes
it current. Progress, cancellation and the outcome go through the jobs table.
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
from dataclasses import asdict

from edge_runtime import repositories as repo
from edge_runtime.dataset import spread
from edge_runtime.db import Database
from edge_runtime.settings import Settings, _apply


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


def run(job_id: int, settings: Settings, parent: int) -> int:
    import torch

    from edge_runtime import model_dir as md
    from edge_runtime.continual import ContinualTrainer
    from edge_runtime.engine import Engine, calibrate_product
    from edge_runtime.macs import inference_macs
    from edge_runtime.services.models import CURRENT
    from edge_runtime.torch_model import ModelSpec
    from edge_runtime.training import TrainConfig, TrainingCancelled, holdout_split
    from edge_runtime.weights import resolve_backbone_files

    data = settings.data_path
    db = Database(data / "state.db")
    reporter = JobReporter(db, job_id, parent)
    with db.connect() as conn:
        job = repo.get_job(conn, job_id)
        product = repo.get_product(conn, job["product_id"])
        products = {p["id"]: p for p in repo.list_products(conn)}
        captures = {pid: [data / "captures" / c["file"] for c in repo.list_captures(conn, pid)]
                    for pid in products}
        repo.update_job(conn, job_id, status="running", started_at=time.time(),
                        pid=os.getpid(), phase="loading")
    params = json.loads(job["params"])
    cfg = settings.training
    torch.set_num_threads(cfg.threads)
    config = TrainConfig(epochs=params.get("epochs", cfg.epochs), seed=cfg.seed)
    files = resolve_backbone_files(settings.model.weights_dir or None)
    work = data / "work" / f"job-{job_id}"
    engine = Engine(ModelSpec.paste(), files, cfg.seed, cfg.threads, work_dir=work)
    models = data / "models"
    current = (models / CURRENT).read_text().strip() if (models / CURRENT).exists() else None
    previous = md.read_manifest(models / current) if current else None
    if previous:
        engine.load_student(models / current)
    trainer = ContinualTrainer(engine, "replay", cfg.codec, data / "replay",
                               cfg.replay_samples, config)
    images = spread(captures[product["id"]], params.get("max_images", cfg.max_images))
    reporter.update(force=True, phase="features")
    task = trainer.prepare(product["name"], images)
    try:
        trainer.learn(task, reporter.progress, reporter.should_stop)
    except TrainingCancelled:
        with db.connect() as conn:
            repo.update_job(conn, job_id, only_if_active=True, status="cancelled",
                            finished_at=time.time(), phase="cancelled")
        return 0
    reporter.update(force=True, phase="saving")
    version = f"v{job_id:06d}"
    known = set(previous.products) if previous else set()
    names = {p["name"]: p["id"] for p in products.values()}
    learned = sorted(known | {product["name"]})
    macs = inference_macs(engine.spec, engine.trunk, engine.teacher, engine.student)
    target = engine.save(models / version, training={
        "job": job_id, "product": product["name"], "macs": macs, "images": len(images),
        "codec": cfg.codec})
    thresholds = {}
    for name in learned:
        paths = spread(captures.get(names.get(name), []), cfg.max_images)
        _, held = holdout_split(len(paths), config.val_fraction, config.seed)
        normal = [paths[i] for i in held] or paths
        thresholds[name] = {"thresholds": calibrate_product(target, normal, cfg.threads)}
    md.update_products(target, thresholds)
    with db.connect() as conn:
        repo.add_version(conn, version, job_id, learned)
        repo.update_job(conn, job_id, only_if_active=True, status="succeeded", version=version,
                        finished_at=time.time(), phase="done", eta_seconds=0.0)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="edge-runtime training worker")
    parser.add_argument("--job", type=int, required=True)
    parser.add_argument("--settings-json", required=True)
    parser.add_argument("--parent", type=int, default=os.getppid())
    args = parser.parse_args(argv)
    settings = _apply(Settings(), json.loads(args.settings_json), "")
    try:
        return run(args.job, settings, args.parent)
    except Exception as exc:  # noqa: BLE001 - every failure is reported on the job
        traceback.print_exc()
        db = Database(settings.data_path / "state.db")
        with db.connect() as conn:
            repo.update_job(conn, args.job, only_if_active=True, status="failed",
                            error=f"{type(exc).__name__}: {exc}", finished_at=time.time())
        return 1
    finally:
        shutil.rmtree(settings.data_path / "work" / f"job-{args.job}", ignore_errors=True)


def settings_json(settings: Settings) -> str:
    return json.dumps(asdict(settings))


if __name__ == "__main__":
    set_parent_death_signal()
    sys.exit(main())
