"""Training jobs: one at a time, each in a worker process; promotion on success."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time

from edge_runtime.atomic import atomic_write_bytes
from edge_runtime.services import events
from edge_runtime.services.errors import JobConflictError, TooFewCapturesError, found
from edge_runtime.services.models import ModelRegistry
from edge_runtime.settings import Settings
from edge_runtime.storage import repositories as repo
from edge_runtime.storage.db import Database

log = logging.getLogger("edge_runtime.jobs")


def with_result(job: dict) -> dict:
    """The job row with its JSON ``result`` decoded."""
    raw = job.get("result")
    return job | {"result": json.loads(raw) if raw else None}


def promotion_result(old: dict, new: dict, old_version: str | None, version: str) -> dict:
    """What a new version changed: every product's thresholds, and which moved (an
    operator must be told: a moved threshold changes verdicts; they may keep the old one
    with PUT /products/{id}/threshold)."""
    changes = {}
    for name, thresholds in new.items():
        previous = old.get(name)
        if previous is not None and abs(previous.image - thresholds.image) > 1e-12:
            changes[name] = {"old": previous.image, "new": thresholds.image,
                             "ratio": round(thresholds.image / previous.image, 4)}
    return {"version": version, "previous_version": old_version,
            "products": sorted(new),
            "thresholds": {name: t.to_dict() for name, t in sorted(new.items())},
            "threshold_changes": changes}


class JobManager:
    def __init__(self, settings: Settings, db: Database, registry: ModelRegistry,
                 bus: events.EventBus) -> None:
        self.settings, self.db, self.registry, self.bus = settings, db, registry, bus
        self.layout = settings.layout
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._job_id: int | None = None
        self._last_seen: dict | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._monitor, name="jobs", daemon=True)

    def recover(self) -> int:
        """At start-up: a job that was running when the daemon died can never finish."""
        with self.db.connect() as conn:
            failed = repo.fail_interrupted_jobs(
                conn, "the daemon stopped while this job ran; start training again")
        if failed:
            log.warning("marked %d interrupted training job(s) as failed", failed)
        return failed

    def start_monitor(self) -> None:
        self._thread.start()

    def shutdown(self) -> None:
        self._stop.set()
        with self._lock:
            if self._process and self._process.poll() is None:
                self._process.terminate()

    def get(self, job_id: int) -> dict:
        with self.db.connect(write=False) as conn:
            return with_result(found(repo.get_job(conn, job_id), f"no job with id {job_id}"))

    def list(self, limit: int = 20, offset: int = 0) -> list[dict]:
        with self.db.connect(write=False) as conn:
            return [with_result(job) for job in repo.list_jobs(conn, limit, offset)]

    def active(self) -> dict | None:
        with self.db.connect(write=False) as conn:
            return repo.active_job(conn)

    def submit(self, product: dict, params: dict) -> dict:
        with self._lock:
            job = self._create(product, params)
            try:
                self._process = self._spawn(job["id"])
            except OSError as exc:  # a job that never started must not block the queue
                with self.db.connect() as conn:
                    repo.update_job(conn, job["id"], status="failed", finished_at=time.time(),
                                    error=f"could not start the training worker: {exc}")
                raise
            self._job_id = job["id"]
            return job

    def _create(self, product: dict, params: dict) -> dict:
        minimum = self.settings.training.min_captures
        with self.db.connect() as conn:
            if repo.active_job(conn):
                raise JobConflictError("another training job is running; wait for it or "
                                       "cancel it")
            count = repo.count_captures(conn, product["id"])
            if count < minimum:
                raise TooFewCapturesError(f"product {product['name']!r} has {count} captures; "
                                          f"training needs at least {minimum}")
            return repo.create_job(conn, product["id"], params)

    def _spawn(self, job_id: int) -> subprocess.Popen:
        """The worker reads its settings from a file only the service user can read."""
        settings_file = self.layout.job_settings(job_id)
        atomic_write_bytes(settings_file, self.settings.to_json().encode())  # mode 0600
        self.layout.logs.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "edge_runtime.workers.train_worker",
               "--job", str(job_id), "--settings-file", str(settings_file)]
        with open(self.layout.job_log(job_id), "ab") as log_file:
            return subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)

    def cancel(self, job_id: int) -> dict:
        with self.db.connect() as conn:
            job = repo.get_job(conn, job_id)
            if job and job["status"] in repo.ACTIVE_JOB_STATES:
                repo.update_job(conn, job_id, cancel_requested=1)
                job = repo.get_job(conn, job_id)
        return found(job, f"no job with id {job_id}")

    def _monitor(self) -> None:
        while not self._stop.wait(0.25):
            try:
                self._check()
            except Exception:  # noqa: BLE001 - the monitor must never die
                log.exception("job monitor")

    def _check(self) -> None:
        with self._lock:
            process, job_id = self._process, self._job_id
        if process is None:
            return
        if process.poll() is None:
            self._publish_progress(job_id)
            return
        with self._lock:
            self._process, self._job_id = None, None
        self.layout.job_settings(job_id).unlink(missing_ok=True)
        with self.db.connect(write=False) as conn:
            job = repo.get_job(conn, job_id)
        if job["status"] in repo.ACTIVE_JOB_STATES:
            if process.returncode == 0 and job["version"]:
                self._promote(job_id, job["version"])  # "succeeded" only once it serves
            else:
                with self.db.connect() as conn:
                    repo.update_job(conn, job_id, only_if_active=True, status="failed",
                                    finished_at=time.time(),
                                    error=f"worker exited with code {process.returncode}; "
                                          f"see {self.layout.job_log(job_id)}")
        self._publish_progress(job_id)

    def _promote(self, job_id: int, version: str) -> None:
        before = self.registry.live
        try:
            live = self.registry.promote(version)
        except Exception as exc:  # noqa: BLE001
            with self.db.connect() as conn:
                repo.update_job(conn, job_id, status="failed", finished_at=time.time(),
                                error=f"new version failed verification: {exc}")
            return
        result = promotion_result(before.manifest.thresholds if before else {},
                                  live.manifest.thresholds, before.version if before else None,
                                  live.version)
        with self.db.connect() as conn:
            repo.update_job(conn, job_id, status="succeeded", finished_at=time.time(),
                            phase="done", percent=100.0, eta_seconds=0.0,
                            result=json.dumps(result))
        log.info("model %s is live%s", live.version, "".join(
            f"; {name} threshold {c['old']:.5g} -> {c['new']:.5g}"
            for name, c in result["threshold_changes"].items()))
        self.bus.publish(events.MODEL, {"job_id": job_id, **result})

    def _publish_progress(self, job_id: int) -> None:
        job = self.get(job_id)
        if job != self._last_seen:
            self._last_seen = job
            self.bus.publish(events.JOB, {k: v for k, v in job.items() if k != "pid"})
