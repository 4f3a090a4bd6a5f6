"""Raw images (uint8 RGB): the classic Replay, and the only choice for STFPM mode.

Decoding yields the normalised image; the trunk turns it into features when there is one.
"""

from __future__ import annotations

import numpy as np

from edge_runtime.inference.preprocess import normalise
from edge_runtime.replay.codecs.base import Codec, Encoded


class ImageCodec(Codec):
    name = "image"
    input_kind = "image"

    def encode(self, samples: np.ndarray) -> Encoded:
        if samples.dtype != np.uint8 or samples.ndim != 4 or samples.shape[-1] != 3:
            raise ValueError("image replay stores uint8 RGB arrays of shape (n, H, W, 3)")
        n = len(samples)
        return Encoded(samples.reshape(n, -1).copy(), np.zeros((n, 0), np.uint8), b"")

    def decode(self, payload, sample_meta, shared_meta, shape) -> np.ndarray:
        height, width, _ = shape
        return normalise(payload.reshape(len(payload), height, width, 3))
