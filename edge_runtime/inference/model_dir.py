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
from edge_runtime.inference.thresholds import Thresholds

MANIFEST = "manifest.json"
STUDENT = "student.pt"
MERGED = "paste.onnx"
TRUNK = "trunk.onnx"
CURRENT = "CURRENT"  # in a models root: the name of the live version, replaced atomically
FORMAT_VERSION = 2  # 2: typed per-product thresholds; 1 (read only): products.*.thresholds


class ModelDirError(RuntimeError):
    """A model directory is missing, incomplete or fails its checksums."""


@dataclass
class Manifest:
    spec: dict
    files: dict[str, str]
    thresholds: dict[str, Thresholds] = field(default_factory=dict)  # per product name
    training: dict = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    format_version: int = FORMAT_VERSION

    @property
    def image_size(self) -> int:
        return int(self.spec["image_size"])

    def to_json(self) -> bytes:
        data = self.__dict__ | {"thresholds": {name: t.to_dict()
                                               for name, t in self.thresholds.items()}}
        return json.dumps(data, indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: dict) -> Manifest:
        version = data.get("format_version")
        if version == 1:  # per-product {"thresholds": {...}} wrappers
            products = data.pop("products", {})
            data["thresholds"] = {n: p["thresholds"] for n, p in products.items()
                                  if p.get("thresholds")}
            data["format_version"] = FORMAT_VERSION
        elif version != FORMAT_VERSION:
            raise ValueError(f"format {version} is not supported (this edge-runtime reads "
                             f"1..{FORMAT_VERSION})")
        data["thresholds"] = {n: Thresholds.from_dict(t) for n, t in data["thresholds"].items()}
        return cls(**data)


def read_manifest(directory: str | os.PathLike[str], verify: bool = True) -> Manifest:
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise ModelDirError(f"{directory} is not a trained model (no {MANIFEST})")
    try:
        manifest = Manifest.from_json(json.loads(path.read_text()))
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelDirError(f"{path} is unreadable: {exc}") from exc
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


def set_thresholds(directory: str | os.PathLike[str], thresholds: dict[str, Thresholds]) -> None:
    """Rewrite the manifest's per-product thresholds atomically."""
    directory = Path(directory)
    manifest = read_manifest(directory, verify=False)
    manifest.thresholds = dict(thresholds)
    atomic_write_bytes(directory / MANIFEST, manifest.to_json())


def current_version(root: str | os.PathLike[str]) -> str | None:
    """The version CURRENT names in a models root, or None (day one, or unreadable)."""
    try:
        name = (Path(root) / CURRENT).read_bytes().decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return name if name and "/" not in name and not name.startswith(".") else None
