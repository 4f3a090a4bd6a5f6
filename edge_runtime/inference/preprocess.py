"""Decode and normalise images with Pillow and numpy only (the serving process has no torch).

Any PNG/JPEG of any size, grayscale (8 or 16 bit) or RGB, becomes a float32 (3, S, S) array
with ImageNet normalisation; anything else raises ImageError with a message a user can act
on. Decoding is bounded: the pixel count and the decoded bytes are checked from the header
before anything is decoded, JPEGs decode at a reduced scale (the model sees 256x256), and
at most ``decode_slots`` images decode at once in a process, so a burst of huge uploads
cannot take the board's RAM.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
ACCEPTED_FORMATS = ("PNG", "JPEG")
MAX_PIXELS = 24_000_000  # a 24 MP camera frame; the model sees 256x256
MAX_DECODED_BYTES = 96 * 2**20  # what Pillow would hold for the decoded image
# decoded bytes per pixel of the modes PNG and JPEG produce (Pillow's internal storage)
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "LA": 4, "PA": 4, "RGB": 4, "RGBA": 4,
                    "CMYK": 4, "YCbCr": 4, "I": 4, "F": 4, "I;16": 2, "I;16B": 2}
_slots = threading.BoundedSemaphore(2)
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow's own bomb check agrees with ours


class ImageError(ValueError):
    """The input is not a usable PNG or JPEG image."""


class ImageTooLargeError(ImageError):
    """A valid image that would decode to more pixels or bytes than the limits."""


def set_decode_slots(count: int) -> None:
    """How many images may decode at once in this process (settings: api.decode_slots)."""
    global _slots
    _slots = threading.BoundedSemaphore(max(1, count))


@contextmanager
def _decode_slot():
    slots = _slots
    with slots:
        yield


def _check_size(image: Image.Image, name: str) -> None:
    pixels = image.width * image.height
    decoded = pixels * _BYTES_PER_PIXEL.get(image.mode, 8)
    if pixels > MAX_PIXELS or decoded > MAX_DECODED_BYTES:
        raise ImageTooLargeError(
            f"{name}: {image.width}x{image.height} {image.mode} decodes to "
            f"{decoded / 2**20:.0f} MB; the limit is {MAX_PIXELS / 1e6:.0f} megapixels and "
            f"{MAX_DECODED_BYTES / 2**20:.0f} MB decoded")


def _open(source: bytes | str | os.PathLike[str], size: int | None = None) -> Image.Image:
    """Open, check the header against the limits, decode (JPEG: at no less than ``size``)."""
    name = "upload" if isinstance(source, bytes) else str(source)
    try:
        if isinstance(source, bytes):
            image = Image.open(io.BytesIO(source))
        else:
            image = Image.open(Path(source))
        if image.format not in ACCEPTED_FORMATS:
            raise ImageError(f"{name}: format {image.format} is not accepted (PNG or JPEG only)")
        _check_size(image, name)
        if size and image.format == "JPEG":
            image.draft("RGB", (size, size))  # DCT scaling: decode 1/2..1/8 of the pixels
        with warnings.catch_warnings(), _decode_slot():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:  # not an OSError: would have been a 500
        raise ImageTooLargeError(f"{name}: {exc}") from exc
    except FileNotFoundError as exc:
        raise ImageError(f"{name}: no such file") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"{name}: not a readable PNG or JPEG image") from exc
    except (OSError, SyntaxError, ValueError, Warning) as exc:
        raise ImageError(f"{name}: not a readable PNG or JPEG image ({exc})") from exc
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB. 16-bit grayscale is scaled, not clipped (``convert`` would clip every
    value above 255 to white); EXIF orientation is applied, as a viewer would."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        high = np.asarray(image).astype(np.uint32) >> 8  # 16-bit range -> 8-bit range
        image = Image.fromarray(np.clip(high, 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8), "L")
    else:
        image = ImageOps.exif_transpose(image)
    return image if image.mode == "RGB" else image.convert("RGB")


def load_rgb(source: bytes | str | os.PathLike[str], size: int) -> np.ndarray:
    """uint8 (size, size, 3) RGB, for overlays and raw-image replay."""
    image = _to_rgb(_open(source, size))
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR, reducing_gap=3.0)
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
