"""Product quantisation of the per-position channel vectors (FPQ Replay).

Each C-dim vector at each position is cut into ``num_subvectors`` pieces; each piece is
replaced by the index of its nearest centroid in a k-means codebook of 2**bits entries,
trained on the very features it encodes. Codebooks are shared metadata. Codes are stored
one byte each (bits <= 8), byte-aligned for cheap row reads.

k-means is numpy here (greedy k-means++ seeding, then Lloyd), as scikit-learn's KMeans
does it: importing scikit-learn put ~95 MB on the training worker's peak, at the end of
its training phase, to cluster 4-dim vectors.
"""

from __future__ import annotations

import io

import numpy as np

from edge_runtime.replay.codecs.base import Codec, Encoded

MAX_TRAINING_VECTORS = 50_000
# distances computed this many vectors at a time: 8192 x 128 centres x 4 bytes = 4 MB per
# temporary (32768 made encoding the training worker's peak; same codes, no slower)
ROWS = 8_192


def _sq_distances(x: np.ndarray, x_sq: np.ndarray, centres: np.ndarray) -> np.ndarray:
    d = x_sq[:, None] - 2.0 * (x @ centres.T) + (centres * centres).sum(1)[None]
    return np.maximum(d, 0.0, out=d)


def nearest(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre of each row, in chunks (bounded RAM)."""
    out = np.empty(len(x), np.int64)
    for start in range(0, len(x), ROWS):
        part = x[start : start + ROWS]
        out[start : start + ROWS] = _sq_distances(part, (part * part).sum(1), centres).argmin(1)
    return out


def kmeans(x: np.ndarray, k: int, iterations: int = 30, seed: int = 0,
           tol: float = 1e-4) -> np.ndarray:
    """``k`` centres of the rows of ``x``: greedy k-means++ seeding (2 + ln k candidates per
    centre, the one that lowers the inertia most), then Lloyd iterations until the centres
    move less than ``tol`` x the data's mean variance. An empty cluster keeps its centre."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    rng = np.random.default_rng(seed)
    x_sq = (x * x).sum(1)
    centres = np.empty((k, x.shape[1]), np.float32)
    centres[0] = x[rng.integers(len(x))]
    closest = _sq_distances(x, x_sq, centres[:1])[:, 0]
    trials = 2 + int(np.log(k))
    for index in range(1, k):
        weights = np.cumsum(closest, dtype=np.float64)
        picks = np.searchsorted(weights, rng.random(trials) * weights[-1])
        picks = np.minimum(picks, len(x) - 1)
        candidates = np.minimum(closest[:, None], _sq_distances(x, x_sq, x[picks]))
        best = int(candidates.sum(0).argmin())
        centres[index], closest = x[picks[best]], candidates[:, best]
    threshold = tol * float(x.var(0).mean())
    for _ in range(iterations):
        labels = nearest(x, centres)
        counts = np.bincount(labels, minlength=k)
        sums = np.stack([np.bincount(labels, x[:, j], minlength=k) for j in range(x.shape[1])],
                        1)
        moved = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centres)
        shift = float(((moved - centres) ** 2).sum())
        centres = moved.astype(np.float32)
        if shift <= threshold:
            break
    return centres


class PQCodec(Codec):
    name = "pq"

    def __init__(self, num_subvectors: int = 6, bits: int = 7, seed: int = 0) -> None:
        if not 1 <= bits <= 8:
            raise ValueError("pq bits must be in 1..8 (codes are stored one byte each)")
        self.num_subvectors, self.bits, self.seed = num_subvectors, bits, seed

    def params(self) -> dict:
        return {"num_subvectors": self.num_subvectors, "bits": self.bits}

    def _vectors(self, samples: np.ndarray) -> np.ndarray:
        n, channels = samples.shape[:2]
        if channels % self.num_subvectors:
            raise ValueError(f"{channels} channels do not split into {self.num_subvectors}")
        vectors = np.moveaxis(samples, 1, -1).reshape(-1, channels)
        return vectors.reshape(len(vectors), self.num_subvectors, -1)

    def encode(self, samples: np.ndarray) -> Encoded:
        n = len(samples)
        pieces = self._vectors(np.asarray(samples, dtype=np.float32))  # no copy if float32
        rng = np.random.default_rng(self.seed)
        train = pieces[rng.permutation(len(pieces))[:MAX_TRAINING_VECTORS]]
        k = min(2**self.bits, len(train))
        codebooks = np.empty((self.num_subvectors, k, pieces.shape[2]), np.float32)
        codes = np.empty(pieces.shape[:2], np.uint8)
        for m in range(self.num_subvectors):
            codebooks[m] = kmeans(train[:, m], k, seed=self.seed + m)
            codes[:, m] = nearest(np.ascontiguousarray(pieces[:, m]), codebooks[m])
        buffer = io.BytesIO()
        np.save(buffer, codebooks)
        return Encoded(codes.reshape(n, -1), np.zeros((n, 0), np.uint8), buffer.getvalue())

    def decode(self, payload, sample_meta, shared_meta, shape) -> np.ndarray:
        codebooks = np.load(io.BytesIO(shared_meta))
        n, (channels, *spatial) = len(payload), shape
        codes = payload.reshape(n, -1, self.num_subvectors)
        vectors = np.stack([codebooks[m][codes[..., m]] for m in range(self.num_subvectors)], -2)
        vectors = vectors.reshape(n, *spatial, channels)
        return np.ascontiguousarray(np.moveaxis(vectors, -1, 1))
