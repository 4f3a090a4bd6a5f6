"""Score a trained model on a category's test set with the metrics of the papers."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edge_runtime.dataset import test_samples
from edge_runtime.evaluation import metrics
from edge_runtime.inference.inferencer import AnomalyInferencer
from edge_runtime.inference.preprocess import load_mask
from edge_runtime.inference.thresholds import REJECT, Thresholds


def evaluate(
    inferencer: AnomalyInferencer,
    data_root: str | os.PathLike[str],
    category: str,
    limit_per_kind: int | None = None,
    thresholds: Thresholds | None = None,
    progress: Callable[[int, int], None] | None = None,
    with_aupro: bool = True,
) -> dict[str, float]:
    """All metrics on ``category``'s test set; operational F1 when thresholds are given."""
    samples = test_samples(Path(data_root), category, limit_per_kind)
    size = inferencer.image_size
    maps = np.empty((len(samples), size, size), dtype=np.float32)
    scores = np.empty(len(samples), dtype=np.float32)
    rejected = np.zeros(len(samples), dtype=bool)
    for start in range(0, len(samples), 8):
        part = samples[start : start + 8]
        predictions = inferencer.predict_many([s.image for s in part], thresholds)
        for offset, result in enumerate(predictions):
            maps[start + offset], scores[start + offset] = result.anomaly_map, result.score
            rejected[start + offset] = result.label == REJECT
        if progress:
            progress(start + len(part), len(samples))
    masks = np.stack([load_mask(s.mask, size) for s in samples])
    labels = np.array([s.is_anomalous for s in samples])
    out = {
        "image_auroc": metrics.auroc(labels, scores),
        "image_f1": metrics.f1_max(labels, scores),
        "pixel_auroc": metrics.auroc(masks, maps),
        "pixel_f1": metrics.f1_max(masks, maps),
        "pixel_ap": metrics.average_precision(masks, maps),
        "aupro": metrics.aupro(masks, maps) if with_aupro else float("nan"),
        "test_images": len(samples),
    }
    if thresholds:
        out["operational_image_f1"] = metrics.f1_of(labels, rejected)
        out["operational_pixel_f1"] = metrics.f1_at(masks, maps, thresholds.pixel)
    return out
