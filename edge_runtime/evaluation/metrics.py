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
    return f1_of(labels, np.asarray(scores).ravel() > threshold)


def f1_of(labels: np.ndarray, predicted: np.ndarray) -> float:
    """F1 of given decisions (True = anomalous) against the labels."""
    labels = np.asarray(labels).ravel().astype(bool)
    predicted = np.asarray(predicted).ravel().astype(bool)
    tp = np.count_nonzero(predicted & labels)
    denominator = np.count_nonzero(predicted) + np.count_nonzero(labels)
    return float(2 * tp / denominator) if denominator else float("nan")


def aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> float:
    """Area under the per-region-overlap curve up to ``fpr_limit``, divided by it.

    Exact curve from one sort of all pixels: each connected ground-truth region weighs the
    same whatever its size; tied scores form one point; the curve is interpolated
    linearly at ``fpr_limit``.
    """
    masks = np.asarray(masks).astype(bool)
    labelled = np.zeros(masks.shape, dtype=np.int64)
    regions = 0
    for index, mask in enumerate(masks):
        found, count = ndimage.label(mask)
        labelled[index] = np.where(found > 0, found + regions, 0)
        regions += count
    normal_count = int(np.count_nonzero(~masks))
    if regions == 0 or normal_count == 0:
        return float("nan")
    labels = labelled.ravel()
    values = np.asarray(maps, dtype=np.float32).ravel()
    sizes = np.bincount(labels, minlength=regions + 1).astype(np.float64)
    # only pixels above the score where FPR passes the limit shape the curve up to it
    floor = np.partition(values[labels == 0], int((1 - fpr_limit - 0.01) * normal_count))
    keep = values >= floor[int((1 - fpr_limit - 0.01) * normal_count)]
    labels, values = labels[keep], values[keep]
    weights = np.where(labels > 0, 1.0 / (regions * sizes[labels]), 0.0)
    order = np.argsort(-values, kind="stable")
    scores = values[order]
    fpr = np.cumsum(labels[order] == 0) / normal_count
    pro = np.cumsum(weights[order])
    last_of_tie = np.r_[scores[1:] != scores[:-1], True]
    fpr = np.r_[0.0, fpr[last_of_tie], 1.0]
    pro = np.r_[0.0, pro[last_of_tie], 1.0]
    cut = int(np.searchsorted(fpr, fpr_limit, side="right"))
    if cut < len(fpr):
        pro_at_limit = np.interp(fpr_limit, fpr[cut - 1 : cut + 1], pro[cut - 1 : cut + 1])
        fpr = np.r_[fpr[:cut], fpr_limit]
        pro = np.r_[pro[:cut], pro_at_limit]
    area = float(np.sum((fpr[1:] - fpr[:-1]) * (pro[1:] + pro[:-1]) / 2))
    return area / fpr_limit


def average_forgetting(matrix: list[list[float]]) -> float:
    """Relative forgetting on a metric (pixel F1 in the papers).

    ``matrix[l][j]`` is the metric on task j after learning task l (j <= l). For each
    earlier task j: the largest relative drop max(0, 1 - final / matrix[l][j]) over the
    steps l >= j before the last; averaged over j < T.
    """
    last = len(matrix) - 1
    if last < 1:
        return 0.0
    drops = []
    for j in range(last):
        earlier = [matrix[s][j] for s in range(j, last) if matrix[s][j] > 0]
        final = matrix[last][j]
        drops.append(max((max(0.0, 1.0 - final / e) for e in earlier), default=0.0))
    return float(np.mean(drops))
