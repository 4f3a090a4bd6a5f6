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
    """All metrics on ``category``'s test set; operational F1 when thresholds are given.

    Streams: each batch's maps go into ``metrics.PixelCurves`` and are dropped, so RAM
    stays flat whatever the size of the test set."""
    samples = test_samples(Path(data_root), category, limit_per_kind)
    size = inferencer.image_size
    scores = np.empty(len(samples), dtype=np.float32)
    rejected = np.zeros(len(samples), dtype=bool)
    pixels = metrics.PixelCurves(thresholds.pixel if thresholds else None, with_aupro)
    for start in range(0, len(samples), 8):
        part = samples[start : start + 8]
        predictions = inferencer.predict_many([s.image for s in part], thresholds)
        for offset, result in enumerate(predictions):
            scores[start + offset] = result.score
            rejected[start + offset] = result.label == REJECT
        pixels.add(np.stack([load_mask(s.mask, size) for s in part]),
                   np.stack([r.anomaly_map for r in predictions]))
        if progress:
            progress(start + len(part), len(samples))
    labels = np.array([s.is_anomalous for s in samples])
    out = {
        "image_auroc": metrics.auroc(labels, scores),
        "image_f1": metrics.f1_max(labels, scores),
        "pixel_auroc": pixels.auroc(),
        "pixel_f1": pixels.f1_max(),
        "pixel_ap": pixels.average_precision(),
        "aupro": pixels.aupro() if with_aupro else float("nan"),
        "test_images": len(samples),
    }
    if thresholds:
        out["operational_image_f1"] = metrics.f1_of(labels, rejected)
        out["operational_pixel_f1"] = pixels.operational_f1()
    return out
