"""Model bundles: one archive that moves a trained model from one board to the others.

A bundle is an uncompressed tar (ONNX graphs and weights do not compress): ``bundle.json``
first (bundle format, model spec, model format, products, a SHA-256 for every other file),
then ``model/`` (the version directory: manifest, graphs, student, per-product thresholds)
and optionally ``replay/`` (the replay store, so the next board can keep learning).

Import trusts nothing: only regular files named in ``bundle.json`` under model/ or replay/
are read, each is hashed while it is written to a temp directory and must match, the model
manifest's own checksums are verified again, and only then is the directory renamed into
the models root as a new version. It goes live only when the caller asks.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import socket
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.atomic import fsync_dir, sha256_file
from edge_runtime.inference import model_dir as md
from edge_runtime.replay.accounting import MANIFEST as REPLAY_MANIFEST
from edge_runtime.services.errors import ConflictError, InvalidRequestError, NotFoundError
from edge_runtime.services.models import ModelRegistry

BUNDLE_FORMAT = 1
INDEX = "bundle.json"
_MEMBER = re.compile(r"^(model|replay)/[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_CHUNK = 1 << 20
VERSION_PATTERN = r"v[0-9A-Za-z._-]{1,80}"


class BundleError(InvalidRequestError):
    """The archive is not a bundle this board can install (HTTP 422)."""


@dataclass(frozen=True)
class ImportResult:
    version: str
    source_version: str
    products: list[str]
    promoted: bool
    replay_installed: bool
    already_installed: bool


def _version_dir(registry: ModelRegistry, version: str) -> Path:
    if not re.fullmatch(VERSION_PATTERN, version) or ".." in version:
        raise NotFoundError(f"no model version {version!r}")
    directory = registry.root / version
    if not (directory / md.MANIFEST).is_file():
        raise NotFoundError(f"no model version {version!r}")
    return directory


def _replay_snapshot(replay_dir: Path) -> tuple[bytes, dict[str, str]]:
    """The committed replay manifest (read once) and the group files it names, which are
    never rewritten in place."""
    manifest = replay_dir / REPLAY_MANIFEST
    if not manifest.is_file():
        return b"", {}
    raw = manifest.read_bytes()
    files = {f"replay/{REPLAY_MANIFEST}": hashlib.sha256(raw).hexdigest()}
    for group in json.loads(raw)["groups"]:
        files[f"replay/{group['file']}"] = group["sha256"]
    return raw, files


def export_bundle(registry: ModelRegistry, version: str, out_dir: Path,
                  replay_dir: Path | None = None) -> Path:
    """Write the bundle of ``version`` into ``out_dir``; the caller removes it after sending."""
    directory = _version_dir(registry, version)
    try:
        manifest = md.read_manifest(directory, verify=True)
    except md.ModelDirError as exc:
        raise ConflictError(f"version {version} fails verification: {exc}") from exc
    sources = {f"model/{name}": directory / name for name in [*manifest.files, md.MANIFEST]}
    files = {name: sha256_file(path) for name, path in sources.items()}
    snapshot = {}
    if replay_dir is not None:
        raw, replay = _replay_snapshot(replay_dir)
        if replay:
            snapshot[f"replay/{REPLAY_MANIFEST}"] = raw
        files.update(replay)
        sources.update({name: replay_dir / name.split("/", 1)[1] for name in replay})
    index = {
        "bundle_format": BUNDLE_FORMAT,
        "model_version": version,
        "model_format_version": manifest.format_version,
        "spec": manifest.spec,
        "products": sorted(manifest.thresholds),
        "created_at": time.time(),
        "source_device": socket.gethostname(),
        "edge_runtime_version": __import__("edge_runtime").__version__,
        "files": files,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"bundle-{version}-", suffix=".tar", dir=out_dir)
    os.close(fd)
    path = Path(name)
    try:
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, INDEX, json.dumps(index, indent=2, sort_keys=True).encode())
            for name, source in sources.items():
                if name in snapshot:
                    _add_bytes(tar, name, snapshot[name])
                else:
                    tar.add(source, arcname=name, recursive=False)
    except FileNotFoundError as exc:  # a training job replaced the replay store meanwhile
        path.unlink(missing_ok=True)
        raise ConflictError(f"the replay store changed during the export; retry ({exc})") from exc
    return path


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
    tar.addfile(info, io.BytesIO(data))


def _read_index(tar: tarfile.TarFile) -> dict:
    first = tar.next()
    if first is None or first.name != INDEX or not first.isfile() or first.size > _CHUNK:
        raise BundleError(f"not an edge-runtime model bundle (no {INDEX} first)")
    try:
        index = json.loads(tar.extractfile(first).read())
        files = index["files"]
        fmt = int(index["bundle_format"])
        model_fmt = int(index["model_format_version"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{INDEX} is unreadable: {exc}") from exc
    if fmt > BUNDLE_FORMAT:
        raise BundleError(f"this bundle has format {fmt}; this edge-runtime reads bundle formats "
                          f"up to {BUNDLE_FORMAT}: upgrade edge-runtime on this board first")
    if model_fmt > md.FORMAT_VERSION:
        raise BundleError(f"the model in this bundle has format {model_fmt}; this edge-runtime "
                          f"reads model formats up to {md.FORMAT_VERSION}: upgrade edge-runtime "
                          "on this board first")
    if not isinstance(files, dict) or not all(_MEMBER.match(n) for n in files):
        raise BundleError(f"{INDEX} names files outside model/ and replay/")
    if f"model/{md.MANIFEST}" not in files:
        raise BundleError("the bundle holds no model manifest")
    return index


def _check_spec(registry: ModelRegistry, index: dict) -> None:
    live = registry.live
    if live is not None and live.manifest.spec != index["spec"]:
        raise ConflictError(
            f"the bundle's model spec {json.dumps(index['spec'], sort_keys=True)} differs from "
            f"this board's {json.dumps(live.manifest.spec, sort_keys=True)}: its models "
            "cannot continue from one another")


def _extract_verified(tar: tarfile.TarFile, files: dict[str, str], target: Path) -> None:
    seen = set()
    for member in tar:  # the iteration starts again with the index, read already
        name = member.name
        if name == INDEX and INDEX not in seen:
            seen.add(INDEX)
            continue
        if name not in files or name in seen or not member.isfile():
            raise BundleError(f"unexpected entry {name!r} in the bundle (tampered?)")
        seen.add(name)
        digest = hashlib.sha256()
        out = target / name
        out.parent.mkdir(exist_ok=True)
        with tar.extractfile(member) as src, open(out, "wb") as dst:
            for chunk in iter(lambda src=src: src.read(_CHUNK), b""):
                digest.update(chunk)
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        if digest.hexdigest() != files[name]:
            raise BundleError(f"{name} fails its checksum: the bundle was altered or damaged")
    missing = sorted(set(files) - seen - {INDEX})
    if missing:
        raise BundleError(f"the bundle is incomplete: {', '.join(missing[:5])} missing")


def _new_version_name(registry: ModelRegistry, digest: str) -> str:
    """Sorts after every existing version and before the next training job's v<job>."""
    numbers = [int(m.group(1)) for p in registry.root.iterdir()
               if (m := re.match(r"v(\d{6})", p.name))]
    return f"v{max(numbers, default=0):06d}-import-{digest[:10]}"


def import_bundle(registry: ModelRegistry, archive: Path, replay_dir: Path,
                  promote: bool = False, with_replay: bool = False) -> ImportResult:
    digest = sha256_file(archive)
    tmp = Path(tempfile.mkdtemp(prefix=".import-", suffix=".tmp", dir=registry.root))
    try:
        try:
            with tarfile.open(archive, "r:") as tar:
                index = _read_index(tar)
                _check_spec(registry, index)
                if with_replay and (replay_dir / REPLAY_MANIFEST).exists():
                    raise ConflictError("this board already has a replay store; import without "
                                        "replay=true, or start from an empty data directory")
                _extract_verified(tar, index["files"], tmp)
        except tarfile.TarError as exc:
            raise BundleError(f"not a readable bundle archive: {exc}") from exc
        try:
            md.read_manifest(tmp / "model", verify=True)
        except md.ModelDirError as exc:
            raise BundleError(f"the bundled model fails verification: {exc}") from exc
        existing = [p.name for p in registry.root.iterdir() if p.name.endswith(digest[:10])
                    and p.name.startswith("v")]
        name = existing[0] if existing else _new_version_name(registry, digest)
        if not existing:
            os.replace(tmp / "model", registry.root / name)
            fsync_dir(registry.root)
        replay_installed = False
        if with_replay and (tmp / "replay").is_dir():
            _install_replay(tmp / "replay", replay_dir)
            replay_installed = True
        if promote:
            registry.promote(name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ImportResult(name, index["model_version"], index["products"], promote,
                        replay_installed, bool(existing))


def _install_replay(source: Path, replay_dir: Path) -> None:
    """Only onto an empty store (checked first): merging two boards' replay is a training
    decision, not an import's."""
    replay_dir.mkdir(parents=True, exist_ok=True)
    for file in sorted(source.iterdir()):
        if file.name != REPLAY_MANIFEST:
            os.replace(file, replay_dir / file.name)
    os.replace(source / REPLAY_MANIFEST, replay_dir / REPLAY_MANIFEST)  # commit point
    fsync_dir(replay_dir)
