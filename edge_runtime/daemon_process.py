"""A real daemon on loopback: `edge-runtime serve` as a child process, driven over HTTP.

For integration tests, benchmarks and smoke checks on a board (needs httpx, a test extra).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Daemon:
    def __init__(self, data_dir: Path, env: dict | None = None, args: list[str] | None = None):
        self.data_dir, self.port = Path(data_dir), free_port()
        self.env = os.environ | {"EDGE_RUNTIME_TRAINING_THREADS": "1"} | (env or {})
        self.args = args or []
        self.process: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def start(self, timeout: float = 30) -> float:
        """Start and wait until /health answers; return the seconds that took."""
        started = time.monotonic()
        log = open(self.data_dir.parent / f"daemon-{self.port}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edge_runtime.cli", "serve", "--data-dir",
             str(self.data_dir), "--port", str(self.port), *self.args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.process.returncode}")
            try:
                if self.client.get("/health").status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                time.sleep(0.05)
        raise TimeoutError("daemon did not answer /health")

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()

    def upload(self, product_id: int, paths: list[Path]) -> httpx.Response:
        files = [("files", (p.name, p.read_bytes(), "image/png")) for p in paths]
        return self.client.post(f"/products/{product_id}/captures", files=files)

    def inspect(self, product: str | int, path: Path) -> httpx.Response:
        return self.client.post("/inspect", data={"product": str(product)},
                                files={"file": (path.name, path.read_bytes(), "image/png")})

    def train(self, product_id: int, epochs: int = 1, timeout: float = 240) -> dict:
        """Start a training job of fixed ``epochs`` and wait for its end; the finished job."""
        response = self.client.post(f"/products/{product_id}/train", json={"epochs": epochs})
        return self.wait_job(response.json()["id"], timeout)

    def wait_job(self, job_id: int, timeout: float = 240) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.client.get(f"/jobs/{job_id}").json()
            if job["status"] not in ("queued", "running"):
                return job
            time.sleep(0.3)
        raise TimeoutError(f"job {job_id} still running")

    def wait_live(self, version: str, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.client.get("/status").json()
            if status["model_version"] == version:
                return status
            time.sleep(0.1)
        raise TimeoutError(f"version {version} never went live")


class WatchdogListener:
    """systemd's side of sd_notify at ``path`` (give it to the daemon as NOTIFY_SOCKET):
    keeps the times of the WATCHDOG=1 datagrams."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.1)
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if b"WATCHDOG=1" in self.sock.recv(512):
                    self.times.append(time.monotonic())
            except TimeoutError:
                continue

    def max_gap_since(self, since: float) -> float:
        """The longest time without a ping from ``since`` until now."""
        times = [since] + [t for t in self.times if t >= since] + [time.monotonic()]
        return max(b - a for a, b in zip(times, times[1:], strict=False))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()
