"""Trunk features as floats: fp32 (Feature Replay) and fp16 (half the bytes, ~1e-3 error)."""

from __future__ import annotations

import numpy as np

from edge_runtime.replay.codecs.base import Codec, Encoded, as_rows


class FloatCodec(Codec):
    def __init__(self, dtype: type = np.float32) -> None:
        self.dtype = np.dtype(dtype)
        self.name = "fp32" if self.dtype == np.float32 else "fp16"

    def encode(self, samples: np.ndarray) -> Encoded:
        n = len(samples)
        return Encoded(as_rows(samples.astype(self.dtype), n), np.zeros((n, 0), np.uint8), b"")

    def decode(self, payload, sample_meta, shared_meta, shape) -> np.ndarray:
        values = np.ascontiguousarray(payload).view(self.dtype)
        return values.reshape(len(payload), *shape).astype(np.float32)
