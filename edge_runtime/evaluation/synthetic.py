"""Synthetic defects made from normal images: what a product's validation is made of when
only good parts have been captured (the quality benchmark's validation split, and the
daemon's choice between the student and the memory-bank head)."""

from __future__ import annotations

import math

import numpy as np

VERSION = 2  # bump when the generator changes: cached sets are keyed by it
VISIBLE = 12  # grey levels: a pixel changed by more is part of the defect's mask


def synthetic_anomaly(rgb: np.ndarray, rng: np.random.Generator,
                      structural: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A CutPaste-style defect: a patch (or thin scar) of the same image, slightly
    recoloured and partly blended, pasted elsewhere; returns (image, mask).

    Kept subtle on purpose (small, mild jitter, partial opacity): obvious pastes saturate
    every variant at AUROC 1.0 and cannot rank them. With probability ``structural`` the
    defect is structural instead, a misplaced, missing or deformed part in equal shares
    (see structural_defect): local pastes alone reward fine, shallow features and cannot see
    what a layer's context is worth.
    """
    if structural and rng.random() < structural:
        return structural_defect(rgb, rng)
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


def structural_defect(rgb: np.ndarray, rng: np.random.Generator
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The three ways an assembled part goes wrong without a foreign texture: a part sits in
    the wrong place, is missing, or is bent. A missing or bent part that would change too
    little where it fell (flat background) is tried elsewhere, then given up for a misplaced
    one, so every defect is visible."""
    kind = int(rng.integers(0, 3))
    if kind == 0:
        return misplaced_part(rgb, rng)
    make = missing_part if kind == 1 else deformed_part
    for _ in range(4):
        out, mask = make(rgb, rng)
        if mask.mean() >= 0.004:
            return out, mask
    return misplaced_part(rgb, rng)


def missing_part(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A rectangle (2-6% of the image) where the part is gone and what lies behind it shows:
    filled with a block of the same size from the image's border, where a part on a
    line's fixture or background rarely is."""
    size = rgb.shape[0]
    area = rng.uniform(0.02, 0.06) * size * size
    aspect = math.exp(rng.uniform(math.log(0.25), math.log(4.0)))
    h = int(np.clip(math.sqrt(area * aspect), 3, size // 2))
    w = int(np.clip(math.sqrt(area / aspect), 3, size // 2))
    low = size // 16
    y, x = rng.integers(low, size - h - low), rng.integers(low, size - w - low)
    side = int(rng.integers(0, 4))
    along_y, along_x = int(rng.integers(0, size - h)), int(rng.integers(0, size - w))
    by = (0, size - h, along_y, along_y)[side]
    bx = (along_x, along_x, 0, size - w)[side]
    out = rgb.copy()
    out[y : y + h, x : x + w] = rgb[by : by + h, bx : bx + w]
    return out, _visible(rgb, out)


def deformed_part(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A local bend: pixels within a disc (radius 6-12% of the image) pushed sideways by a
    smooth displacement of up to half the radius that fades to nothing at its edge, so the
    texture stays continuous and only the shape is wrong, like a bent lead or a dent."""
    size = rgb.shape[0]
    radius = rng.uniform(0.06, 0.12) * size
    cy, cx = rng.uniform(radius, size - radius, 2)
    angle = rng.uniform(0, 2 * math.pi)
    amplitude = rng.uniform(0.25, 0.5) * radius
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / radius**2
    fade = np.where(r2 < 1, (1 - r2) ** 2, 0).astype(np.float32)
    sy = np.clip(yy - amplitude * math.sin(angle) * fade, 0, size - 1)
    sx = np.clip(xx - amplitude * math.cos(angle) * fade, 0, size - 1)
    out = rgb.copy()
    inside = fade > 0
    out[inside] = _bilinear(rgb.astype(np.float32), sy[inside], sx[inside])
    return out, _visible(rgb, out)


def _bilinear(image: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    y1, x1 = np.minimum(y0 + 1, image.shape[0] - 1), np.minimum(x0 + 1, image.shape[1] - 1)
    wy, wx = (y - y0)[:, None], (x - x0)[:, None]
    top = image[y0, x0] * (1 - wx) + image[y0, x1] * wx
    bottom = image[y1, x0] * (1 - wx) + image[y1, x1] * wx
    return np.clip(np.rint(top * (1 - wy) + bottom * wy), 0, 255).astype(np.uint8)


def _visible(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """The defect's mask: where it changed the image visibly. Pixels it changed by less
    (interpolation, a fill that matches the background) are put back, so every changed
    pixel is in the mask."""
    visible = (np.abs(after.astype(np.int16) - before).max(-1) > VISIBLE)
    after[~visible] = before[~visible]
    return visible
