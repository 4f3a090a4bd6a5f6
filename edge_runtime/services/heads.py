"""Per-product memory-bank heads in the API process: a verdict before the student exists.

When a product's captures are stored (or on request) its head is fitted in one background
thread, off the event loop, with numpy and ORT only, on the captures the training worker
would use (same subset, same held-out split for the thresholds). Heads live in
``<data>/heads/<product id>.npz`` (ids, never names) and in RAM; their bytes are reported
like the replay store's and each is bounded by ``heads.max_bytes``. The features graph
they read (trunk + frozen teacher tail) is written once by a child process, since torch
never enters this one.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.dataset import spread
from edge_runtime.inference import heads as H
from edge_runtime.memory import trim_heap
from edge_runtime.settings import Settings

log = logging.getLogger("edge_runtime.heads")
IDLE_SECONDS = 60.0  # the features session closes after this long without a head's use


class _Superseded(Exception):
    """A newer fit of the same product is queued; this one stops early."""


@dataclass(frozen=True)
class HeadOptions:
    enabled: bool = True
    kind: str = "padim"
    covariance: str = "full"
    max_bytes: int = 2_000_000
    min_captures: int = 4
    max_images: int = 200
    threads: int = 1
    image_size: int = 256
    seed: int = 0
    weights_dir: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> HeadOptions:
        heads, training = settings.heads, settings.training
        return cls(heads.enabled, heads.kind, heads.covariance, heads.max_bytes,
                   training.min_captures, training.max_images, settings.model.threads or 1,
                   seed=training.seed, weights_dir=settings.model.weights_dir)


class HeadService:
    def __init__(self, root: Path, options: HeadOptions) -> None:
        self.root, self.options = Path(root), options
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._runner_lock = threading.Lock()  # held while the graph is exported: not _lock
        self._heads: dict[int, H.Head] = {}
        self._state: dict[int, dict] = {}
        self._queued: dict[int, Future] = {}
        self._generation: dict[int, int] = {}  # bumped by each queued fit
        self._runner: H.FeatureRunner | None = None
        self._last_use = time.monotonic()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="heads")
        self._closing = threading.Event()
        threading.Thread(target=self._release_when_idle, name="heads-idle", daemon=True).start()

    # ---- features graph
    @property
    def graph_path(self) -> Path:
        return self.root / H.FEATURES

    def runner(self) -> H.FeatureRunner:
        """The features graph in ORT, exported by a child process on first use."""
        with self._runner_lock:
            if self._runner is None:
                if not self.graph_path.exists():
                    cmd = [sys.executable, "-m", "edge_runtime.workers.export_features",
                           "--out", str(self.graph_path), "--image-size",
                           str(self.options.image_size)]
                    if self.options.weights_dir:
                        cmd += ["--weights-dir", self.options.weights_dir]
                    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
                    if done.returncode:  # its last line says why (e.g. the weights are missing)
                        lines = done.stderr.strip().splitlines() or [f"exit {done.returncode}"]
                        raise RuntimeError(f"the features graph could not be written: "
                                           f"{lines[-1]}")
                self._runner = H.FeatureRunner(self.graph_path, self.options.image_size,
                                               self.options.threads, arena=False)
            return self._runner

    def release_idle(self, idle_seconds: float = IDLE_SECONDS) -> bool:
        """Close the features session when no head has served or fitted for a while: once
        the student knows the products, nobody uses it, and it held ~30 MB of the API."""
        with self._lock:
            busy = any(not future.done() for future in self._queued.values())
        if busy or time.monotonic() - self._last_use < idle_seconds:
            return False
        with self._runner_lock:
            if self._runner is None:
                return False
            self._runner = None
        trim_heap()
        log.info("features session closed after %.0f s unused", idle_seconds)
        return True

    def _release_when_idle(self) -> None:
        while not self._closing.wait(IDLE_SECONDS / 4):
            self.release_idle()

    def head_path(self, product_id: int) -> Path:
        return self.root / f"{int(product_id)}.npz"

    # ---- lifecycle
    def load_all(self) -> int:
        """Heads fitted before a restart serve again (an unreadable one is refitted later)."""
        found = 0
        for path in sorted(self.root.glob("*.npz")):
            if not path.stem.isdigit():
                continue
            try:
                head = H.Head.load(path)
                self._publish(int(path.stem), head, path.stat().st_size, None)
                found += 1
            except (H.HeadError, OSError) as exc:
                log.warning("ignoring head %s: %s", path.name, exc)
        return found

    def shutdown(self) -> None:
        self._closing.set()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def request_fit(self, product_id: int, captures: Callable[[], list[Path]]) -> Future | None:
        """Queue a fit unless one for this product is already waiting (it will see the new
        captures, since it lists them when it starts)."""
        if not self.options.enabled:
            return None
        with self._lock:
            queued = self._queued.get(product_id)
            if queued is not None and not queued.running() and not queued.done():
                return queued
            self._state.setdefault(product_id, {})["status"] = "queued"
            generation = self._generation[product_id] = self._generation.get(product_id, 0) + 1
            future = self._executor.submit(self._fit, product_id, captures, generation)
            self._queued[product_id] = future
            return future

    def _current(self, product_id: int, generation: int, batches: Iterable) -> Iterator:
        """Pass batches through until a newer fit of the product is queued: that one will
        see every capture this one sees, so finishing this one would only delay it."""
        for batch in batches:
            if self._generation.get(product_id) != generation:
                raise _Superseded
            yield batch

    def _fit(self, product_id: int, captures: Callable[[], list[Path]],
             generation: int = 0) -> dict:
        options = self.options
        started = time.perf_counter()
        self._last_use = time.monotonic()
        self._set(product_id, status="fitting")
        try:
            images = spread(captures(), options.max_images)
            if len(images) < options.min_captures:
                self._set(product_id, status="waiting",
                          error=f"{len(images)} captures; a head needs {options.min_captures}")
                return self.state(product_id)
            train, held = H.holdout_split(len(images), 0.1, options.seed)
            fitted = [images[i] for i in train]
            runner = self.runner()
            config = H.HeadConfig(kind=options.kind, covariance=options.covariance,
                                  max_bytes=options.max_bytes, seed=options.seed)
            batches = self._current(product_id, generation, runner.embed_batches(fitted))
            head = H.fit_head_batches(batches, len(fitted), runner.dim, config,
                                      runner.image_size, runner.grid)
            normal = [images[i] for i in held] or fitted  # the student's rule, too
            H.calibrate_head(head, runner.embed_sources(normal))
            head.meta["captures"] = len(images)
            size = head.save(self.head_path(product_id))
            self._publish(product_id, head, size, time.perf_counter() - started)
            self._last_use = time.monotonic()
            trim_heap()  # the fit's embeddings and float64 sums go back to the OS
            log.info("head for product %d ready: %d bytes, %.1f s", product_id, size,
                     time.perf_counter() - started)
        except _Superseded:
            log.info("head fit for product %d superseded by newer captures", product_id)
        except Exception as exc:  # noqa: BLE001 - reported in /status, the daemon serves on
            log.exception("head fit for product %d", product_id)
            self._set(product_id, status="failed", error=f"{type(exc).__name__}: {exc}")
        return self.state(product_id)

    def _publish(self, product_id: int, head: H.Head, size: int,
                 seconds: float | None) -> None:
        with self._lock:
            self._heads[product_id] = head
            self._state[product_id] = {"status": "ready", "kind": head.kind, "bytes": size,
                                       "captures": head.meta.get("captures"),
                                       "fit_seconds": None if seconds is None
                                       else round(seconds, 3), "fitted_at": time.time()}

    def _set(self, product_id: int, **values) -> None:
        with self._lock:
            state = self._state.setdefault(product_id, {})
            state.update(values)
            if values.get("status") in ("fitting", "queued") and product_id in self._heads:
                state["serving"] = True  # the previous head keeps serving meanwhile

    def forget(self, product_id: int) -> None:
        with self._lock:
            self._heads.pop(product_id, None)
            self._state.pop(product_id, None)
        self.head_path(product_id).unlink(missing_ok=True)

    # ---- serving
    def head(self, product_id: int) -> H.Head | None:
        return self._heads.get(product_id)

    def inferencer(self, product_id: int) -> H.HeadInferencer | None:
        """The product's head on the features session (opened again if it was idle)."""
        head = self._heads.get(product_id)
        if head is None:
            return None
        self._last_use = time.monotonic()
        try:
            return H.HeadInferencer(self.runner(), head)
        except H.HeadError as exc:  # fitted at another image size: refitted on new captures
            log.warning("head of product %d cannot serve: %s", product_id, exc)
            return None

    def state(self, product_id: int) -> dict:
        with self._lock:
            return dict(self._state.get(product_id, {"status": "none"}))

    def status(self) -> dict:
        with self._lock:
            products = {str(pid): dict(s) for pid, s in self._state.items()}
        return {"enabled": self.options.enabled, "kind": self.options.kind,
                "max_bytes_per_product": self.options.max_bytes,
                "bytes": sum(s.get("bytes") or 0 for s in products.values()
                             if s.get("status") == "ready" or s.get("serving")),
                "products": products}
