"""Which samples of a product the replay store keeps: the selection policy.

Avalanche-style split: this module decides *what* is stored, training decides *how* it
is replayed. A policy returns an order of a product's samples; the store keeps a prefix
of it, and when a quota shrinks it keeps a shorter prefix, so every policy is nested by
construction (the samples kept at a small budget are a subset of those kept at a larger).

- ``random``: a seeded uniform permutation (seeded by the store seed and the product name).
- ``kcenter``: greedy k-center (farthest-point) order on pooled trunk features: start at the
  sample nearest the mean, then repeatedly take the sample farthest from all taken so far.
  Any prefix covers the product's feature space about as well as a prefix can (a greedy
  2-approximation of the k-center radius), so small budgets keep diverse samples instead
  of near-duplicates.
"""

from __future__ import annotations

from zlib import crc32

import numpy as np

SELECTIONS = ("random", "kcenter")
POOL_GRID = 4  # descriptors: mean over a 4x4 grid of cells, per channel


def descriptors(samples: np.ndarray, input_kind: str) -> np.ndarray:
    """One vector per sample: channels averaged over a coarse spatial grid, so the
    distance sees both what the features are and roughly where."""
    x = np.asarray(samples, np.float32)
    if input_kind == "image":  # (n, H, W, 3) uint8 -> channels first
        x = np.moveaxis(x, -1, 1)
    if x.ndim == 2:
        return x
    n, c = x.shape[:2]
    h, w = x.shape[2], x.shape[3] if x.ndim > 3 else 1
    x = x.reshape(n, c, h, w)
    gh, gw = min(POOL_GRID, h), min(POOL_GRID, w)
    x = x[:, :, : h - h % gh, : w - w % gw].reshape(n, c, gh, h // gh, gw, w // gw)
    return x.mean(axis=(3, 5)).reshape(n, -1)


def kcenter_order(points: np.ndarray) -> np.ndarray:
    """Greedy farthest-point order of all rows of ``points`` (deterministic)."""
    n = len(points)
    points = points.astype(np.float64)
    first = int(np.argmin(((points - points.mean(axis=0)) ** 2).sum(axis=1)))
    order, taken = [first], np.zeros(n, bool)
    nearest = ((points - points[first]) ** 2).sum(axis=1)
    for _ in range(n - 1):
        taken[order[-1]] = True
        nearest[taken] = -1.0  # duplicates (distance 0) must still come after the rest
        pick = int(np.argmax(nearest))
        order.append(pick)
        nearest = np.minimum(nearest, ((points - points[pick]) ** 2).sum(axis=1))
    return np.asarray(order, dtype=np.int64)


def selection_order(policy: str, samples: np.ndarray, input_kind: str, seed: int,
                    product: str) -> np.ndarray:
    """A permutation of ``range(len(samples))``; the store keeps its first k rows."""
    if policy == "random":
        return np.random.default_rng([seed, crc32(product.encode())]).permutation(len(samples))
    if policy == "kcenter":
        return kcenter_order(descriptors(samples, input_kind))
    raise ValueError(f"unknown replay selection {policy!r}; choose from {', '.join(SELECTIONS)}")
