"""PCA of the per-position channel vectors (the thesis's comparison point).

The basis (mean + top components) is fitted on the group it encodes and is shared
metadata; each position keeps ``components`` coefficients in fp16.
"""

from __future__ import annotations

import io

import numpy as np

from edge_runtime.replay.codecs.base import Codec, Encoded, as_rows


class PCACodec(Codec):
    name = "pca"

    def __init__(self, components: int = 8) -> None:
        self.components = components

    def params(self) -> dict:
        return {"components": self.components}

    def encode(self, samples: np.ndarray) -> Encoded:
        n, channels = samples.shape[:2]
        vectors = np.moveaxis(samples, 1, -1).reshape(-1, channels).astype(np.float64)
        mean = vectors.mean(axis=0)
        _, _, vt = np.linalg.svd(vectors - mean, full_matrices=False)
        basis = vt[: self.components].astype(np.float32)
        coefficients = ((vectors - mean) @ basis.T).astype(np.float16)
        buffer = io.BytesIO()
        np.savez(buffer, mean=mean.astype(np.float32), basis=basis)
        return Encoded(as_rows(coefficients.reshape(n, -1), n), np.zeros((n, 0), np.uint8),
                       buffer.getvalue())

    def decode(self, payload, sample_meta, shared_meta, shape) -> np.ndarray:
        saved = np.load(io.BytesIO(shared_meta))
        n, (channels, *spatial) = len(payload), shape
        coefficients = np.ascontiguousarray(payload).view(np.float16)
        coefficients = coefficients.reshape(n, -1, self.components)
        vectors = coefficients.astype(np.float32) @ saved["basis"] + saved["mean"]
        return np.ascontiguousarray(np.moveaxis(vectors.reshape(n, *spatial, channels), -1, 1))
