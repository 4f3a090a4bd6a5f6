"""Captures: validated image bytes stored under ``<data>/captures/<product id>/``.

File names come from ids and a random token, never from user input. Every image of a
request is validated before any is stored, so a bad file leaves nothing behind.
"""

from __future__ import annotations

import errno
import io
import secrets
from pathlib import Path

from PIL import Image

from edge_runtime.atomic import atomic_write_bytes
from edge_runtime.camera import MonitoredCamera
from edge_runtime.data_layout import DataLayout
from edge_runtime.inference.preprocess import load_rgb
from edge_runtime.storage import repositories as repo
from edge_runtime.storage.db import Database, StorageFullError

SUFFIX = {"PNG": ".png", "JPEG": ".jpg"}


def image_info(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) of a valid PNG/JPEG, else ImageError."""
    load_rgb(data, 8)  # full decode: rejects corrupt and truncated files
    with Image.open(io.BytesIO(data)) as image:
        return image.format, image.width, image.height


class CaptureService:
    def __init__(self, db: Database, layout: DataLayout, camera: MonitoredCamera) -> None:
        self.db, self.layout, self.camera = db, layout, camera

    def add(self, product: dict, uploads: list[bytes], camera_frames: int = 0) -> dict:
        """Uploads and camera frames, all validated first, then stored."""
        if not uploads and not camera_frames:  # nothing asked, nothing added
            return {"count": 0, "captures": []}
        blobs = [(data, "upload") for data in uploads]
        blobs += [(self.camera.capture(), f"camera:{self.camera.name}")
                  for _ in range(camera_frames)]
        infos = [image_info(data) for data, _ in blobs]
        return {"count": len(blobs), "captures": self._store_all(product["id"], blobs, infos)}

    def _store_all(self, product_id: int, blobs: list[tuple[bytes, str]],
                   infos: list[tuple[str, int, int]]) -> list[dict]:
        """Every file, then every row in one transaction: all or nothing, so a failure (a
        full disk) leaves no file without a row and no row without a file."""
        written: list[Path] = []
        try:
            for data, _ in blobs:
                written.append(self._write(product_id, data, infos[len(written)][0]))
            with self.db.connect() as conn:
                return [repo.add_capture(conn, product_id,
                                         str(path.relative_to(self.layout.captures)), source,
                                         width, height, len(data))
                        for path, (data, source), (_, width, height)
                        in zip(written, blobs, infos, strict=True)]
        except BaseException as exc:
            for path in written:
                path.unlink(missing_ok=True)
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                raise StorageFullError("the disk is full: no capture was stored") from exc
            raise

    def _write(self, product_id: int, data: bytes, fmt: str) -> Path:
        relative = Path(str(product_id)) / f"{secrets.token_hex(8)}{SUFFIX[fmt]}"
        atomic_write_bytes(self.layout.capture(relative), data)
        return self.layout.capture(relative)

    def list(self, product_id: int, limit: int = -1, offset: int = 0) -> dict:
        with self.db.connect(write=False) as conn:
            rows = repo.list_captures(conn, product_id, limit, offset)
            total = repo.count_captures(conn, product_id)
        return {"count": total, "captures": rows}

    def paths(self, product_id: int) -> list[Path]:
        with self.db.connect(write=False) as conn:
            return [self.layout.capture(c["file"]) for c in repo.list_captures(conn, product_id)]
