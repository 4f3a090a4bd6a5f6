"""The anomaly map drawn over the image as a PNG (numpy + Pillow; no matplotlib at run time).

One colour scale, tied to the threshold that decides the verdict: the image score is the
maximum of the map, so a pixel is red only if it alone would make the part a reject, and a
passed part can never show red. Pixels under half the threshold are not tinted at all, so
the part stays visible. A legend band under the image says what the colours mean, with the
score, the threshold and the verdict in words (never colour alone).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CALM = 0.5  # below CALM x threshold a pixel is left untinted
TOP = 2.0  # the scale ends at TOP x threshold
MAX_ALPHA = 0.7
BAND = 64  # legend band height at 256 px width
VERDICT_COLOURS = {"reject": (200, 20, 20), "pass": (20, 140, 60)}
# the ramp: (value / threshold, RGB); yellow-orange under the threshold, red-magenta over it
STOPS = [(CALM, (255, 235, 60)), (1.0, (255, 140, 0)), (1.0 + 1e-6, (235, 0, 0)),
         (TOP, (200, 0, 200))]


def _jet(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB with the classic blue-cyan-yellow-red ramp."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    rgb = np.clip(1.5 - np.abs(4.0 * v - np.array([3.0, 2.0, 1.0])), 0.0, 1.0)
    return (rgb * 255).astype(np.uint8)


def threshold_colours(ratio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """map / threshold -> (RGB float32 (..., 3), alpha float32 (...))."""
    r = np.clip(ratio, 0.0, TOP)
    xs = np.array([s for s, _ in STOPS])
    rgb = np.stack([np.interp(r, xs, [c[i] for _, c in STOPS]) for i in range(3)], axis=-1)
    alpha = np.clip((r - CALM) / (1.0 - CALM), 0.0, 1.0) * MAX_ALPHA
    return rgb.astype(np.float32), alpha.astype(np.float32)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _legend(width: int, threshold: float, score: float | None, verdict: str | None) -> Image:
    scale = width / 256
    band = Image.new("RGB", (width, int(BAND * scale)), (20, 20, 20))
    draw = ImageDraw.Draw(band)
    big, small = _font(int(15 * scale)), _font(int(11 * scale))
    pad = int(6 * scale)
    if verdict:
        label = verdict.upper()
        box = draw.textbbox((pad, pad), label, font=big)
        draw.rectangle((box[0] - 3, box[1] - 3, box[2] + 3, box[3] + 3),
                       fill=VERDICT_COLOURS.get(verdict, (90, 90, 90)))
        draw.text((pad, pad), label, font=big, fill=(255, 255, 255))
        x = box[2] + 3 * pad
    else:
        x = pad
    if score is not None:
        relation = ">" if score > threshold else "<="
        draw.text((x, pad), f"score {score:.4g} {relation} threshold {threshold:.4g}",
                  font=small, fill=(255, 255, 255))
    # the colour bar: 0 .. TOP x threshold, the threshold marked in the middle
    top, height = int(30 * scale), int(10 * scale)
    left, right = pad, width - pad
    ratios = np.linspace(0, TOP, right - left)
    rgb, alpha = threshold_colours(ratios)
    grey = np.full_like(rgb, 128.0)
    row = (grey * (1 - alpha[:, None]) + rgb * alpha[:, None]).astype(np.uint8)
    band.paste(Image.fromarray(np.repeat(row[None], height, axis=0)), (left, top))
    mark = left + int((right - left) / TOP)
    draw.line((mark, top - 3, mark, top + height + 2), fill=(255, 255, 255), width=2)
    text_y = top + height + 2
    draw.text((left, text_y), "0", font=small, fill=(220, 220, 220))
    draw.text((mark - int(24 * scale), text_y), "threshold", font=small, fill=(255, 255, 255))
    end = f"{TOP:g}x"
    draw.text((right - draw.textlength(end, font=small), text_y), end, font=small,
              fill=(220, 220, 220))
    draw.text((left + int(22 * scale), text_y), "normal", font=small, fill=(200, 200, 120))
    draw.text((mark + int(44 * scale), text_y), "anomalous", font=small, fill=(255, 120, 120))
    return band


def verdict_overlay(rgb: np.ndarray, anomaly_map: np.ndarray, threshold: float,
                    score: float | None = None, verdict: str | None = None) -> Image.Image:
    """The part with its anomalous regions tinted on the verdict's scale, and a legend."""
    ratio = anomaly_map.astype(np.float32) / max(float(threshold), 1e-12)
    if ratio.shape != rgb.shape[:2]:
        ratio = np.asarray(Image.fromarray(ratio).resize(rgb.shape[1::-1], Image.BILINEAR))
    colours, alpha = threshold_colours(ratio)
    blended = rgb.astype(np.float32) * (1 - alpha[..., None]) + colours * alpha[..., None]
    picture = Image.fromarray(blended.clip(0, 255).astype(np.uint8))
    band = _legend(picture.width, float(threshold), score, verdict)
    out = Image.new("RGB", (picture.width, picture.height + band.height))
    out.paste(picture, (0, 0))
    out.paste(band, (0, picture.height))
    return out


def verdict_overlay_png(rgb: np.ndarray, anomaly_map: np.ndarray, threshold: float,
                        score: float | None = None, verdict: str | None = None) -> bytes:
    buffer = io.BytesIO()
    verdict_overlay(rgb, anomaly_map, threshold, score, verdict).save(buffer, format="PNG")
    return buffer.getvalue()


def overlay_png(rgb: np.ndarray, anomaly_map: np.ndarray, vmax: float | None = None,
                alpha: float = 0.5) -> bytes:
    """A plain heat map without a threshold (a model that has none): ``vmax`` fixes the
    scale. With a threshold, use ``verdict_overlay_png``."""
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
