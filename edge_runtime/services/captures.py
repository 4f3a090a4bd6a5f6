"""Captures: validated image bytes stored under ``<data>/captures/<product id>/``.

File names come from ids and a random token, never from user input. Every image of a
request is validated before any is stored, so a bad file leaves nothing behind.
"""

from __future__ import annotations

import errno
import io
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from edge_runtime.atomic import atomic_write_bytes
from edge_runtime.camera import MonitoredCamera
from edge_runtime.data_layout import DataLayout
from edge_runtime.inference.preprocess import load_rgb
from edge_runtime.services.errors import GoneError, NotFoundError
from edge_runtime.storage import repositories as repo
from edge_runtime.storage.db import Database, StorageFullError

SUFFIX = {"PNG": ".png", "JPEG": ".jpg"}
_UNSAFE = re.compile(r"[^A-Za-z0-9 _.()\-]")


def clean_name(name: str | None) -> str:
    """An uploaded file name for display: the last path part, printable, 100 chars."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    return _UNSAFE.sub("_", base)[:100]


def image_info(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) of a valid PNG/JPEG, else ImageError."""
    load_rgb(data, 8)  # full decode: rejects corrupt and truncated files
    with Image.open(io.BytesIO(data)) as image:
        return image.format, image.width, image.height


class CaptureService:
    def __init__(self, db: Database, layout: DataLayout, camera: MonitoredCamera,
                 on_stored: Callable[[dict], None] | None = None) -> None:
        self.db, self.layout, self.camera = db, layout, camera
        self.on_stored = on_stored  # e.g. queue the product's memory-bank head fit

    def add(self, product: dict, uploads: list[bytes], camera_frames: int = 0,
            names: list[str] | None = None, source: str = "upload") -> dict:
        """Uploads and camera frames, all validated first, then stored all or nothing.
        ``names`` are the uploaded file names, kept for the operator to recognise (never used
        as paths)."""
        if not uploads and not camera_frames:  # nothing asked, nothing added
            return {"count": 0, "captures": []}
        names = list(names or [])
        blobs = [(data, source, clean_name(names[i] if i < len(names) else ""))
                 for i, data in enumerate(uploads)]
        blobs += [(self.camera.capture(), f"camera:{self.camera.name}", "")
                  for _ in range(camera_frames)]
        infos = [image_info(data) for data, _, _ in blobs]
        stored = self._store_all(product["id"], blobs, infos)
        if self.on_stored:
            self.on_stored(product)
        return {"count": len(stored), "captures": stored}

    def _store_all(self, product_id: int, blobs: list[tuple[bytes, str, str]],
                   infos: list[tuple[str, int, int]]) -> list[dict]:
        """Every file, then every row in one transaction: all or nothing, so a failure (a
        full disk) leaves no file without a row and no row without a file."""
        written: list[Path] = []
        try:
            for data, _, _ in blobs:
                written.append(self._write(product_id, data, infos[len(written)][0]))
            with self.db.connect() as conn:
                return [repo.add_capture(conn, product_id,
                                         str(path.relative_to(self.layout.captures)), source,
                                         width, height, len(data), name)
                        for path, (data, source, name), (_, width, height)
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

    def get(self, product_id: int, capture_id: int) -> dict:
        with self.db.connect(write=False) as conn:
            row = repo.get_capture(conn, capture_id)
        if row is None or row["product_id"] != product_id:
            raise NotFoundError(f"product {product_id} has no capture {capture_id}")
        return row

    def image(self, product_id: int, capture_id: int, thumbnail: int = 0) -> tuple[bytes, str]:
        """The stored bytes (and media type), or a JPEG thumbnail ``thumbnail`` px wide."""
        row = self.get(product_id, capture_id)
        path = self.layout.capture(row["file"])
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise GoneError(f"the file of capture {capture_id} is missing") from exc
        if not thumbnail:
            return data, "image/png" if path.suffix == ".png" else "image/jpeg"
        with Image.open(io.BytesIO(data)) as image:
            image = image.convert("RGB")
            image.thumbnail((thumbnail, thumbnail))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=80)
        return buffer.getvalue(), "image/jpeg"

    def delete(self, product_id: int, capture_id: int) -> None:
        """The row first: a crash between the two leaves an orphan file, never a row
        pointing at nothing that training would trip over."""
        row = self.get(product_id, capture_id)
        with self.db.connect() as conn:
            repo.delete_capture(conn, capture_id)
        self.layout.capture(row["file"]).unlink(missing_ok=True)

    def delete_files(self, product_id: int) -> None:
        shutil.rmtree(self.layout.captures / str(product_id), ignore_errors=True)

    def list(self, product_id: int, limit: int = -1, offset: int = 0) -> dict:
        with self.db.connect(write=False) as conn:
            rows = repo.list_captures(conn, product_id, limit, offset)
            total = repo.count_captures(conn, product_id)
        return {"count": total, "captures": rows}

    def paths(self, product_id: int) -> list[Path]:
        with self.db.connect(write=False) as conn:
            return [self.layout.capture(c["file"]) for c in repo.list_captures(conn, product_id)]
