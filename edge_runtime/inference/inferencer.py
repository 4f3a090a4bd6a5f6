"""ONNX Runtime inference, with no torch: load -> pre-process -> forward -> post-process.

``AnomalyInferencer.predict`` is the one path from an image to a verdict: the daemon, the
CLI, calibration and the benchmarks all call it. The training worker's feature extraction
uses ``TrunkRunner`` from here too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from edge_runtime.inference.preprocess import fit_rgb, load_rgb, normalise, preprocess
from edge_runtime.inference.thresholds import CalibrationPolicy, Thresholds, calibrate

Image = bytes | str | os.PathLike[str] | np.ndarray  # encoded bytes, a path, or uint8 HxWx3 RGB


def session_options(threads: int = 0, spinning: bool = False,
                    arena: bool = True) -> ort.SessionOptions:
    """Spinning off by default: spinning threads starve the training worker and the HTTP
    threads on a 2-core board; on an otherwise idle core it buys ~1.5 ms per image.

    ``arena=False`` for short-lived sessions (training's trunk extraction, calibration):
    the CPU arena keeps the largest activations it ever held until the session dies."""
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = arena
    options.enable_mem_pattern = arena  # without an arena: free each tensor after use
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    flag = "1" if spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", flag)
    options.add_session_config_entry("session.inter_op.allow_spinning", flag)
    return options


CPU = ("CPUExecutionProvider",)


def open_session(
    path: str | os.PathLike[str], threads: int = 0, spinning: bool = False,
    providers: Sequence[str] = CPU, arena: bool = True,
) -> ort.InferenceSession:
    """``providers`` in order of preference (the ``model.providers`` setting, checked at
    start-up); ORT falls back along the list, CPU last."""
    return ort.InferenceSession(
        str(path), sess_options=session_options(threads, spinning, arena),
        providers=list(providers),
    )


@dataclass
class Prediction:
    anomaly_map: np.ndarray  # float32 (S, S)
    score: float
    label: str | None = None  # "pass" | "reject"; None without thresholds


class AnomalyInferencer:
    """The merged PaSTe graph: image in, anomaly map and image score out."""

    def __init__(
        self,
        graph_path: str | os.PathLike[str],
        image_size: int,
        threads: int = 0,
        spinning: bool = False,
        providers: Sequence[str] = CPU,
        arena: bool = True,
    ) -> None:
        self.image_size = image_size
        self.session = open_session(graph_path, threads, spinning, providers, arena)

    def load(self, source: Image) -> np.ndarray:
        """uint8 (S, S, 3) RGB: decoded and resized once (the overlay reuses it)."""
        if isinstance(source, np.ndarray):
            return fit_rgb(source, self.image_size)  # a camera frame: resized, never re-encoded
        return load_rgb(source, self.image_size)

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        return normalise(rgb)

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        amap, score = self.session.run(["anomaly_map", "score"], {"image": batch})
        return amap, score

    def postprocess(self, amap: np.ndarray, score: np.ndarray,
                    thresholds: Thresholds | None = None) -> list[Prediction]:
        return [Prediction(m[0], float(s), thresholds.verdict(float(s)) if thresholds else None)
                for m, s in zip(amap, score, strict=True)]

    def predict(self, image: Image, thresholds: Thresholds | None = None) -> Prediction:
        batch = self.preprocess(self.load(image))[None]
        return self.postprocess(*self.forward(batch), thresholds)[0]

    def predict_many(self, images: Sequence[Image], thresholds: Thresholds | None = None,
                     batch_size: int = 8) -> list[Prediction]:
        results: list[Prediction] = []
        for start in range(0, len(images), batch_size):
            part = images[start : start + batch_size]
            batch = np.stack([self.preprocess(self.load(i)) for i in part])
            results += self.postprocess(*self.forward(batch), thresholds)
        return results

    def calibrate(self, normal_images: Sequence[Image],
                  policy: CalibrationPolicy | None = None) -> Thresholds:
        """Thresholds from held-out normal images only: nobody has defect labels on day one.
        The default policy bounds the false-reject rate (see thresholds.py)."""
        results = self.predict_many(list(normal_images))
        return calibrate(np.stack([r.anomaly_map for r in results]),
                         np.array([r.score for r in results]), policy or CalibrationPolicy())


class TrunkRunner:
    """The frozen trunk in ORT: its output is what training caches and replay stores.

    No arena: the training worker runs it for one phase, and an arena would hold the
    early layers' 128x128 activations through training."""

    def __init__(self, graph_path: str | os.PathLike[str], image_size: int, threads: int = 0):
        self.image_size = image_size
        self.session = open_session(graph_path, threads, arena=False)

    def features(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(["features"], {"image": batch})[0]

    def features_for(
        self,
        sources: Sequence[str | os.PathLike[str] | bytes],
        batch_size: int = 4,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Trunk output for every image, one batch of decoded images in RAM at a time.

        Batch 4: the early layers' 128x128 activations grow with the batch, and batch 16
        costs ~100 MB more RSS for no speed (measured on 2 cores). The output is written
        into one preallocated array (no list of chunks, no concatenated copy)."""
        out: np.ndarray | None = None
        for start in range(0, len(sources), batch_size):
            part = sources[start : start + batch_size]
            chunk = self.features(np.stack([preprocess(s, self.image_size) for s in part]))
            if out is None:
                out = np.empty((len(sources), *chunk.shape[1:]), chunk.dtype)
            out[start : start + len(chunk)] = chunk
            if progress:
                progress(min(start + batch_size, len(sources)), len(sources))
        return out if out is not None else np.zeros((0,), np.float32)
