"""Thresholds chosen from normal images alone (operational thresholds).

On a line, nobody has defect labels when a product is added, so the verdict threshold is
a high quantile of held-out normal scores, with a margin, never a label-tuned optimum.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

IMAGE_QUANTILE = 0.99
PIXEL_QUANTILE = 0.999
MARGIN = 1.1  # held-out sets are small; the max of 20 scores under-estimates the tail


@dataclass(frozen=True)
class Thresholds:
    image: float
    pixel: float
    normal_count: int

    def to_dict(self) -> dict:
        return asdict(self)


def calibrate(normal_maps: np.ndarray, normal_scores: np.ndarray) -> Thresholds:
    if len(normal_scores) == 0:
        raise ValueError("calibration needs at least one held-out normal image")
    image = float(np.quantile(normal_scores, IMAGE_QUANTILE)) * MARGIN
    pixel = float(np.quantile(normal_maps, PIXEL_QUANTILE)) * MARGIN
    return Thresholds(image=image, pixel=pixel, normal_count=int(len(normal_scores)))
