"""Anomaly-detection metrics: threshold-free (AUROC, F1-max, AP, AU-PRO) and operational.

Image-level metrics (a few hundred scores) are exact, from one sort. Pixel-level metrics
stream: ``PixelCurves`` adds one batch of maps at a time into fixed histograms keyed by
the float32 bits of each score (2^20 bins, each 2^-11 wide relative to its value), so
evaluating any number of images holds ~30 MB instead of every map and mask in float64;
it agrees with scikit-learn to better than 1e-3 (tests/test_metrics.py, on real maps).
Connected components for AU-PRO come from scipy (imported when first needed).
"""

from __future__ import annotations

import numpy as np

KEY_SHIFT = 12  # float32 bits dropped per histogram key: 23 - 12 = 11 mantissa bits kept
BINS = 1 << (32 - KEY_SHIFT)


def _clean(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(labels).ravel().astype(bool), np.asarray(scores).ravel()


def _exact_counts(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positives and negatives per distinct score, highest score first (ties together)."""
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], labels[order]
    last_of_tie = np.r_[ranked[1:] != ranked[:-1], True]
    ends = np.flatnonzero(last_of_tie) + 1
    tp = np.cumsum(hits)[ends - 1]
    fp = ends - tp
    return np.diff(tp, prepend=0), np.diff(fp, prepend=0)


def _auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    tp, fp = np.cumsum(pos, dtype=np.float64), np.cumsum(neg, dtype=np.float64)
    if not tp[-1] or not fp[-1]:
        return float("nan")
    tpr, fpr = np.r_[0.0, tp / tp[-1]], np.r_[0.0, fp / fp[-1]]
    return float(np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2))


def _f1_max(pos: np.ndarray, neg: np.ndarray) -> float:
    tp, fp = np.cumsum(pos, dtype=np.float64), np.cumsum(neg, dtype=np.float64)
    if not tp[-1]:
        return float("nan")
    return float(np.max(2 * tp / np.maximum(tp + fp + tp[-1], 1e-12)))


def _average_precision(pos: np.ndarray, neg: np.ndarray) -> float:
    """sum over thresholds of (recall step) x precision, as scikit-learn defines AP."""
    tp, fp = np.cumsum(pos, dtype=np.float64), np.cumsum(neg, dtype=np.float64)
    if not tp[-1]:
        return float("nan")
    precision = tp / np.maximum(tp + fp, 1)
    return float(np.sum(pos / tp[-1] * precision))


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    return _auroc(*_exact_counts(*_clean(labels, scores)))


def f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    """Best F1 over all thresholds of the precision-recall curve."""
    return _f1_max(*_exact_counts(*_clean(labels, scores)))


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    return _average_precision(*_exact_counts(*_clean(labels, scores)))


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


def _pro_area(fpr: np.ndarray, pro: np.ndarray, fpr_limit: float) -> float:
    """Area under (fpr, pro) from (0, 0) to ``fpr_limit`` (interpolated), over the limit."""
    fpr, pro = np.r_[0.0, fpr, 1.0], np.r_[0.0, pro, 1.0]
    cut = int(np.searchsorted(fpr, fpr_limit, side="right"))
    if cut < len(fpr):
        pro_at_limit = np.interp(fpr_limit, fpr[cut - 1 : cut + 1], pro[cut - 1 : cut + 1])
        fpr = np.r_[fpr[:cut], fpr_limit]
        pro = np.r_[pro[:cut], pro_at_limit]
    return float(np.sum((fpr[1:] - fpr[:-1]) * (pro[1:] + pro[:-1]) / 2)) / fpr_limit


def _region_weights(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """Per anomalous pixel 1 / (its connected region's size); the number of regions."""
    from scipy import ndimage

    weights = np.zeros(masks.shape, dtype=np.float64)
    regions = 0
    for index, mask in enumerate(masks):
        found, count = ndimage.label(mask)
        if count:
            sizes = np.bincount(found.ravel(), minlength=count + 1).astype(np.float64)
            weights[index] = np.where(found > 0, 1.0 / sizes[found], 0.0)
            regions += count
    return weights, regions


def aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> float:
    """Area under the per-region-overlap curve up to ``fpr_limit``, divided by it.

    Exact curve from one sort of all pixels: each connected ground-truth region weighs the
    same whatever its size; tied scores form one point; the curve is interpolated
    linearly at ``fpr_limit``.
    """
    masks = np.asarray(masks).astype(bool)
    weights, regions = _region_weights(masks)
    normal_count = int(np.count_nonzero(~masks))
    if regions == 0 or normal_count == 0:
        return float("nan")
    labels, values = _clean(masks, np.asarray(maps, dtype=np.float32))
    order = np.argsort(-values, kind="stable")
    scores = values[order]
    fpr = np.cumsum(~labels[order]) / normal_count
    pro = np.cumsum(weights.ravel()[order]) / regions
    last_of_tie = np.r_[scores[1:] != scores[:-1], True]
    return _pro_area(fpr[last_of_tie], pro[last_of_tie], fpr_limit)


def _keys(values: np.ndarray) -> np.ndarray:
    """Histogram bin of each float32 value; bins ascend with the value (sign handled)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).ravel().view(np.uint32)
    ordered = np.where(bits >> 31, ~bits, bits | np.uint32(1 << 31))
    return (ordered >> np.uint32(KEY_SHIFT)).astype(np.intp)


class PixelCurves:
    """Pixel-level AUROC, F1-max, AP, AU-PRO and operational F1, one batch at a time.

    Each score falls in a bin 2^-11 wide relative to its value; scores in one bin count as
    tied (as equal scores do in the exact curves). Memory is fixed (~24 MB) whatever the
    number of images."""

    def __init__(self, threshold: float | None = None, with_aupro: bool = True) -> None:
        self.positives = np.zeros(BINS, dtype=np.int64)
        self.negatives = np.zeros(BINS, dtype=np.int64)
        self.overlap = np.zeros(BINS, dtype=np.float64) if with_aupro else None
        self.regions = 0
        self.threshold = threshold
        self._decided = np.zeros(3, dtype=np.int64)  # tp, predicted, actual at threshold

    def add(self, masks: np.ndarray, maps: np.ndarray) -> None:
        """A batch: boolean masks and float maps of the same shape (N, H, W)."""
        masks = np.asarray(masks).astype(bool)
        maps = np.asarray(maps, dtype=np.float32)
        keys, labels = _keys(maps), masks.ravel()
        self.positives += np.bincount(keys[labels], minlength=BINS)
        self.negatives += np.bincount(keys[~labels], minlength=BINS)
        if self.overlap is not None:
            weights, regions = _region_weights(masks)
            self.overlap += np.bincount(keys[labels], weights=weights.ravel()[labels],
                                        minlength=BINS)
            self.regions += regions
        if self.threshold is not None:
            predicted = maps.ravel() > self.threshold
            self._decided += [np.count_nonzero(predicted & labels),
                              np.count_nonzero(predicted), np.count_nonzero(labels)]

    def _descending(self, values: np.ndarray) -> np.ndarray:
        return values[::-1][self._occupied]

    @property
    def _occupied(self) -> np.ndarray:
        return np.flatnonzero((self.positives + self.negatives)[::-1])

    def auroc(self) -> float:
        return _auroc(self._descending(self.positives), self._descending(self.negatives))

    def f1_max(self) -> float:
        if not self.positives.any():
            return float("nan")
        return _f1_max(self._descending(self.positives), self._descending(self.negatives))

    def average_precision(self) -> float:
        if not self.positives.any():
            return float("nan")
        return _average_precision(self._descending(self.positives),
                                  self._descending(self.negatives))

    def aupro(self, fpr_limit: float = 0.3) -> float:
        normal_count = int(self.negatives.sum())
        if self.overlap is None or self.regions == 0 or normal_count == 0:
            return float("nan")
        fpr = np.cumsum(self._descending(self.negatives)) / normal_count
        pro = np.cumsum(self._descending(self.overlap)) / self.regions
        return _pro_area(fpr, pro, fpr_limit)

    def operational_f1(self) -> float:
        """F1 of ``score > threshold`` over every pixel added (exact, no bins)."""
        tp, predicted, actual = (int(v) for v in self._decided)
        return 2 * tp / (predicted + actual) if predicted + actual else float("nan")


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
