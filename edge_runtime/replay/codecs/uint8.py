"""8-bit affine quantisation of trunk features.

``uint8_map``: one min/scale per sample's whole feature map (the paper's FQ Replay).
``uint8_channel``: one min/scale per sample and channel; channels of the MCUNet trunk
differ in range by an order of magnitude, so one scale per map wastes most codes.
"""

from __future__ import annotations

import numpy as np

from edge_runtime.replay.codecs.base import Codec, Encoded, as_rows


class Uint8Codec(Codec):
    def __init__(self, per_channel: bool) -> None:
        self.per_channel = per_channel
        self.name = "uint8_channel" if per_channel else "uint8_map"

    def _axes(self, ndim: int) -> tuple[int, ...]:
        return tuple(range(2, ndim)) if self.per_channel else tuple(range(1, ndim))

    def encode(self, samples: np.ndarray) -> Encoded:
        n = len(samples)
        axes = self._axes(samples.ndim)
        low = samples.min(axis=axes, keepdims=True).astype(np.float32)
        high = samples.max(axis=axes, keepdims=True).astype(np.float32)
        scale = np.maximum(high - low, 1e-12) / 255.0
        codes = np.clip(np.rint((samples - low) / scale), 0, 255).astype(np.uint8)
        meta = np.concatenate([low.reshape(n, -1), scale.reshape(n, -1)], axis=1)
        return Encoded(codes.reshape(n, -1), as_rows(meta.astype(np.float32), n), b"")

    def decode(self, payload, sample_meta, shared_meta, shape) -> np.ndarray:
        n = len(payload)
        meta = np.ascontiguousarray(sample_meta).view(np.float32).reshape(n, 2, -1)
        if self.per_channel:
            view = (n, shape[0]) + (1,) * (len(shape) - 1)
        else:
            view = (n,) + (1,) * len(shape)
        low = meta[:, 0].reshape(view)
        scale = meta[:, 1].reshape(view)
        codes = payload.reshape(n, *shape).astype(np.float32)
        return codes * scale + low
