"""Captures: validated image bytes stored under ``<data>/captures/<product id>/``.

File names come from ids and a random token, never from user input.
"""

from __future__ import annotations

import io
import secrets
from pathlib import Path

from PIL import Image

from edge_runtime import repositories as repo
from edge_runtime.atomic import atomic_write_bytes
from edge_runtime.db import Database
from edge_runtime.preprocess import ImageError, load_rgb

SUFFIX = {"PNG": ".png", "JPEG": ".jpg"}


def image_info(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) of a valid PNG/JPEG, else ImageError."""
    load_rgb(data, 8)  # full decode: rejects corrupt and truncated files
    with Image.open(io.BytesIO(data)) as image:
        return image.format, image.width, image.height


def store_capture(db: Database, root: Path, product_id: int, data: bytes, source: str,
                  info: tuple[str, int, int] | None = None) -> dict:
    """``info`` is image_info(data) when the caller already validated the bytes."""
    fmt, width, height = info or image_info(data)
    relative = Path(str(product_id)) / f"{secrets.token_hex(8)}{SUFFIX[fmt]}"
    atomic_write_bytes(root / relative, data)
    with db.connect() as conn:
        return repo.add_capture(conn, product_id, str(relative), source, width, height,
                                len(data))


def capture_paths(db: Database, root: Path, product_id: int) -> list[Path]:
    with db.connect(write=False) as conn:
        return [root / c["file"] for c in repo.list_captures(conn, product_id)]


__all__ = ["ImageError", "capture_paths", "image_info", "store_capture"]
