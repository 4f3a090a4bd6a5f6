"""Replay codecs, one module each, behind one interface (base.Codec)."""

from __future__ import annotations

import numpy as np

from edge_runtime.replay.codecs.base import Codec, Encoded
from edge_runtime.replay.codecs.floats import FloatCodec
from edge_runtime.replay.codecs.image import ImageCodec
from edge_runtime.replay.codecs.pca import PCACodec
from edge_runtime.replay.codecs.pq import PQCodec
from edge_runtime.replay.codecs.uint8 import Uint8Codec

CODEC_NAMES = ("image", "fp32", "fp16", "uint8_map", "uint8_channel", "pq", "pca")
FEATURE_CODECS = CODEC_NAMES[1:]


def make_codec(name: str, **params) -> Codec:
    """A codec by name; ``params`` are pq's num_subvectors/bits or pca's components."""
    factories = {
        "image": ImageCodec,
        "fp32": lambda: FloatCodec(np.float32),
        "fp16": lambda: FloatCodec(np.float16),
        "uint8_map": lambda: Uint8Codec(per_channel=False),
        "uint8_channel": lambda: Uint8Codec(per_channel=True),
        "pq": lambda: PQCodec(**params),
        "pca": lambda: PCACodec(**params),
    }
    if name not in factories:
        raise ValueError(f"unknown replay codec {name!r}; choose from {', '.join(CODEC_NAMES)}")
    if params and name not in ("pq", "pca"):
        raise ValueError(f"codec {name!r} takes no parameters")
    return factories[name]()


__all__ = ["CODEC_NAMES", "FEATURE_CODECS", "Codec", "Encoded", "make_codec"]
