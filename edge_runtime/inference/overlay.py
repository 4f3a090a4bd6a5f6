"""The anomaly map drawn over the image as a PNG (numpy + Pillow; no matplotlib at run time)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def _jet(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB with the classic blue-cyan-yellow-red ramp."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    rgb = np.clip(1.5 - np.abs(4.0 * v - np.array([3.0, 2.0, 1.0])), 0.0, 1.0)
    return (rgb * 255).astype(np.uint8)


def overlay_png(rgb: np.ndarray, anomaly_map: np.ndarray, vmax: float | None = None,
                alpha: float = 0.5) -> bytes:
    """``vmax`` fixes the colour scale (e.g. 2x the product threshold) so good parts look calm."""
    top = float(vmax) if vmax and vmax > 0 else float(anomaly_map.max()) or 1.0
    heat = _jet(anomaly_map / top).astype(np.float32)
    if heat.shape[:2] != rgb.shape[:2]:
        heat = np.asarray(Image.fromarray(heat.astype(np.uint8)).resize(rgb.shape[1::-1]))
    blended = (1 - alpha) * rgb.astype(np.float32) + alpha * heat
    buffer = io.BytesIO()
    Image.fromarray(blended.clip(0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def map_png16(anomaly_map: np.ndarray, vmax: float) -> bytes:
    """The raw map as a 16-bit grayscale PNG, scaled so 65535 = ``vmax``."""
    scaled = np.clip(anomaly_map / max(vmax, 1e-12), 0.0, 1.0) * 65535
    buffer = io.BytesIO()
    Image.fromarray(scaled.astype(np.uint16)).save(buffer, format="PNG")
    return buffer.getvalue()
