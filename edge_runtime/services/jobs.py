"""Training jobs: one at a time, each in a worker process; promotion on success."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

from edge_runtime import repositories as repo
from edge_runtime.db import Database
from edge_runtime.services.models import ModelRegistry
from edge_runtime.settings import Settings
from edge_runtime.workers.train_worker import settings_json

log = logging.getLogger("edge_runtime.jobs")


class JobConflictError(RuntimeError):
    """Another training job is running (HTTP 409)."""


class TooFewCapturesError(ValueError):
    """Not enough captures to train (HTTP 422)."""


class JobManager:
    def __init__(self, settings: Settings, db: Database, registry: ModelRegistry) -> None:
        self.settings, self.db, self.registry = settings, db, registry
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._job_id: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._monitor, name="jobs", daemon=True)
        self.logs = settings.data_path / "logs"

    def start_monitor(self) -> None:
        self._thread.start()

    def shutdown(self) -> None:
        self._stop.set()
        with self._lock:
            if self._process and self._process.poll() is None:
                self._process.terminate()

    def submit(self, product: dict, params: dict) -> dict:
        with self._lock:
            with self.db.connect() as conn:
                if repo.active_job(conn):
                    raise JobConflictError("another training job is running; wait for it or "
                                           "cancel it")
                count = repo.count_captures(conn, product["id"])
                if count < self.settings.training.min_captures:
                    raise TooFewCapturesError(
                        f"product {product['name']!r} has {count} captures; training needs "
                        f"at least {self.settings.training.min_captures}")
                job = repo.create_job(conn, product["id"], params)
            self.logs.mkdir(parents=True, exist_ok=True)
            log_file = open(self.logs / f"job-{job['id']}.log", "ab")  # noqa: SIM115
            cmd = [sys.executable, "-m", "edge_runtime.workers.train_worker",
                   "--job", str(job["id"]), "--settings-json", settings_json(self.settings)]
            try:
                self._process = subprocess.Popen(cmd, stdout=log_file,
                                                 stderr=subprocess.STDOUT,
                                                 stdin=subprocess.DEVNULL)
            except OSError as exc:  # a job that never started must not block the queue
                with self.db.connect() as conn:
                    repo.update_job(conn, job["id"], status="failed", finished_at=time.time(),
                                    error=f"could not start the training worker: {exc}")
                raise
            finally:
                log_file.close()
            self._job_id = job["id"]
            return job

    def cancel(self, job_id: int) -> dict | None:
        with self.db.connect() as conn:
            job = repo.get_job(conn, job_id)
            if job and job["status"] in repo.ACTIVE_JOB_STATES:
                repo.update_job(conn, job_id, cancel_requested=1)
                job = repo.get_job(conn, job_id)
        return job

    def _monitor(self) -> None:
        while not self._stop.wait(0.25):
            try:
                self._check()
            except Exception:  # noqa: BLE001 - the monitor must never die
                log.exception("job monitor")

    def _check(self) -> None:
        with self._lock:
            process, job_id = self._process, self._job_id
        if process is None or process.poll() is None:
            return
        with self._lock:
            self._process, self._job_id = None, None
        with self.db.connect() as conn:
            job = repo.get_job(conn, job_id)
            if job["status"] in repo.ACTIVE_JOB_STATES:
                repo.update_job(conn, job_id, status="failed", finished_at=time.time(),
                                error=f"worker exited with code {process.returncode}; "
                                      f"see {self.logs / f'job-{job_id}.log'}")
                return
        if job["status"] == "succeeded" and job["version"]:
            try:
                live = self.registry.promote(job["version"])
            except Exception as exc:  # noqa: BLE001
                with self.db.connect() as conn:
                    repo.update_job(conn, job_id, status="failed",
                                    error=f"new version failed verification: {exc}")
                return
            with self.db.connect() as conn:
                repo.set_current_version(conn, live.version)
            log.info("model %s is live", live.version)

    def log_tail(self, job_id: int, size: int = 2000) -> str:
        path = Path(self.logs / f"job-{job_id}.log")
        if not path.exists():
            return ""
        return path.read_bytes()[-size:].decode(errors="replace")
