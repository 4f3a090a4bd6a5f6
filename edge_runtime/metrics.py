"""Anomaly-detection metrics: threshold-free (AUROC, F1-max, AP, AU-PRO) and operational.

ROC/PR curves come from scikit-learn and connected components from scipy; only AU-PRO's
per-region overlap is written here, since neither library provides it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    labels = np.asarray(labels).ravel().astype(bool)
    if labels.all() or not labels.any():
        return float("nan")
    return float(roc_auc_score(labels, np.asarray(scores).ravel()))


def f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    """Best F1 over all thresholds of the precision-recall curve."""
    labels = np.asarray(labels).ravel().astype(bool)
    if not labels.any():
        return float("nan")
    precision, recall, _ = precision_recall_curve(labels, np.asarray(scores).ravel())
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(f1.max())


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    labels = np.asarray(labels).ravel().astype(bool)
    if not labels.any():
        return float("nan")
    return float(average_precision_score(labels, np.asarray(scores).ravel()))


def f1_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    """F1 of the decision ``score > threshold`` (a threshold fixed without labels)."""
    labels = np.asarray(labels).ravel().astype(bool)
    predicted = np.asarray(scores).ravel() > threshold
    tp = np.count_nonzero(predicted & labels)
    denominator = np.count_nonzero(predicted) + np.count_nonzero(labels)
    return float(2 * tp / denominator) if denominator else float("nan")


def aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3, steps: int = 200) -> float:
    """Area under the per-region-overlap curve up to ``fpr_limit``, divided by it.

    Each connected ground-truth region weighs the same, whatever its size.
    """
    masks = np.asarray(masks).astype(bool)
    maps = np.asarray(maps, dtype=np.float64)
    region_maps = []
    for index, mask in enumerate(masks):
        labelled, count = ndimage.label(mask)
        region_maps += [maps[index][labelled == k] for k in range(1, count + 1)]
    normal = maps[~masks]
    if not region_maps:
        return float("nan")
    if normal.size == 0:
        return float("nan")
    # thresholds spaced by normal-pixel quantiles cover FPR in [0, fpr_limit] evenly
    thresholds = np.quantile(normal, 1.0 - np.linspace(0.0, fpr_limit, steps))
    fprs = np.array([np.count_nonzero(normal > t) / normal.size for t in thresholds])
    pros = np.array([np.mean([np.mean(r > t) for r in region_maps]) for t in thresholds])
    order = np.argsort(fprs)
    fprs, pros = fprs[order], pros[order]
    fprs = np.clip(fprs, 0.0, fpr_limit)
    area = np.trapezoid(pros, fprs) if hasattr(np, "trapezoid") else np.trapz(pros, fprs)
    return float(area / fpr_limit)
