"""A trained model on disk: student weights, merged ONNX graph, trunk graph, manifest.

The manifest is written last and lists a SHA-256 for every file, so a directory is either
complete and verified or rejected. No torch here: the serving process reads these too.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edge_runtime.atomic import atomic_write_bytes, fsync_dir, sha256_file

MANIFEST = "manifest.json"
STUDENT = "student.pt"
MERGED = "paste.onnx"
TRUNK = "trunk.onnx"
FORMAT_VERSION = 1


class ModelDirError(RuntimeError):
    """A model directory is missing, incomplete or fails its checksums."""


@dataclass
class Manifest:
    spec: dict
    files: dict[str, str]
    products: dict[str, dict] = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, indent=2, sort_keys=True).encode()


def read_manifest(directory: str | os.PathLike[str], verify: bool = True) -> Manifest:
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise ModelDirError(f"{directory} is not a trained model (no {MANIFEST})")
    try:
        data = json.loads(path.read_text())
        manifest = Manifest(**data)
    except (ValueError, TypeError) as exc:
        raise ModelDirError(f"{path} is unreadable: {exc}") from exc
    if manifest.format_version != FORMAT_VERSION:
        raise ModelDirError(f"{path}: format {manifest.format_version} is not supported")
    if verify:
        for name, digest in manifest.files.items():
            file = directory / name
            if not file.is_file() or sha256_file(file) != digest:
                raise ModelDirError(f"{file} is missing or fails its checksum")
    return manifest


def write_model_dir(
    target: str | os.PathLike[str],
    write_files: Callable[[Path], None],
    manifest: Manifest,
) -> Path:
    """Build the model in a sibling temp dir, fsync everything, then rename it into place.

    ``write_files(tmp_dir)`` writes the payload; checksums are filled in here.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        write_files(tmp)
        manifest.files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        for file in tmp.iterdir():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
        atomic_write_bytes(tmp / MANIFEST, manifest.to_json())
        fsync_dir(tmp)
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}-{time.time_ns()}")
            os.replace(target, old)
        os.replace(tmp, target)
        fsync_dir(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def update_products(directory: str | os.PathLike[str], products: dict[str, dict]) -> None:
    """Rewrite the manifest's per-product section (thresholds) atomically."""
    directory = Path(directory)
    manifest = read_manifest(directory, verify=False)
    manifest.products = products
    atomic_write_bytes(directory / MANIFEST, manifest.to_json())
