"""Load on the real daemon: concurrent clients POST JPEGs to /inspect, first on an idle
daemon, then while a training job runs. Reports throughput, latency, errors, and the peak
RSS of the API process and of the training worker.

Then a soak (issue 10): clients post /inspect without pause while 3 training jobs run one
after the other, and a 32-file upload of large PNGs goes in during the first job; /health
is polled every 20 ms and the daemon's systemd watchdog pings (a real NOTIFY_SOCKET) are
timed. Every job must succeed, every inspection answer 200, no /health gap reach 1 s.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
from _common import SHARED, emit_json, print_table
from _mqtt_phase import report, run_mqtt_phase
from PIL import Image
from tqdm import tqdm

from edge_runtime.daemon_process import Daemon, WatchdogListener
from edge_runtime.memory import peak_rss_mb  # the same real-server harness the tests use


class PeakRss:
    """Samples the daemon and its children; keeps each process's peak (VmHWM when known)."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.main_mb = 0.0
        self.worker_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _peak(process: psutil.Process) -> float:
        return peak_rss_mb(process.pid) or process.memory_info().rss / 2**20

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.main_mb = max(self.main_mb, self._peak(self.root))
                for child in self.root.children(recursive=True):
                    self.worker_mb = max(self.worker_mb, self._peak(child))
            except psutil.Error:
                pass

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _jpegs(data: Path) -> list[bytes]:
    out = []
    for path in sorted((data / "bottle" / "test").glob("*/00[0-4].png")):
        buffer = io.BytesIO()
        Image.open(path).convert("RGB").save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def _hammer(daemon: Daemon, jpegs: list[bytes], count: int, clients: int, desc: str):
    import httpx

    latencies, errors = [], 0
    lock = threading.Lock()
    bar = tqdm(total=count, desc=desc, unit="req")

    def worker(index: int) -> None:
        nonlocal errors
        with httpx.Client(base_url=daemon.url, timeout=30) as client:
            for i in range(index, count, clients):
                started = time.perf_counter()
                try:
                    response = client.post("/inspect", data={"product": "bottle"},
                                           files={"file": ("part.jpg", jpegs[i % len(jpegs)],
                                                           "image/jpeg")})
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed * 1000)
                    errors += not ok
                    bar.update()

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))
    wall = time.perf_counter() - started
    bar.close()
    values = np.array(latencies)
    return {"p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99)),
            "throughput_rps": count / wall, "errors": errors, "count": count}


class EventListeners:
    """``count`` clients reading GET /events (the operator's page) while the line runs."""

    def __init__(self, daemon: Daemon, count: int) -> None:
        self.daemon, self.count, self.events = daemon, count, 0
        self._stop = threading.Event()
        self._ready = threading.Barrier(count + 1) if count else None
        self._threads = [threading.Thread(target=self._listen, daemon=True)
                         for _ in range(count)]

    def _listen(self) -> None:
        import httpx

        with httpx.Client(base_url=self.daemon.url, timeout=30) as client, \
                client.stream("GET", "/events") as response:
            self._ready.wait()
            for line in response.iter_lines():
                if line.startswith("data: "):
                    self.events += 1
                if self._stop.is_set():
                    return

    def __enter__(self) -> EventListeners:
        for thread in self._threads:
            thread.start()
        if self._ready:
            self._ready.wait(30)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()  # each listener returns at its next event or keep-alive


WATCHDOG_USEC = 2_000_000  # strict: a ping each second (the unit's WatchdogSec is 30)
UPLOAD_SIDE = 2400  # px: large PNGs that decode to 17 MB each


class HealthGaps:
    """Polls /health every 20 ms; the largest time between two answers is the longest the
    daemon could not answer (a blocked event loop shows here)."""

    def __init__(self, url: str) -> None:
        self.url, self.max_gap, self.failures = url, 0.0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import httpx

        with httpx.Client(base_url=self.url, timeout=30) as client:
            last = time.monotonic()
            while not self._stop.is_set():
                try:
                    self.failures += client.get("/health").status_code != 200
                except httpx.HTTPError:
                    self.failures += 1
                now = time.monotonic()
                self.max_gap = max(self.max_gap, now - last)
                last = now
                time.sleep(0.02)

    def __enter__(self) -> HealthGaps:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _large_pngs(count: int) -> list[bytes]:
    """A ramp with stripes and sparse noise: ~0.5 MB of PNG that decodes to 17 MB."""
    rng = np.random.default_rng(0)
    rows = np.arange(UPLOAD_SIDE)[:, None]
    out = []
    for i in range(count):
        pixels = np.linspace(0, 250, UPLOAD_SIDE, dtype=np.float32)[None, :] + (rows * 7 + i) % 13
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
        pixels[::8, ::8] += rng.integers(0, 5, (UPLOAD_SIDE // 8, UPLOAD_SIDE // 8, 3))
        buffer = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


class Inspecting:
    """Clients posting /inspect without pause until stopped; counts non-2xx answers."""

    def __init__(self, daemon: Daemon, jpegs: list[bytes], clients: int) -> None:
        self.daemon, self.jpegs, self.clients = daemon, jpegs, clients
        self.count = self.errors = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True)
                         for _ in range(clients)]

    def _run(self) -> None:
        import httpx

        with httpx.Client(base_url=self.daemon.url, timeout=30) as client:
            i = 0
            while not self._stop.is_set():
                try:
                    ok = client.post("/inspect", data={"product": "bottle"}, files={
                        "file": ("p.jpg", self.jpegs[i % len(self.jpegs)], "image/jpeg")},
                    ).is_success
                except httpx.HTTPError:
                    ok = False
                self.count += 1
                self.errors += not ok
                i += 1

    def __enter__(self) -> Inspecting:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def _soak(daemon: Daemon, product_id: int, jpegs: list[bytes], args, pings) -> dict:
    c = daemon.client
    epochs = 1 if args.quick else args.soak_epochs
    uploads = _large_pngs(32)
    files = [("files", (f"{i}.png", data, "image/png")) for i, data in enumerate(uploads)]
    started = succeeded = 0
    watch_from = time.monotonic()
    with Inspecting(daemon, jpegs, args.clients) as load, HealthGaps(daemon.url) as gaps:
        for index in tqdm(range(3), desc="soak jobs", unit="job"):
            response = c.post(f"/products/{product_id}/train", json={"epochs": epochs})
            started += response.status_code == 202
            if response.status_code != 202:
                continue
            if index == 0:  # the upload lands while the first job trains
                t0 = time.perf_counter()
                uploaded = c.post(f"/products/{product_id}/captures", files=files, timeout=300)
                upload_seconds = time.perf_counter() - t0
                assert uploaded.status_code == 201, uploaded.text
            job = daemon.wait_job(response.json()["id"], timeout=1800)
            succeeded += job["status"] == "succeeded"
    return {"jobs_started": started, "jobs_succeeded": succeeded,
            "max_health_gap_ms": round(gaps.max_gap * 1000, 1),
            "health_failures": gaps.failures,
            "max_watchdog_gap_ms": round(pings.max_gap_since(watch_from) * 1000, 1),
            "soak_inspections": load.count, "soak_errors": load.errors,
            "upload_seconds": round(upload_seconds, 2),
            "upload_mb": round(sum(map(len, uploads)) / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=SHARED / "data")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=2,
                        help="concurrent clients (one per core keeps p50 free of queueing)")
    parser.add_argument("--quick", action="store_true", help="200 requests per phase")
    parser.add_argument("--no-mqtt", action="store_true", help="skip the MQTT on/off phase")
    parser.add_argument("--event-streams", type=int, default=2,
                        help="page clients on GET /events in the extra phase (0: skip it)")


    parser.add_argument("--soak-epochs", type=int, default=3,
                        help="epochs of each soak training job (--quick: 1)")
    parser.add_argument("--no-soak", action="store_true", help="skip the soak phase")
    args = parser.parse_args()
    count = 200 if args.quick else args.requests
    jpegs = _jpegs(args.data)
    root = Path(tempfile.mkdtemp())
    pings = WatchdogListener(root / "notify.sock")
    daemon = Daemon(root / "data", env={"NOTIFY_SOCKET": str(pings.path),
                                        "WATCHDOG_USEC": str(WATCHDOG_USEC)})
    daemon.start()
    try:
        c = daemon.client
        product = c.post("/products", json={"name": "bottle"}).json()
        images = sorted((args.data / "bottle" / "train" / "good").glob("*.png"))[:48]
        daemon.upload(product["id"], images)
        job = daemon.train(product["id"], epochs=2)
        daemon.wait_live(job["version"])
        with PeakRss(daemon.process.pid) as peak:
            idle = _hammer(daemon, jpegs, count, args.clients, "idle")
            streamed = None
            if args.event_streams:
                with EventListeners(daemon, args.event_streams) as listeners:
                    streamed = _hammer(daemon, jpegs, count, args.clients, "event streams")
                streamed["events"] = listeners.events
            response = c.post(f"/products/{product['id']}/train", json={"epochs": 100})
            assert response.status_code == 202, response.text
            training = response.json()
            while c.get(f"/jobs/{training['id']}").json()["phase"] != "training":
                time.sleep(0.1)
            busy = _hammer(daemon, jpegs, count, args.clients, "during training")
            still = c.get(f"/jobs/{training['id']}").json()["status"]
            c.post(f"/jobs/{training['id']}/cancel")
            daemon.wait_job(training["id"])
            main_rss = peak.main_mb
        soak = None if args.no_soak else _soak(daemon, product["id"], jpegs, args, pings)
    finally:
        daemon.stop()
        pings.close()
    mqtt = {} if args.no_mqtt else run_mqtt_phase(daemon.data_dir, jpegs, count, args.clients,
                                                  _hammer)
    rows = [["idle", idle["p50_ms"], idle["p99_ms"], idle["throughput_rps"], idle["errors"]],
            ["during training", busy["p50_ms"], busy["p99_ms"], busy["throughput_rps"],
             busy["errors"]]]
    if streamed:
        rows.insert(1, [f"idle, {args.event_streams} event streams", streamed["p50_ms"],
                        streamed["p99_ms"], streamed["throughput_rps"], streamed["errors"]])
    print(f"{count} JPEG inspections per phase, {args.clients} concurrent clients, "
          f"client and server on the same 2 cores")
    print_table(["phase", "p50 ms", "p99 ms", "inspections/s", "errors"], rows)
    print(f"training job still running at the end of the loaded phase: {still == 'running'}")
    print(f"peak RSS: API process {main_rss:.0f} MB (target <= 150), "
          f"training worker {peak.worker_mb:.0f} MB")
    print("targets: p50 <= 25 ms, >= 60 inspections/s idle, 0 errors during training")
    mqtt_keys = report(mqtt) if mqtt else {}
    if soak:
        print(f"soak: {soak['jobs_succeeded']}/{soak['jobs_started']} training jobs succeeded "
              f"while {args.clients} clients posted /inspect ({soak['soak_inspections']} "
              f"inspections, {soak['soak_errors']} non-2xx); a 32-file upload of "
              f"{soak['upload_mb']:.0f} MB of {UPLOAD_SIDE}x{UPLOAD_SIDE} PNGs took "
              f"{soak['upload_seconds']:.1f} s")
        print(f"largest gap between /health answers: {soak['max_health_gap_ms']:.0f} ms "
              f"(target < 1000); between watchdog pings: {soak['max_watchdog_gap_ms']:.0f} ms "
              f"(WATCHDOG_USEC {WATCHDOG_USEC // 1000} ms, pings every half of it)")
    emit_json({
        "p50_ms": round(idle["p50_ms"], 2), "p99_ms": round(idle["p99_ms"], 2),
        "throughput_rps": round(idle["throughput_rps"], 1),
        "p50_ms_during_training": round(busy["p50_ms"], 2),
        "p99_ms_during_training": round(busy["p99_ms"], 2),
        "throughput_rps_during_training": round(busy["throughput_rps"], 1),
        "errors": idle["errors"] + busy["errors"] + (streamed["errors"] if streamed else 0),
        "main_rss_mb": round(main_rss, 1), "worker_peak_rss_mb": round(peak.worker_mb, 1),
        "training_overlapped": still == "running",
        "p50_ms_with_event_streams": round(streamed["p50_ms"], 2) if streamed else None,
        "events_delivered": streamed["events"] if streamed else None,
    } | mqtt_keys | (soak or {}))


if __name__ == "__main__":
    main()
