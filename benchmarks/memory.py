"""Memory of the daemon while it learns a product: does it fit a 1 GB board?

Starts a real daemon, uploads bottle captures and trains it (job 1, no replay), then
uploads captures of a second product and trains that (job 2, with replay of bottle) while
a client inspects bottle parts. The RSS of the API process and of the training worker are
sampled every 100 ms; each sample is attributed to the job's phase (read from the jobs
table, so the sampling puts no load on the API). A phase's peak is the largest sample, or
the process's kernel high-water mark (VmHWM) when that rose during the phase, so a spike
between two samples is not missed. Then, each in a child process sampled the same way:

- the STFPM-equivalent training worker (the same recipe with ``ModelSpec.stfpm()``, raw
  image replay), for the papers' PaSTe / STFPM training-memory ratio;
- PaSTe epochs as the code trained before (teacher tail recomputed every step, student in
  NCHW), with the teacher's outputs cached once per image and per replayed sample, with the
  student also in channels-last (the library's default), and as the daemon trains
  (``training.low_memory``: block checkpointing, and the teacher run each step again,
  which with recomputed blocks costs no time), interleaved, same data, same seed,
  with the largest difference between the loss curves.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from _common import (
    REPO,
    SHARED,
    current_peak_rss_mb,
    emit_json,
    print_table,
    reset_peak_rss,
)
from tqdm import tqdm

from edge_runtime.memory import peak_rss_mb, preload_env
from edge_runtime.settings import Settings

PHASES = ["start", "features", "training", "saving", "calibrating", "promoting", "idle"]
WORKER_PHASES = {"promoting": "promoting", "trained": "promoting"}  # the rest: "start"
MB = 2**20


def _hwm_mb(pid: int) -> float:
    return peak_rss_mb(pid) or 0.0


class Track:
    """RSS samples of one process, each tagged with a phase; peaks per phase."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, str, float, float]] = []  # (t, phase, rss, hwm)

    def add(self, t: float, phase: str, pid: int | None) -> float:
        if pid is None:
            return 0.0
        try:
            rss = psutil.Process(pid).memory_info().rss / MB
        except psutil.Error:
            return 0.0
        self.samples.append((t, phase, rss, _hwm_mb(pid)))
        return rss

    def peaks(self) -> dict[str, float]:
        out: dict[str, float] = {}
        previous_hwm, previous_phase = 0.0, None
        for _, phase, rss, hwm in self.samples:
            peak = max(out.get(phase, 0.0), rss)
            if hwm > previous_hwm and previous_phase in (phase, None):
                peak = max(peak, hwm)  # the high-water mark rose within this phase
            out[phase] = peak
            previous_hwm, previous_phase = max(previous_hwm, hwm), phase
        return out

    def peak(self) -> float:
        return max((max(rss, hwm) for _, _, rss, hwm in self.samples), default=0.0)


class Sampler:
    """Every 100 ms: the job's phase, the API's RSS and the worker's RSS."""

    def __init__(self, api_pid: int, db: Path) -> None:
        self.api_pid, self.db = api_pid, db
        self.job_id: int | None = None
        self.label = "setup"
        self.api, self.worker = Track(), Track()
        self.totals: list[tuple[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _phase(self) -> tuple[str, int | None]:
        if self.job_id is None:
            return "start", None
        uri = f"file:{self.db}?mode=ro"
        with sqlite3.connect(uri, uri=True, timeout=1) as conn:
            status, phase, pid = conn.execute(
                "SELECT status, phase, pid FROM jobs WHERE id = ?", (self.job_id,)).fetchone()
        if status not in ("queued", "running"):
            return "idle", None
        return (phase if phase in PHASES else WORKER_PHASES.get(phase, "start")), pid

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                phase, pid = self._phase()
            except sqlite3.Error:
                continue
            t = time.monotonic()
            tag = f"{self.label}:{phase}"
            total = self.api.add(t, tag, self.api_pid) + self.worker.add(t, tag, pid)
            self.totals.append((tag, total))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _inspect_forever(daemon, product: str, images: list[Path], stop: threading.Event,
                     counts: dict) -> None:
    """A slow line: one part every 250 ms, so the API serves while the worker learns."""
    import httpx

    with httpx.Client(base_url=daemon.url, timeout=30) as client:
        index = 0
        while not stop.wait(0.25):
            path = images[index % len(images)]
            index += 1
            try:
                ok = client.post("/inspect", data={"product": product},
                                 files={"file": (path.name, path.read_bytes(), "image/png")}
                                 ).status_code == 200
            except httpx.HTTPError:
                ok = False
            counts["ok" if ok else "errors"] += 1


def _train(daemon, sampler: Sampler, label: str, product_id: int, epochs: int,
           timeout: float) -> tuple[dict, float]:
    """POST train -> the new version serving; seconds that took."""
    started = time.monotonic()
    response = daemon.client.post(f"/products/{product_id}/train", json={"epochs": epochs})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    sampler.label, sampler.job_id = label, job_id
    deadline = started + timeout
    with tqdm(desc=f"{label}", unit="step", leave=False) as bar:
        while time.monotonic() < deadline:
            job = daemon.client.get(f"/jobs/{job_id}").json()
            if job.get("steps"):
                bar.total = job["epochs"] * job["steps"]
                bar.n = (job["epoch"] - 1) * job["steps"] + job["step"]
                bar.set_postfix(phase=job["phase"])
                bar.refresh()
            if job["status"] not in ("queued", "running"):
                break
            time.sleep(0.3)
    assert job["status"] == "succeeded", job
    daemon.wait_live(job["version"], timeout=30)
    return job, time.monotonic() - started


def run_daemon(args: argparse.Namespace) -> dict:
    from edge_runtime.daemon_process import Daemon
    from edge_runtime.dataset import test_samples, train_images

    data_dir = Path(tempfile.mkdtemp(prefix="edge-memory-")) / "data"
    daemon = Daemon(data_dir)
    daemon.start(timeout=120)
    first = train_images(args.data, "bottle", args.captures)
    second = train_images(args.data, args.second, args.captures)
    parts = [s.image for s in test_samples(args.data, "bottle", 3)]
    stop, counts = threading.Event(), {"ok": 0, "errors": 0}
    try:
        with Sampler(daemon.process.pid, data_dir / "state.db") as sampler:
            c = daemon.client
            p1 = c.post("/products", json={"name": "bottle"}).json()
            p2 = c.post("/products", json={"name": args.second}).json()
            for product, images in ((p1, first), (p2, second)):
                for start in range(0, len(images), 20):
                    assert daemon.upload(product["id"], images[start : start + 20]).is_success
            time.sleep(1.0)  # the API at rest, captures stored: the "start" row
            job1, _ = _train(daemon, sampler, "bottle", p1["id"], args.epochs, args.timeout)
            time.sleep(1.0)
            line = threading.Thread(target=_inspect_forever,
                                    args=(daemon, "bottle", parts, stop, counts), daemon=True)
            line.start()
            job2, learn_seconds = _train(daemon, sampler, args.second, p2["id"], args.epochs,
                                         args.timeout)
            time.sleep(args.idle)  # idle: both products served, worker gone
            stop.set()
            line.join()
            status = c.get("/status").json()
    finally:
        stop.set()
        daemon.stop()
        shutil.rmtree(data_dir.parent, ignore_errors=True)
    return {"sampler": sampler, "learn_seconds": learn_seconds, "jobs": [job1, job2],
            "inspections": counts, "status": status}


def run_child(mode: str, args: argparse.Namespace) -> tuple[float, dict]:
    """A child process of this script, sampled every 100 ms; (peak RSS MB, its JSON)."""
    cmd = [sys.executable, __file__, "--child", mode, "--captures", str(args.captures),
           "--epochs", str(args.child_epochs), "--second", args.second,
           "--data", str(args.data)]
    env = preload_env(Settings().training.allocator, os.environ)  # as the daemon's worker
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO, env=env)
    track = Track()
    while process.poll() is None:
        track.add(time.monotonic(), mode, process.pid)
        time.sleep(0.1)
    out = process.stdout.read().strip().splitlines()
    if process.returncode or not out:
        raise RuntimeError(f"child {mode} failed with {process.returncode}")
    return track.peak(), json.loads(out[-1])


# ------------------------------------------------------------------ child processes
def child_stfpm(args: argparse.Namespace) -> dict:
    """The daemon's two jobs as STFPM would run them: same recipe, raw-image replay."""
    from edge_runtime.dataset import train_images
    from edge_runtime.model.torch_model import ModelSpec
    from edge_runtime.training.bundle import ModelBundle
    from edge_runtime.training.continual import ContinualTrainer
    from edge_runtime.training.loop import TrainConfig
    from edge_runtime.training.recipe import learn_product

    work = Path(tempfile.mkdtemp(prefix="edge-stfpm-"))
    bundle = ModelBundle(ModelSpec.stfpm(), threads=1, work_dir=work)
    trainer = ContinualTrainer(bundle, "replay", "image", work / "replay", 100,
                               TrainConfig(epochs=args.epochs),
                               low_memory=Settings().training.low_memory)  # as the daemon
    first = train_images(args.data, "bottle", args.captures)
    second = train_images(args.data, args.second, args.captures)
    learn_product(trainer, "bottle", first, work / "v1")
    learned = learn_product(trainer, args.second, second, work / "v2", {"bottle": first})
    shutil.rmtree(work, ignore_errors=True)
    return {"epochs_run": learned.result.epochs_run}


def child_epochs(args: argparse.Namespace) -> dict:
    """Seconds per PaSTe epoch with the teacher recomputed each step vs cached targets."""
    import copy

    import numpy as np

    from edge_runtime.dataset import train_images
    from edge_runtime.memory import trim_heap
    from edge_runtime.replay.codecs import make_codec
    from edge_runtime.replay.store import ReplayStore
    from edge_runtime.training.bundle import ModelBundle
    from edge_runtime.training.loop import StudentTrainer, TrainConfig, holdout_split

    work = Path(tempfile.mkdtemp(prefix="edge-epochs-"))
    bundle = ModelBundle(threads=1, work_dir=work)
    features = bundle.features(train_images(args.data, args.second, args.captures))
    store = ReplayStore(work / "replay", make_codec("uint8_channel"), 100, 0)
    store.add("earlier", features)  # stands in for an earlier product's replay samples
    config = TrainConfig(epochs=3)  # seconds per epoch are steady after the first
    train, val = holdout_split(len(features), config.val_fraction, config.seed)
    initial = copy.deepcopy(bundle.student.state_dict())
    # (cache targets, channels-last, block checkpoints)
    variants = {"before": (False, False, False), "cached": (True, False, False),
                "nhwc": (True, True, False), "daemon": (False, True, True)}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    curves: dict[str, list[float]] = {}
    peaks: dict[str, float] = {}
    for _ in range(2):  # interleaved rounds: the machine's load hits all alike
        for name, (cache, channels_last, checkpoint) in variants.items():
            bundle.student.load_state_dict(initial)
            trainer = StudentTrainer(bundle.teacher, bundle.student, config,
                                     cache_targets=cache, channels_last=channels_last,
                                     checkpoint=checkpoint)
            trim_heap()
            start_mb = psutil.Process().memory_info().rss / MB
            reset_peak_rss()
            result = trainer.fit(features[train], features[val], store)
            peaks[name] = max(peaks.get(name, 0.0), current_peak_rss_mb() - start_mb)
            seconds[name].append(result.seconds / result.epochs_run)
            curves[name] = [h["loss"] for h in result.history]
    shutil.rmtree(work, ignore_errors=True)
    def diff(name: str) -> float:
        return float(np.max(np.abs(np.subtract(curves["before"], curves[name]))))

    return {"epoch_seconds": {name: float(np.median(s)) for name, s in seconds.items()},
            "fit_peak_increase_mb": peaks, "loss": curves,
            "loss_max_abs_diff": {name: diff(name) for name in variants},
            "train_images": int(len(train)), "epochs": config.epochs}


# ------------------------------------------------------------------ report
def _phase_rows(sampler: Sampler, label: str) -> list[list[object]]:
    api, worker = sampler.api.peaks(), sampler.worker.peaks()
    totals: dict[str, float] = {}
    for tag, total in sampler.totals:
        totals[tag] = max(totals.get(tag, 0.0), total)
    rows = []
    for phase in PHASES:
        tag = f"{label}:{phase}"
        if tag in api or tag in worker:
            rows.append([phase, round(api.get(tag, 0.0)), round(worker.get(tag, 0.0)) or "-",
                         round(totals.get(tag, 0.0))])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data")
    parser.add_argument("--captures", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--second", default="magnetic_tile", help="the second product")
    parser.add_argument("--idle", type=float, default=3.0, help="seconds sampled at the end")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--quick", action="store_true", help="40 captures, 2 epochs")
    parser.add_argument("--child", choices=["stfpm", "epochs"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = child_stfpm(args) if args.child == "stfpm" else child_epochs(args)
        print(json.dumps(result), flush=True)
        return
    if args.quick:
        args.captures, args.epochs, args.idle = 40, 2, 2.0
    args.child_epochs = 1  # the STFPM peak comes in the first steps
    daemon = run_daemon(args)
    sampler = daemon["sampler"]
    stfpm_peak, _ = run_child("stfpm", args)
    _, epochs = run_child("epochs", args)

    print(f"Peak RSS (MB) per phase, sampled every 100 ms; {args.captures} captures per "
          f"product, {args.epochs} epochs, replay of 100 samples in job 2")
    for label in ("bottle", args.second):
        print(f"\njob: {label}" + (" (with replay; inspections of bottle every 250 ms)"
                                    if label != "bottle" else ""))
        print_table(["phase", "API", "worker", "API+worker"], _phase_rows(sampler, label))
    worker_peak = sampler.worker.peak()
    api_during = max((v for k, v in sampler.api.peaks().items()
                      if k.startswith(args.second)), default=0.0)
    total = max((t for _, t in sampler.totals), default=0.0)
    print(f"\nAPI process peak {sampler.api.peak():.0f} MB (whole run), {api_during:.0f} MB "
          f"while serving during job 2; inspections {daemon['inspections']}")
    print(f"/status at the end: rss_mb {daemon['status'].get('rss_mb')}, "
          f"worker {daemon['status'].get('worker')}")
    print_table(["training worker", "peak RSS MB"],
                [["PaSTe (daemon worker)", round(worker_peak)],
                 [f"STFPM ({args.child_epochs} epoch(s) per product, same recipe)",
                  round(stfpm_peak)],
                 ["PaSTe / STFPM", f"{worker_peak / stfpm_peak:.2f}"]])
    seconds, increase = epochs["epoch_seconds"], epochs["fit_peak_increase_mb"]
    before = seconds["before"]
    labels = {"before": "teacher each step, NCHW (before)",
              "cached": "teacher cached, NCHW",
              "nhwc": "teacher cached, NHWC (library default)",
              "daemon": "teacher each step, NHWC, block checkpoints (daemon)"}
    print(f"\nPaSTe epochs: {epochs['train_images']} images + replay, {epochs['epochs']} "
          "epochs per variant, 2 interleaved rounds, 1 thread")
    print_table(["training variant (same data, seed)", "epoch s", "speed-up",
                 "max |loss - before|", "peak RSS above start MB"],
                [[label, round(seconds[name], 3), f"{before / seconds[name]:.2f}x",
                  f"{epochs['loss_max_abs_diff'][name]:.1e}", round(increase[name])]
                 for name, label in labels.items()])
    print(f"learn_seconds (POST train -> v serving, {args.second}, with replay): "
          f"{daemon['learn_seconds']:.1f}")
    print("targets: worker <= 400 MB, API during a job <= 120 MB, API+worker <= 512 MB, "
          "learn <= 120 s (200 captures, 10 epochs), epoch >= 1.25x faster")
    emit_json({
        "worker_peak_rss_mb": round(worker_peak, 1),
        "api_peak_rss_mb": round(api_during, 1),
        "total_peak_rss_mb": round(total, 1),
        "stfpm_worker_peak_rss_mb": round(stfpm_peak, 1),
        "epoch_seconds": round(seconds["daemon"], 3),
        "epoch_seconds_before": round(before, 3),
        "epoch_seconds_cached_nchw": round(seconds["cached"], 3),
        "epoch_seconds_nhwc": round(seconds["nhwc"], 3),
        "learn_seconds": round(daemon["learn_seconds"], 1),
        "captures": args.captures, "epochs": args.epochs,
    })


if __name__ == "__main__":
    main()
