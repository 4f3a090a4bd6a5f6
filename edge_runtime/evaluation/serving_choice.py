"""Which path answers for a trained product: its student or its memory-bank head.

Neither wins everywhere (benchmarks/quality.py's ``head`` and ``select`` rows,
benchmarks/prior_continual.py): the per-product PaDiM on the frozen teacher sees misplaced
and missing parts the student misses, and it cannot forget, while the student is better on
fine surface defects. So the choice is made per product, from what the line has given:
its held-out normal captures (which neither path fitted on) and synthetic defects made
from them, half misplaced parts and half subtle pastes (evaluation/synthetic.py). The
criterion is fixed in advance and threshold-free: the mean of pixel AUROC (at half
resolution) and image AUROC; a tie keeps the student.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from edge_runtime.evaluation import metrics
from edge_runtime.evaluation.synthetic import synthetic_anomaly

STUDENT, HEAD = "student", "head"
STRUCTURAL = 0.5  # share of the synthetic defects that are misplaced parts
DEFECTS_PER_IMAGE = 2
MIN_NORMALS = 4  # fewer held-out captures than this: no choice, the student answers

# (N, S, S, 3) uint8 RGB -> (N, S, S) maps and (N,) scores
Scorer = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def selection_set(normals: Sequence[np.ndarray], seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, masks, labels): the normals, then DEFECTS_PER_IMAGE defects made from each
    (seeded: the same captures always give the same set)."""
    rng = np.random.default_rng(seed)
    made = [synthetic_anomaly(rgb, rng, STRUCTURAL)
            for _ in range(DEFECTS_PER_IMAGE) for rgb in normals]
    size = normals[0].shape[:2]
    images = np.stack([*normals, *(image for image, _ in made)])
    masks = np.concatenate([np.zeros((len(normals), *size), bool),
                            np.stack([mask for _, mask in made])])
    labels = np.r_[np.zeros(len(normals), bool), np.ones(len(made), bool)]
    return images, masks, labels


def evaluate(maps: np.ndarray, scores: np.ndarray, masks: np.ndarray,
             labels: np.ndarray) -> dict[str, float]:
    pixel = metrics.auroc(masks[:, ::2, ::2], maps[:, ::2, ::2])
    image = metrics.auroc(labels, scores)
    return {"pixel_auroc": round(pixel, 4), "image_auroc": round(image, 4),
            "score": round((pixel + image) / 2, 4)}


def choose(results: dict[str, dict[str, float]]) -> str:
    """The head only when it scores strictly higher than the student."""
    return HEAD if results[HEAD]["score"] > results[STUDENT]["score"] else STUDENT


def compare(normals: Sequence[np.ndarray], scorers: dict[str, Scorer], seed: int = 0,
            batch: int = 8) -> dict:
    """Both paths on the product's selection set: ``{"choice", "student", "head",
    "normals", "defects"}``."""
    images, masks, labels = selection_set(normals, seed)
    results = {}
    for name, scorer in scorers.items():
        parts = [scorer(images[i : i + batch]) for i in range(0, len(images), batch)]
        maps = np.concatenate([m for m, _ in parts])
        scores = np.concatenate([s for _, s in parts])
        results[name] = evaluate(maps, scores, masks, labels)
    return {"choice": choose(results), **results, "normals": len(normals),
            "defects": int(labels.sum())}
