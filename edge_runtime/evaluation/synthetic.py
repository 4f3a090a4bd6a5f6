"""Synthetic defects made from normal images: what a product's validation is made of when
only good parts have been captured (the quality benchmark's validation split, and the
daemon's choice between the student and the memory-bank head)."""

from __future__ import annotations

import math

import numpy as np


def synthetic_anomaly(rgb: np.ndarray, rng: np.random.Generator,
                      structural: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A CutPaste-style defect: a patch (or thin scar) of the same image, slightly
    recoloured and partly blended, pasted elsewhere; returns (image, mask).

    Kept subtle on purpose (small, mild jitter, partial opacity): obvious pastes saturate
    every variant at AUROC 1.0 and cannot rank them. With probability ``structural`` the
    defect is a misplaced part instead (see misplaced_part): local pastes alone reward fine,
    shallow features and cannot see what a layer's context is worth.
    """
    if structural and rng.random() < structural:
        return misplaced_part(rgb, rng)
    size = rgb.shape[0]
    out, mask = rgb.astype(np.float32).copy(), np.zeros(rgb.shape[:2], bool)
    if rng.random() < 0.5:  # patch
        area = rng.uniform(0.002, 0.02) * size * size
        aspect = math.exp(rng.uniform(math.log(0.3), math.log(3.3)))
        h, w = int(math.sqrt(area * aspect)), int(math.sqrt(area / aspect))
    else:  # scar
        h, w = int(rng.uniform(0.06, 0.2) * size), int(rng.uniform(0.008, 0.02) * size) + 2
        if rng.random() < 0.5:
            h, w = w, h
    h, w = int(np.clip(h, 3, size // 2)), int(np.clip(w, 3, size // 2))
    sy, sx = rng.integers(0, size - h), rng.integers(0, size - w)
    margin = size // 8
    ty, tx = rng.integers(margin, size - h - margin), rng.integers(margin, size - w - margin)
    patch = out[sy : sy + h, sx : sx + w] * rng.uniform(0.85, 1.15, 3) + rng.uniform(-15, 15, 3)
    alpha = rng.uniform(0.4, 1.0)
    out[ty : ty + h, tx : tx + w] = alpha * patch + (1 - alpha) * out[ty : ty + h, tx : tx + w]
    mask[ty : ty + h, tx : tx + w] = True
    return np.clip(out, 0, 255).astype(np.uint8), mask


def misplaced_part(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A large square region (3-8% of the image) moved elsewhere and turned (90/180/270
    degrees or mirrored), at full opacity: every pixel is a normal texture, only where it
    sits and how it is oriented are wrong, like a misplaced or rotated component."""
    size = rgb.shape[0]
    side = int(size * math.sqrt(rng.uniform(0.03, 0.08)))
    out, mask = rgb.copy(), np.zeros(rgb.shape[:2], bool)
    sy, sx, ty, tx = rng.integers(size // 16, size - side - size // 16, 4)
    patch = rgb[sy : sy + side, sx : sx + side]
    turn = int(rng.integers(0, 4))
    patch = np.rot90(patch, turn) if turn else patch[:, ::-1]
    out[ty : ty + side, tx : tx + side] = patch
    mask[ty : ty + side, tx : tx + side] = True
    return out, mask
