"""Load on the real daemon: concurrent clients POST JPEGs to /inspect, first on an idle
daemon, then while a training job runs. Reports throughput, latency, errors, and the peak
RSS of the API process and of the training worker.
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

from edge_runtime.daemon_process import Daemon  # the same real-server harness the tests use


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
        try:
            with open(f"/proc/{process.pid}/status") as handle:
                for line in handle:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return process.memory_info().rss / 2**20

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
    args = parser.parse_args()
    count = 200 if args.quick else args.requests
    jpegs = _jpegs(args.data)
    daemon = Daemon(Path(tempfile.mkdtemp()) / "data")
    daemon.start()
    try:
        c = daemon.client
        product = c.post("/products", json={"name": "bottle"}).json()
        images = sorted((args.data / "bottle" / "train" / "good").glob("*.png"))[:48]
        daemon.upload(product["id"], images)
        job = daemon.wait_job(c.post(f"/products/{product['id']}/train",
                                     json={"epochs": 2}).json()["id"])
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
    finally:
        daemon.stop()
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
    } | mqtt_keys)


if __name__ == "__main__":
    main()
