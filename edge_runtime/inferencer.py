"""ONNX Runtime inference, with no torch: load -> pre-process -> forward -> post-process.

The serving process and the training worker's feature extraction both use this module.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge_runtime.preprocess import preprocess


def session_options(threads: int = 0, spinning: bool = False) -> ort.SessionOptions:
    """Spinning off by default: spinning threads starve the training worker and the HTTP
    threads on a 2-core board; on an otherwise idle core it buys ~1.5 ms per image."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    flag = "1" if spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", flag)
    options.add_session_config_entry("session.inter_op.allow_spinning", flag)
    return options


def open_session(
    path: str | os.PathLike[str], threads: int = 0, spinning: bool = False
) -> ort.InferenceSession:
    return ort.InferenceSession(
        str(path), sess_options=session_options(threads, spinning),
        providers=["CPUExecutionProvider"],
    )


@dataclass
class Inspection:
    anomaly_map: np.ndarray  # float32 (S, S)
    score: float


class AnomalyInferencer:
    """The merged PaSTe graph: image in, anomaly map and image score out."""

    def __init__(
        self,
        graph_path: str | os.PathLike[str],
        image_size: int,
        threads: int = 0,
        spinning: bool = False,
    ) -> None:
        self.image_size = image_size
        self.session = open_session(graph_path, threads, spinning)

    def preprocess(self, source: bytes | str | os.PathLike[str]) -> np.ndarray:
        return preprocess(source, self.image_size)

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        amap, score = self.session.run(["anomaly_map", "score"], {"image": batch})
        return amap, score

    def postprocess(self, amap: np.ndarray, score: np.ndarray) -> list[Inspection]:
        return [Inspection(m[0], float(s)) for m, s in zip(amap, score, strict=True)]

    def inspect(self, source: bytes | str | os.PathLike[str]) -> Inspection:
        batch = self.preprocess(source)[None]
        return self.postprocess(*self.forward(batch))[0]

    def inspect_many(
        self, sources: Sequence[str | os.PathLike[str]], batch_size: int = 8
    ) -> list[Inspection]:
        results: list[Inspection] = []
        for start in range(0, len(sources), batch_size):
            batch = np.stack([self.preprocess(s) for s in sources[start : start + batch_size]])
            results += self.postprocess(*self.forward(batch))
        return results


class TrunkRunner:
    """The frozen trunk in ORT: its output is what training caches and replay stores."""

    def __init__(self, graph_path: str | os.PathLike[str], image_size: int, threads: int = 0):
        self.image_size = image_size
        self.session = open_session(graph_path, threads)

    def features(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(["features"], {"image": batch})[0]

    def features_for(
        self,
        sources: Sequence[str | os.PathLike[str] | bytes],
        batch_size: int = 4,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Trunk output for every image, one batch of decoded images in RAM at a time.

        Batch 4: ORT's arena keeps the peak activations of the 128x128 early layers, and
        batch 16 costs ~100 MB more RSS for no speed (measured on 2 cores)."""
        chunks = []
        for start in range(0, len(sources), batch_size):
            part = sources[start : start + batch_size]
            chunks.append(self.features(np.stack([preprocess(s, self.image_size) for s in part])))
            if progress:
                progress(min(start + batch_size, len(sources)), len(sources))
        return np.concatenate(chunks) if chunks else np.zeros((0,), np.float32)


def trunk_graph(model_dir: Path) -> Path:
    return Path(model_dir) / "trunk.onnx"


def merged_graph(model_dir: Path) -> Path:
    return Path(model_dir) / "paste.onnx"
