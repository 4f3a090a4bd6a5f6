"""Decode and normalise images with Pillow and numpy only (the serving process has no torch).

Any PNG/JPEG of any size, grayscale or RGB, becomes a float32 (3, S, S) array with
ImageNet normalisation; anything else raises ImageError with a message a user can act on.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
ACCEPTED_FORMATS = ("PNG", "JPEG")
MAX_PIXELS = 40_000_000  # refuse decompression bombs long before they eat the board's RAM


class ImageError(ValueError):
    """The input is not a usable PNG or JPEG image."""


def _open(source: bytes | str | os.PathLike[str]) -> Image.Image:
    name = "upload" if isinstance(source, bytes) else str(source)
    try:
        if isinstance(source, bytes):
            image = Image.open(io.BytesIO(source))
        else:
            image = Image.open(Path(source))
        if image.format not in ACCEPTED_FORMATS:
            raise ImageError(f"{name}: format {image.format} is not accepted (PNG or JPEG only)")
        if image.width * image.height > MAX_PIXELS:
            raise ImageError(f"{name}: {image.width}x{image.height} pixels is too large")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
    except ImageError:
        raise
    except FileNotFoundError as exc:
        raise ImageError(f"{name}: no such file") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"{name}: not a readable PNG or JPEG image") from exc
    except (OSError, SyntaxError, ValueError, Warning) as exc:
        raise ImageError(f"{name}: not a readable PNG or JPEG image ({exc})") from exc
    return image


def load_rgb(source: bytes | str | os.PathLike[str], size: int) -> np.ndarray:
    """uint8 (size, size, 3) RGB, for overlays and raw-image replay."""
    image = _open(source)
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def fit_rgb(rgb: np.ndarray, size: int) -> np.ndarray:
    """A decoded RGB frame (H, W, 3) at (size, size), resized exactly as load_rgb does."""
    if rgb.shape == (size, size, 3) and rgb.dtype == np.uint8:
        return rgb
    image = Image.fromarray(np.ascontiguousarray(rgb[..., :3], dtype=np.uint8))
    return np.asarray(image.resize((size, size), Image.BILINEAR), dtype=np.uint8)


def normalise(rgb: np.ndarray) -> np.ndarray:
    """uint8 HWC (or NHWC) RGB -> float32 CHW (or NCHW) with ImageNet mean/std."""
    scaled = (rgb.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(np.moveaxis(scaled, -1, -3))


def preprocess(source: bytes | str | os.PathLike[str], size: int) -> np.ndarray:
    """One image -> float32 (3, size, size), ready for the trunk."""
    return normalise(load_rgb(source, size))


def load_mask(path: str | os.PathLike[str] | None, size: int) -> np.ndarray:
    """Ground-truth mask as bool (size, size); all False when there is no mask (good image)."""
    if path is None:
        return np.zeros((size, size), dtype=bool)
    mask = Image.open(path).convert("L")
    if mask.size != (size, size):
        mask = mask.resize((size, size), Image.NEAREST)
    return np.asarray(mask) > 127
