"""Training jobs: one at a time, each in a worker process; promotion on success.

A job ends in one recoverable step: the worker writes a complete version directory (the
model and the replay store it trained, ``models/v<job>/replay``) and reports phase
"trained"; the API promotes it (CURRENT, replaced atomically, makes model and store live
together) and only then marks the job "succeeded". After a crash at any point, ``recover``
finishes a trained job's promotion or discards its version: never a succeeded job whose
model does not serve, never a live store that knows a product the live model does not.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence

from edge_runtime.atomic import atomic_write_bytes
from edge_runtime.data_layout import REPLAY_DIR
from edge_runtime.inference import model_dir as md
from edge_runtime.memory import preload_env
from edge_runtime.replay.accounting import MANIFEST as REPLAY_MANIFEST
from edge_runtime.services import events
from edge_runtime.services.errors import JobConflictError, TooFewCapturesError, found
from edge_runtime.services.models import ModelRegistry
from edge_runtime.services.products import STUDENT, override_recalibrated, override_set_for
from edge_runtime.settings import Settings
from edge_runtime.storage import repositories as repo
from edge_runtime.storage.db import Database

log = logging.getLogger("edge_runtime.jobs")
SPAWN_TIMEOUT_S = 30.0
INTERRUPTED = "the daemon stopped while this job ran; start training again"


class _SpawnRequest:
    """A worker for the monitor thread to start; the asking request thread waits."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        self.done = threading.Event()
        self.process: subprocess.Popen | None = None
        self.error: Exception | None = None

    def run(self, spawn: Callable[[int], subprocess.Popen]) -> None:
        try:
            self.process = spawn(self.job_id)
        except Exception as exc:  # noqa: BLE001 - handed to the asking thread
            self.error = exc
        finally:
            self.done.set()


def with_result(job: dict) -> dict:
    """The job row with its JSON ``result`` decoded."""
    raw = job.get("result")
    return job | {"result": json.loads(raw) if raw else None}


def promotion_result(old: dict, new: dict, old_version: str | None, version: str,
                     products: Sequence[dict] = ()) -> dict:
    """What a new version changed: every product's thresholds, and which moved (an
    operator must be told: a moved threshold changes verdicts; they may keep the old one
    with PUT /products/{id}/threshold), and whose override on the student's old scale is
    set aside by it (``products``: their rows)."""
    changes = {}
    for name, thresholds in new.items():
        previous = old.get(name)
        if previous is not None and abs(previous.image - thresholds.image) > 1e-12:
            changes[name] = {"old": previous.image, "new": thresholds.image,
                             "ratio": round(thresholds.image / previous.image, 4)}
    set_aside = {
        p["name"]: p["image_threshold_override"] for p in products
        if p["name"] in old and p["name"] in new and override_set_for(p) == STUDENT
        and not override_recalibrated(p, old[p["name"]])
        and override_recalibrated(p, new[p["name"]])}
    return {"version": version, "previous_version": old_version,
            "products": sorted(new),
            "thresholds": {name: t.to_dict() for name, t in sorted(new.items())},
            "threshold_changes": changes, "overrides_set_aside": set_aside}


class JobManager:
    def __init__(self, settings: Settings, db: Database, registry: ModelRegistry,
                 bus: events.EventBus) -> None:
        self.settings, self.db, self.registry, self.bus = settings, db, registry, bus
        self.layout = settings.layout
        self._lock = threading.Lock()
        self._submitting = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._job_id: int | None = None
        self._last_seen: dict | None = None
        self._stop = threading.Event()
        self._spawns: queue.Queue[_SpawnRequest] = queue.Queue()
        self._thread = threading.Thread(target=self._monitor, name="jobs", daemon=True)

    def recover(self) -> int:
        """At start-up: promote a job whose worker finished (the daemon died before it
        could), fail the others (a job running when the daemon died can never finish).
        Returns how many jobs were failed."""
        with self.db.connect() as conn:
            interrupted = repo.active_jobs(conn)
        failed = 0
        for job in interrupted:
            if job["phase"] == repo.TRAINED_PHASE and job["version"]:
                log.warning("job %d finished training before a restart; promoting %s",
                            job["id"], job["version"])
                if self._finish(job["id"], job["version"]):
                    continue
            else:
                self._fail(job["id"], INTERRUPTED)
            failed += 1
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
        with self._submitting:  # not self._lock: the monitor takes that one while we wait
            job = self._create(product, params)
            try:
                process = self._spawn_from_monitor(job["id"])
            except OSError as exc:  # a job that never started must not block the queue
                self._fail(job["id"], f"could not start the training worker: {exc}")
                raise
            with self._lock:
                self._process, self._job_id = process, job["id"]
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

    def _spawn_from_monitor(self, job_id: int) -> subprocess.Popen:
        """The worker's parent-death signal follows the *thread* that forked it. A request
        runs in a pool thread that the pool retires when idle, which killed the worker
        mid-job; the monitor thread lives as long as the daemon, so it forks."""
        if not self._thread.is_alive():  # no monitor (before start-up finished)
            return self._spawn(job_id)
        request = _SpawnRequest(job_id)
        self._spawns.put(request)
        if not request.done.wait(SPAWN_TIMEOUT_S):
            raise OSError("the job monitor did not start the worker in time")
        if request.error is not None:
            raise request.error
        return request.process

    def _spawn(self, job_id: int) -> subprocess.Popen:
        """The worker reads its settings from a file only the service user can read."""
        settings_file = self.layout.job_settings(job_id)
        atomic_write_bytes(settings_file, self.settings.to_json().encode())  # mode 0600
        self.layout.logs.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "edge_runtime.workers.train_worker",
               "--job", str(job_id), "--settings-file", str(settings_file),
               "--parent", str(os.getpid())]
        env = preload_env(self.settings.training.allocator, os.environ)
        if self.settings.training.allocator == "tcmalloc" and "LD_PRELOAD" not in env:
            log.warning("training.allocator is tcmalloc but libtcmalloc_minimal is not "
                        "installed (apt install libtcmalloc-minimal4): the worker uses "
                        "glibc's malloc, ~100 MB more at its peak")
        with open(self.layout.job_log(job_id), "ab") as log_file:
            return subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env)

    def cancel(self, job_id: int) -> dict:
        with self.db.connect() as conn:
            job = repo.get_job(conn, job_id)
            if job and job["status"] in repo.ACTIVE_JOB_STATES:
                repo.update_job(conn, job_id, cancel_requested=1)
                job = repo.get_job(conn, job_id)
        return found(job, f"no job with id {job_id}")

    def _monitor(self) -> None:
        while not self._stop.is_set():
            try:
                request = self._spawns.get(timeout=0.25)
            except queue.Empty:
                request = None
            try:
                if request is not None:
                    request.run(self._spawn)
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
        job = self.get(job_id)
        if job["status"] in repo.ACTIVE_JOB_STATES:
            if job["phase"] == repo.TRAINED_PHASE and job["version"]:
                self._finish(job_id, job["version"])
            else:
                self._fail(job_id, f"worker exited with code {process.returncode}"
                                   f"{self._last_log_line(job_id)}; see "
                                   f"{self.layout.job_log(job_id)}")
        elif job["status"] != "succeeded":  # the worker recorded its own failure or cancel
            self._discard(job_id)
        self._publish_progress(job_id)

    def _finish(self, job_id: int, version: str) -> bool:
        """Promote a trained version (model and replay store), then, only then, say the
        job succeeded. Safe to repeat: recovery may run it again after a crash."""
        before = self.registry.live
        try:
            store = self.layout.models / version / REPLAY_DIR / REPLAY_MANIFEST
            if not store.is_file():
                raise md.ModelDirError(f"{store} is missing")
            live = self.registry.promote(version)
        except Exception as exc:  # noqa: BLE001 - any failure fails the job, not the daemon
            log.error("job %d: version %s cannot be promoted: %s", job_id, version, exc)
            self._fail(job_id, f"new version failed verification: {exc}")
            return False
        with self.db.connect(write=False) as conn:
            products = repo.list_products(conn)
        result = promotion_result(before.manifest.thresholds if before else {},
                                  live.manifest.thresholds, before.version if before else None,
                                  live.version, products)
        with self.db.connect() as conn:
            repo.update_job(conn, job_id, only_if_active=True, status="succeeded",
                            finished_at=time.time(), phase="done", percent=100.0,
                            eta_seconds=0.0, result=json.dumps(result))
        log.info("model %s is live%s%s", live.version, "".join(
            f"; {name} threshold {c['old']:.5g} -> {c['new']:.5g}"
            for name, c in result["threshold_changes"].items()), "".join(
            f"; {name}'s operator override set aside (set on the old calibration)"
            for name in result["overrides_set_aside"]))
        self.bus.publish(events.MODEL, {"job_id": job_id, **result})
        return True

    def _fail(self, job_id: int, error: str) -> None:
        """Mark a job failed and drop the version directory it may have left behind
        (never the live one), so no fallback ever serves an unpromoted model."""
        with self.db.connect() as conn:
            repo.update_job(conn, job_id, only_if_active=True, status="failed",
                            finished_at=time.time(), error=error)
        self._discard(job_id)

    def _discard(self, job_id: int) -> None:
        """Remove the version directory a job that did not succeed may have left."""
        version = f"v{job_id:06d}"
        live = self.registry.live
        if (live is None or live.version != version) and \
                md.current_version(self.layout.models) != version:
            shutil.rmtree(self.layout.models / version, ignore_errors=True)

    def _last_log_line(self, job_id: int) -> str:
        """The worker's last words (its exception): a job says more than an exit code."""
        try:
            with open(self.layout.job_log(job_id), "rb") as handle:
                handle.seek(max(0, handle.seek(0, os.SEEK_END) - 4096))
                lines = handle.read().decode(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return f" ({lines[-1].strip()[:300]})" if lines else ""

    def _publish_progress(self, job_id: int) -> None:
        job = self.get(job_id)
        if job != self._last_seen:
            self._last_seen = job
            self.bus.publish(events.JOB, {k: v for k, v in job.items() if k != "pid"})
