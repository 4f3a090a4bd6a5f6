"""Product quantisation of the per-position channel vectors (FPQ Replay).

Each C-dim vector at each position is cut into ``num_subvectors`` pieces; each piece is
replaced by the index of its nearest centroid in a k-means codebook of 2**bits entries,
trained (scikit-learn KMeans) on the very features it encodes. Codebooks are shared
metadata. Codes are stored one byte each (bits <= 8), byte-aligned for cheap row reads.
"""

from __future__ import annotations

import io

import numpy as np

from edge_runtime.replay.codecs.base import Codec, Encoded

MAX_TRAINING_VECTORS = 50_000


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
        from sklearn.cluster import KMeans  # heavy; only the training worker encodes

        n = len(samples)
        pieces = self._vectors(samples.astype(np.float32))
        rng = np.random.default_rng(self.seed)
        train = pieces[rng.permutation(len(pieces))[:MAX_TRAINING_VECTORS]]
        k = min(2**self.bits, len(train))
        codebooks = np.empty((self.num_subvectors, k, pieces.shape[2]), np.float32)
        codes = np.empty(pieces.shape[:2], np.uint8)
        for m in range(self.num_subvectors):
            km = KMeans(n_clusters=k, n_init=1, max_iter=30, random_state=self.seed)
            km.fit(train[:, m])
            codebooks[m] = km.cluster_centers_
            codes[:, m] = km.predict(pieces[:, m])
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
