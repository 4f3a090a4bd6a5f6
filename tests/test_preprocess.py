import io

import numpy as np
import pytest
from PIL import Image

from edge_runtime.inference.preprocess import ImageError, preprocess


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("mode,size,fmt", [("L", (640, 480), "PNG"), ("RGB", (99, 301), "JPEG"),
                                           ("RGBA", (256, 256), "PNG")])
def test_any_size_gray_or_rgb_becomes_normalised_3x256(mode, size, fmt):
    image = Image.new(mode, size, color=128 if mode == "L" else (128,) * len(mode))
    array = preprocess(_encode(image, fmt), 256)
    assert array.shape == (3, 256, 256) and array.dtype == np.float32
    assert abs(float(array[0].mean()) - (128 / 255 - 0.485) / 0.229) < 0.02


def test_grayscale_and_rgb_of_the_same_picture_agree():
    gray = Image.new("L", (64, 64), 200)
    assert np.allclose(preprocess(_encode(gray, "PNG"), 256),
                       preprocess(_encode(gray.convert("RGB"), "PNG"), 256))


CORRUPT = [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 50]


@pytest.mark.parametrize("payload", CORRUPT)
def test_corrupt_bytes_give_a_clear_error(payload):
    with pytest.raises(ImageError, match="not a readable PNG or JPEG"):
        preprocess(payload, 256)


def test_truncated_png_is_rejected():
    data = _encode(Image.new("RGB", (300, 300), (10, 200, 30)), "PNG")
    with pytest.raises(ImageError):
        preprocess(data[: len(data) // 2], 256)


def test_other_formats_are_rejected():
    with pytest.raises(ImageError, match="format GIF"):
        preprocess(_encode(Image.new("RGB", (8, 8)), "GIF"), 256)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        preprocess(tmp_path / "absent.png", 256)
