"""The codec interface: how one product's replay samples are compressed.

A codec turns a group of samples into three parts so the store can account bytes exactly
and evict samples without re-encoding: ``payload`` (one fixed-size row per sample),
``sample_meta`` (per-sample side data such as scales, also one row per sample) and
``shared_meta`` (per-group side data such as codebooks). Payload bytes are the samples;
both kinds of meta count as metadata.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass
class Encoded:
    payload: np.ndarray  # uint8 (n, payload_bytes_per_sample)
    sample_meta: np.ndarray  # uint8 (n, meta_bytes_per_sample), may be (n, 0)
    shared_meta: bytes

    @property
    def payload_bytes(self) -> int:
        return int(self.payload.nbytes)

    @property
    def metadata_bytes(self) -> int:
        return int(self.sample_meta.nbytes) + len(self.shared_meta)


class Codec(ABC):
    """Encodes a group of samples of shape (n, *sample_shape); decodes any subset of rows."""

    name: str = ""
    #: what the codec consumes: "image" (uint8 HWC RGB) or "features" (float32 trunk output)
    input_kind: str = "features"

    def params(self) -> dict:
        return {}

    @abstractmethod
    def encode(self, samples: np.ndarray) -> Encoded: ...

    @abstractmethod
    def decode(
        self, payload: np.ndarray, sample_meta: np.ndarray, shared_meta: bytes, shape: tuple
    ) -> np.ndarray:
        """Rows of one group back to float32 (n, *shape)."""


def as_rows(array: np.ndarray, count: int) -> np.ndarray:
    """View any array as uint8 rows, one per sample."""
    return np.ascontiguousarray(array).view(np.uint8).reshape(count, -1)
