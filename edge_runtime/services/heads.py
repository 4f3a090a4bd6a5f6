"""Per-product memory-bank heads: a verdict before the student exists.

When a product's captures are stored (or on request) its head is fitted off the event
loop, one product at a time, by a child process (workers/fit_head.py, numpy and ORT only)
on the captures the training worker would use (same subset, same held-out split for the
thresholds): a fit's working set never stays in the API's heap. Heads live in
``<data>/heads/<product id>.npz`` (ids, never names) and in RAM; their bytes are reported
like the replay store's and each is bounded by ``heads.max_bytes``. The features graph
they read (trunk + frozen teacher tail) is written once by another child, since torch
never enters this process; the API opens it only to serve a head.

Once a product is trained, a third child (workers/choose_path.py) decides per product and
model version whether the student or the head answers (evaluation/serving_choice.py), on
synthetic defects made from the held-out captures; the choice is kept beside the head
(``<id>.choice.json``) and holds only for the version and the head file it was made on.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.atomic import atomic_write_bytes
from edge_runtime.dataset import spread
from edge_runtime.evaluation.serving_choice import MIN_NORMALS, RULE
from edge_runtime.inference import heads as H
from edge_runtime.inference.thresholds import Thresholds
from edge_runtime.memory import trim_heap
from edge_runtime.settings import Settings

log = logging.getLogger("edge_runtime.heads")
IDLE_SECONDS = 60.0  # the features session closes after this long without a head's use
FIT_TIMEOUT = 1800.0  # a stuck child; a fit of 200 captures takes seconds


def _last_line(stderr: str, code: int) -> str:
    """A child's reason: the last line of its traceback (e.g. the weights are missing)."""
    lines = (stderr or "").strip().splitlines()
    return lines[-1] if lines else f"exit {code}"


class _Superseded(Exception):
    """A newer fit of the same product is queued (or the service stops): this one ends."""


@dataclass(frozen=True)
class HeadOptions:
    enabled: bool = True
    kind: str = "padim"
    covariance: str = "full"
    max_bytes: int = H.HeadConfig().max_bytes
    min_captures: int = 4
    max_images: int = 200
    threads: int = 1
    image_size: int = H.IMAGE_SIZE  # the head's input, not the student's
    seed: int = 0
    weights_dir: str = ""
    serve: str = "auto"  # trained products: auto | student | head

    @classmethod
    def from_settings(cls, settings: Settings) -> HeadOptions:
        heads, training = settings.heads, settings.training
        return cls(heads.enabled, heads.kind, heads.covariance, heads.max_bytes,
                   training.min_captures, training.max_images, settings.model.threads or 1,
                   heads.image_size, training.seed, settings.model.weights_dir, heads.serve)


class HeadService:
    def __init__(self, root: Path, options: HeadOptions) -> None:
        self.root, self.options = Path(root), options
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._runner_lock = threading.Lock()  # held while the graph is exported: not _lock
        self._heads: dict[int, H.Head] = {}
        self._state: dict[int, dict] = {}
        self._queued: dict[int, Future] = {}
        self._choices: dict[int, dict] = {}  # product id -> the last serving choice made
        self._stamps: dict[int, int] = {}  # product id -> its head file's mtime (ns)
        self._choosing: dict[int, int] = {}  # product id -> generation of its queued choice
        self._pending: set[int] = set()  # products whose choice is queued or running
        self.on_ready: Callable[[int], None] | None = None  # a head was fitted
        self._generation: dict[int, int] = {}  # bumped by each queued fit
        self._runner: H.FeatureRunner | None = None
        self._graph_macs: int | None = None
        # product id -> the calibration of a head load_all found stale (another size or
        # embedding or regulariser): what an operator's override was set on until its refit
        self.replaced: dict[int, Thresholds | None] = {}
        self._last_use = time.monotonic()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="heads")
        self._closing = threading.Event()
        threading.Thread(target=self._release_when_idle, name="heads-idle", daemon=True).start()

    # ---- features graph
    @property
    def graph_path(self) -> Path:
        """Named by its input size and embedding: a graph written for another is never
        opened."""
        return self.root / f"features-{self.options.image_size}-e{H.EMBEDDING}.onnx"

    @property
    def graph_macs(self) -> int | None:
        """The features graph's MACs per image (written beside it by its export), read once:
        /status asks for them at every poll and every metrics scrape."""
        if self._graph_macs is None:
            try:
                path = self.graph_path.with_suffix(".json")
                self._graph_macs = int(json.loads(path.read_text())["macs"])
            except (OSError, ValueError, KeyError, TypeError):
                return None  # not exported yet
        return self._graph_macs

    def _ensure_graph(self) -> Path:
        """The features graph, exported by a child process the first time it is needed."""
        if not self.graph_path.exists():
            cmd = [sys.executable, "-m", "edge_runtime.workers.export_features",
                   "--out", str(self.graph_path), "--image-size", str(self.options.image_size)]
            if self.options.weights_dir:
                cmd += ["--weights-dir", self.options.weights_dir]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            if done.returncode:
                raise RuntimeError(f"the features graph could not be written: "
                                   f"{_last_line(done.stderr, done.returncode)}")
        return self.graph_path

    def runner(self) -> H.FeatureRunner:
        """The features graph in ORT, for serving heads (closed again when idle)."""
        with self._runner_lock:
            if self._runner is None:
                self._ensure_graph()
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

    def choice_path(self, product_id: int) -> Path:
        return self.root / f"{int(product_id)}.choice.json"

    # ---- lifecycle
    def load_all(self) -> list[int]:
        """Heads fitted before a restart serve again. Returns the products whose head must be
        fitted again: unreadable, or fitted at another input size (``heads.image_size``
        changed, or an earlier release's 256), on an earlier patch embedding or with another
        covariance regulariser; other features graphs are removed."""
        refit = []
        keep = {self.graph_path, self.graph_path.with_suffix(".json")}
        for path in sorted(self.root.glob("features*")):
            if path not in keep:
                path.unlink(missing_ok=True)
                log.info("removed %s (heads now read %s)", path.name, self.graph_path.name)
        for path in sorted(self.root.glob("*.npz")):
            if not path.stem.isdigit():
                continue
            try:
                head = H.Head.load(path)
                stale = self._stale(head)
                if stale:
                    self.replaced[int(path.stem)] = head.thresholds
                    raise H.HeadError(stale)
                self._publish(int(path.stem), head, path.stat(), None)
            except (H.HeadError, OSError) as exc:
                log.warning("ignoring head %s, to be fitted again: %s", path.name, exc)
                refit.append(int(path.stem))
        for path in sorted(self.root.glob("*.choice.json")):
            try:
                self._choices[int(path.name.split(".")[0])] = json.loads(path.read_text())
            except (ValueError, OSError) as exc:  # made again at the next promotion
                log.warning("ignoring serving choice %s: %s", path.name, exc)
        return refit

    def _stale(self, head: H.Head) -> str | None:
        """Why a saved head cannot serve the features graph of today's settings, if so."""
        if head.image_size != self.options.image_size:
            return f"fitted at {head.image_size} px, heads now read {self.options.image_size}"
        embedding = head.meta.get("embedding", 1)
        if embedding != H.EMBEDDING:
            return f"fitted on patch embedding {embedding}, heads now use {H.EMBEDDING}"
        epsilon = head.meta.get("epsilon", 0.01)  # before it was recorded: PaDiM's 0.01
        if head.kind == "padim" and epsilon != H.EPSILON:
            return f"fitted with covariance regulariser {epsilon}, heads now use {H.EPSILON}"
        whitening = head.meta.get("whitening", "square")  # before it was recorded: square
        if head.meta.get("covariance") == "full" and whitening != H.WHITENING:
            return (f"{head.meta.get('dim')} dimensions with {whitening} whitening matrices; "
                    f"heads now use {H.DIMS['padim']} with {H.WHITENING}-triangular ones")
        return None

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

    def _fit(self, product_id: int, captures: Callable[[], list[Path]],
             generation: int = 0) -> dict:
        options = self.options
        started = time.perf_counter()
        self._set(product_id, status="fitting")
        try:
            images = spread(captures(), options.max_images)
            if len(images) < options.min_captures:
                self._set(product_id, status="waiting",
                          error=f"{len(images)} captures; a head needs {options.min_captures}")
                return self.state(product_id)
            train, held = H.holdout_split(len(images), 0.1, options.seed)
            with self._runner_lock:
                graph = self._ensure_graph()
            request = {"graph": str(graph), "out": str(self.head_path(product_id)),
                       "image_size": options.image_size, "threads": options.threads,
                       "config": {"kind": options.kind, "covariance": options.covariance,
                                  "max_bytes": options.max_bytes, "seed": options.seed},
                       "train": [str(images[i]) for i in train],
                       "held": [str(images[i]) for i in held], "captures": len(images)}
            self._run_child(request, lambda: self._generation.get(product_id) != generation)
            path = self.head_path(product_id)
            file, seconds = path.stat(), time.perf_counter() - started
            self._publish(product_id, H.Head.load(path), file, seconds)
            log.info("head for product %d ready: %d bytes, %.1f s", product_id, file.st_size,
                     seconds)
            if self.on_ready:
                self.on_ready(product_id)
        except _Superseded:
            log.info("head fit for product %d superseded by newer captures", product_id)
        except Exception as exc:  # noqa: BLE001 - reported in /status, the daemon serves on
            log.exception("head fit for product %d", product_id)
            self._set(product_id, status="failed", error=f"{type(exc).__name__}: {exc}")
        return self.state(product_id)

    def _run_child(self, request: dict, superseded: Callable[[], bool],
                   module: str = "edge_runtime.workers.fit_head",
                   failure: str = "the head could not be fitted") -> None:
        """A worker module on ``request``; killed when a newer request for the product is
        queued (that one sees every capture this one sees) or the service shuts down."""
        child = subprocess.Popen(
            [sys.executable, "-m", module], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        payload: str | None = json.dumps(request)
        deadline = time.monotonic() + FIT_TIMEOUT
        while True:
            try:
                _, errors = child.communicate(payload, timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                payload = None  # sent with the first call
                ended = superseded() or self._closing.is_set()
                if ended or time.monotonic() > deadline:
                    child.kill()
                    child.communicate()
                    if ended:
                        raise _Superseded from None
                    raise RuntimeError(f"{module} took over {FIT_TIMEOUT:.0f} s") from None
        if child.returncode:
            raise RuntimeError(f"{failure}: "
                               f"{_last_line(errors, child.returncode)}")

    def _publish(self, product_id: int, head: H.Head, file: os.stat_result,
                 seconds: float | None) -> None:
        with self._lock:
            self._heads[product_id] = head
            self._stamps[product_id] = file.st_mtime_ns
            self._state[product_id] = {"status": "ready", "kind": head.kind,
                                       "bytes": file.st_size,
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
            self._choices.pop(product_id, None)
            self._stamps.pop(product_id, None)
        self.head_path(product_id).unlink(missing_ok=True)
        self.choice_path(product_id).unlink(missing_ok=True)

    # ---- the serving choice of trained products
    def _head_stamp(self, product_id: int) -> int | None:
        """Which head file a choice was made on (a refit makes the choice stale); noted
        when the head is published, so inspections never stat the file."""
        return self._stamps.get(product_id)

    def request_choice(self, product_id: int, version_dir: Path,
                       captures: Callable[[], list[Path]]) -> Future | None:
        """Queue the choice between the student of ``version_dir`` and the product's head
        (one child at a time, after any queued fit); nothing to do when ``serve`` pins a
        path, the product has no head, or the choice for this version and head is made."""
        options = self.options
        if not options.enabled or options.serve != "auto" or product_id not in self._heads:
            return None
        if self._current_choice(product_id, version_dir.name) is not None:
            return None
        with self._lock:
            generation = self._choosing[product_id] = self._choosing.get(product_id, 0) + 1
            self._pending.add(product_id)
        return self._executor.submit(self._choose, product_id, Path(version_dir), captures,
                                     generation)

    def _choose(self, product_id: int, version_dir: Path,
                captures: Callable[[], list[Path]], generation: int) -> dict | None:
        try:
            return self._make_choice(product_id, version_dir, captures, generation)
        finally:
            with self._lock:
                if self._choosing.get(product_id) == generation:
                    self._pending.discard(product_id)

    def _make_choice(self, product_id: int, version_dir: Path,
                     captures: Callable[[], list[Path]], generation: int) -> dict | None:
        from edge_runtime.inference.model_dir import MERGED, read_manifest

        options = self.options
        stamp = self._head_stamp(product_id)
        if stamp is None or not (version_dir / MERGED).exists():
            return None  # the head was deleted, or the version pruned, meanwhile
        images = spread(captures(), options.max_images)
        _, held = H.holdout_split(len(images), 0.1, options.seed)  # neither path fitted on
        if len(held) < MIN_NORMALS:  # too few to tell: the student answers, and /status says why
            return self._student_because(product_id, version_dir.name, stamp,
                                         f"{len(held)} held-out captures; a choice needs "
                                         f"{MIN_NORMALS}")
        started = time.perf_counter()
        try:
            request = {"student_graph": str(version_dir / MERGED),
                       "features_graph": str(self.graph_path),
                       "head": str(self.head_path(product_id)),
                       "image_size": read_manifest(version_dir, verify=False).image_size,
                       "head_image_size": options.image_size, "threads": options.threads,
                       "seed": options.seed, "held": [str(images[i]) for i in held],
                       "version": version_dir.name, "head_fitted_at": stamp,
                       "out": str(self.choice_path(product_id))}
            with self._runner_lock:
                self._ensure_graph()
            self._run_child(request, lambda: self._choosing.get(product_id) != generation,
                            "edge_runtime.workers.choose_path", "no serving choice")
            choice = json.loads(self.choice_path(product_id).read_text())
        except _Superseded:
            return None
        except Exception as exc:  # noqa: BLE001 - the student answers; /status says why
            log.exception("serving choice for product %d", product_id)
            return self._student_because(product_id, version_dir.name, stamp,
                                         f"{type(exc).__name__}: {exc}")
        with self._lock:
            self._choices[product_id] = choice
        log.info("product %d, %s: %s answers (student %.4f, head %.4f, student better in "
                 "%.0f%% of resamples; %.1f s)", product_id, version_dir.name, choice["choice"],
                 choice["student"]["score"], choice["head"]["score"],
                 100 * choice["student_better"], time.perf_counter() - started)
        return choice

    def _student_because(self, product_id: int, version: str, stamp: int,
                         reason: str) -> dict:
        """No comparison for this version and head: the student answers, and why is kept."""
        choice = {"version": version, "head_fitted_at": stamp, "choice": "student",
                  "reason": reason, "rule": RULE}
        atomic_write_bytes(self.choice_path(product_id), json.dumps(choice).encode())
        with self._lock:
            self._choices[product_id] = choice
        return choice

    def _current_choice(self, product_id: int, version: str) -> dict | None:
        """The choice made for this version, on this head, under today's rule."""
        choice = self._choices.get(product_id)
        if (choice is None or choice.get("version") != version
                or choice.get("head_fitted_at") != self._head_stamp(product_id)
                or choice.get("rule") != RULE):
            return None
        return choice

    def serves(self, product_id: int, version: str) -> bool:
        """Whether the head, not the student of ``version``, answers for a trained product.
        While its choice is being made (seconds), what answered before goes on answering:
        the head after its first job, the last choice after later ones (no flapping)."""
        if product_id not in self._heads or not self.options.enabled:
            return False
        if self.options.serve != "auto":
            return self.options.serve == "head"
        choice = self._current_choice(product_id, version)
        if choice is None and product_id in self._pending:
            choice = self._choices.get(product_id, {"choice": "head"})
        return choice is not None and choice.get("choice") == "head"

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
        graph = self.graph_macs
        with self._lock:
            products = {str(pid): dict(s) for pid, s in self._state.items()}
            for pid, head in self._heads.items():  # per part: the graph, then the head's numpy
                if str(pid) in products and graph is not None:
                    products[str(pid)]["macs"] = graph + head.scoring_macs
            for pid, choice in self._choices.items():
                if str(pid) in products:
                    products[str(pid)]["serving_choice"] = {
                        k: choice.get(k) for k in ("version", "choice", "student", "head",
                                                   "student_better", "normals", "defects",
                                                   "reason")
                        if k in choice}
        return {"enabled": self.options.enabled, "kind": self.options.kind,
                "serve": self.options.serve,
                "max_bytes_per_product": self.options.max_bytes,
                "bytes": sum(s.get("bytes") or 0 for s in products.values()
                             if s.get("status") == "ready" or s.get("serving")),
                "products": products}
