"""Which path answers for a trained product: its student or its memory-bank head.

Neither wins everywhere (benchmarks/quality.py's ``head`` and ``select`` rows,
benchmarks/prior_continual.py): the per-product PaDiM on the frozen teacher sees misplaced
and missing parts the student misses, and it cannot forget, while the student is better on
fine surface defects. So the choice is made per product, from what the line has given:
its held-out normal captures (which neither path fitted on) and synthetic defects made
from them, half structural (a misplaced, missing or bent part) and half subtle pastes
(evaluation/synthetic.py), four per capture: with the 20-odd held-out captures a product
has, fewer defects leave the two AUROCs noisier than the gaps they decide on. The
criterion is threshold-free: the mean of pixel AUROC (at half resolution) and image AUROC.

With 20-odd held-out captures that criterion's error (~0.02) is larger than most gaps
between the two paths, so a bare "higher wins" flips on noise. The student answers only
when it is better in at least ``CONFIDENCE`` of paired bootstrap resamples of the captures
(each with the defects made from it); otherwise the head does, the cheaper path (the
features graph and a Gaussian per position: 205 M MACs at 288 px against the student
graph's 208 M) and the one that cannot forget an earlier product as later ones are learnt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from edge_runtime.evaluation import metrics
from edge_runtime.evaluation.synthetic import synthetic_anomaly

STUDENT, HEAD = "student", "head"
STRUCTURAL = 0.5  # share of the synthetic defects that are structural
DEFECTS_PER_IMAGE = 4
MIN_NORMALS = 4  # fewer held-out captures than this: no choice, the student answers
CONFIDENCE = 0.9  # share of resamples in which the student must be better to answer
RESAMPLES = 200
RULE = 2  # choices made under another rule (1: the higher score wins) are made again

# (N, S, S, 3) uint8 RGB -> (N, S, S) maps and (N,) scores
Scorer = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def selection_set(normals: Sequence[np.ndarray], seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, masks, labels): the normals, then DEFECTS_PER_IMAGE defects made from each
    (seeded: the same captures always give the same set). Image i comes from capture
    ``i % len(normals)``."""
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


class _Resampled:
    """AUROCs of one path under capture-weighted resamples: sorted once, each resample
    is a weighted count of negatives below every positive (ties are broken arbitrarily,
    which continuous scores make immaterial)."""

    def __init__(self, values: np.ndarray, positive: np.ndarray, source: np.ndarray):
        order = np.argsort(values, kind="stable")
        self.positive, self.source = positive[order], source[order]

    def auroc(self, weights: np.ndarray) -> float:
        w = weights[self.source]
        negatives = np.where(self.positive, 0.0, w)
        below = np.cumsum(negatives)
        total_pos, total_neg = w[self.positive].sum(), below[-1]
        return float((w * below)[self.positive].sum() / (total_pos * total_neg))


def student_better(outputs: dict[str, tuple[np.ndarray, np.ndarray]], masks: np.ndarray,
                   labels: np.ndarray, captures: int, seed: int = 0) -> float:
    """Share of paired bootstrap resamples of the captures in which the student's score
    beats the head's (maps at quarter resolution: the resamples' spread, not the point
    estimate, is what is wanted here)."""
    source = np.arange(len(labels)) % captures
    pixel_source = np.broadcast_to(source[:, None, None], masks[:, ::4, ::4].shape).ravel()
    paths = {}
    for name, (maps, scores) in outputs.items():
        paths[name] = (_Resampled(maps[:, ::4, ::4].ravel(), masks[:, ::4, ::4].ravel(),
                                  pixel_source),
                       _Resampled(np.asarray(scores, float), labels, source))
    rng = np.random.default_rng(seed)
    wins = 0
    for _ in range(RESAMPLES):
        weights = np.bincount(rng.integers(0, captures, captures), minlength=captures)
        score = {name: pixel.auroc(weights) + image.auroc(weights)
                 for name, (pixel, image) in paths.items()}
        wins += score[STUDENT] > score[HEAD]
    return wins / RESAMPLES


def choose(results: dict) -> str:
    """The student only when it is better with CONFIDENCE; otherwise the cheaper head."""
    return STUDENT if results["student_better"] >= CONFIDENCE else HEAD


def decide(outputs: dict[str, tuple[np.ndarray, np.ndarray]], masks: np.ndarray,
           labels: np.ndarray, captures: int, seed: int = 0) -> dict:
    """``{"choice", "student", "head", "student_better"}`` from both paths' maps and scores
    on a selection set made from ``captures`` normals."""
    results: dict = {name: evaluate(maps, scores, masks, labels)
                     for name, (maps, scores) in outputs.items()}
    results["student_better"] = student_better(outputs, masks, labels, captures, seed)
    return {"choice": choose(results), **results}


def compare(normals: Sequence[np.ndarray], scorers: dict[str, Scorer], seed: int = 0,
            batch: int = 8) -> dict:
    """Both paths on the product's selection set: ``{"choice", "student", "head",
    "student_better", "normals", "defects", "rule"}``."""
    images, masks, labels = selection_set(normals, seed)
    outputs = {}
    for name, scorer in scorers.items():
        parts = [scorer(images[i : i + batch]) for i in range(0, len(images), batch)]
        outputs[name] = (np.concatenate([m for m, _ in parts]),
                         np.concatenate([s for _, s in parts]))
    return {**decide(outputs, masks, labels, len(normals), seed), "normals": len(normals),
            "defects": int(labels.sum()), "rule": RULE}
