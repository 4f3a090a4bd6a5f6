"""Thresholds and the verdict: the one place that decides pass or reject.

On a line, nobody has defect labels when a product is added, so the verdict threshold is
a high quantile of held-out normal scores, with a margin, never a label-tuned optimum.
The operator may override it; the override and the calibrated value meet here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

IMAGE_QUANTILE = 0.99
PIXEL_QUANTILE = 0.999
MARGIN = 1.1  # held-out sets are small; the max of 20 scores under-estimates the tail

PASS = "pass"
REJECT = "reject"


@dataclass(frozen=True)
class Thresholds:
    image: float  # verdict threshold on the image score
    pixel: float  # colour scale of the map: pixels above it are anomalous
    normal_count: int = 0  # held-out normal images it was calibrated on
    # their image scores, so an operator can see where the threshold sits among them
    normal_scores: tuple[float, ...] = ()

    def verdict(self, score: float) -> str:
        return REJECT if score > self.image else PASS

    def overridden(self, image: float | None, pixel: float | None) -> Thresholds:
        """The operator's values where set, the calibrated ones elsewhere."""
        return replace(self, image=image or self.image, pixel=pixel or self.pixel)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Thresholds:
        return cls(float(data["image"]), float(data["pixel"]), int(data.get("normal_count", 0)),
                   tuple(float(x) for x in data.get("normal_scores", ())))


def calibrate(normal_maps: np.ndarray, normal_scores: np.ndarray) -> Thresholds:
    if len(normal_scores) == 0:
        raise ValueError("calibration needs at least one held-out normal image")
    image = float(np.quantile(normal_scores, IMAGE_QUANTILE)) * MARGIN
    pixel = float(np.quantile(normal_maps, PIXEL_QUANTILE)) * MARGIN
    return Thresholds(image=image, pixel=pixel, normal_count=int(len(normal_scores)),
                      normal_scores=tuple(round(float(x), 7) for x in normal_scores))
