"""Model versions on disk and the live ORT session, hot-swapped without failing requests.

Versions live in ``<data>/models/v<job>/``; ``<data>/models/CURRENT`` names the live one
and is replaced atomically: the directories and CURRENT are the one truth about which
versions exist and which one serves. A request holds a reference to the LiveModel it
started with, so a swap never fails or delays it; the old session is freed when the last
request ends.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.atomic import atomic_write_bytes
from edge_runtime.inference import model_dir as md
from edge_runtime.inference.inferencer import AnomalyInferencer
from edge_runtime.inference.thresholds import Thresholds
from edge_runtime.memory import settle
from edge_runtime.services.errors import NotFoundError

log = logging.getLogger("edge_runtime.models")


@dataclass
class LiveModel:
    version: str
    directory: Path
    manifest: md.Manifest
    inferencer: AnomalyInferencer

    def thresholds(self, product: str) -> Thresholds | None:
        """The calibrated thresholds of ``product``; None if this model never learned it."""
        return self.manifest.thresholds.get(product)


@dataclass(frozen=True)
class VersionInfo:
    version: str
    created_at: float
    products: list[str]
    training: dict
    live: bool


class ModelRegistry:
    def __init__(self, root: Path, threads: int = 0, spinning: bool = False,
                 keep_versions: int = 5,
                 providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
        self.keep_versions = keep_versions
        self.providers = tuple(providers)
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.threads, self.spinning = threads, spinning
        self._lock = threading.Lock()
        self._live: LiveModel | None = None
        self._listeners: list[Callable[[LiveModel], None]] = []

    def on_live(self, listener: Callable[[LiveModel], None]) -> None:
        """``listener(live)`` just before every swap (promotion, rollback, import), so that
        what it sets up is in place for the new version's first request."""
        self._listeners.append(listener)

    @property
    def live(self) -> LiveModel | None:
        return self._live

    def thresholds(self, product: str) -> Thresholds | None:
        """What the live model calibrated for ``product`` (None: not trained)."""
        live = self._live
        return live.thresholds(product) if live else None

    def _version_names(self) -> list[str]:
        return sorted((p.name for p in self.root.iterdir() if p.is_dir()
                       and p.name.startswith("v")), reverse=True)

    def _load(self, name: str) -> LiveModel:
        directory = self.root / name
        manifest = md.read_manifest(directory, verify=True)
        inferencer = AnomalyInferencer(directory / md.MERGED, manifest.image_size,
                                       self.threads, self.spinning, self.providers)
        return LiveModel(name, directory, manifest, inferencer)

    def open_last_good(self) -> LiveModel | None:
        """CURRENT if it verifies, else the newest version that does (None on day one)."""
        current = md.current_version(self.root)
        names = ([current] if current else []) + self._version_names()
        for name in names:
            try:
                live = self._load(name)
            except Exception as exc:  # noqa: BLE001 - unreadable or corrupt: try the next one
                log.warning("model version %s cannot be served: %s", name, exc)
                continue
            self._publish(live)
            return live
        return None

    def promote(self, name: str) -> LiveModel:
        """Verify, switch CURRENT atomically, then swap the session in memory."""
        live = self._load(name)
        self._publish(live)
        settle()  # the replaced session's memory and its code pages go back to the OS
        return live

    def promote_existing(self, name: str) -> LiveModel:
        """An operator's rollback: 404 for a version that is not on disk."""
        if name not in self._version_names():
            raise NotFoundError(f"no model version {name!r} on disk")
        return self.promote(name)

    def versions(self) -> list[VersionInfo]:
        """Every version on disk whose manifest reads, newest first."""
        live = self._live.version if self._live else None
        out = []
        for name in self._version_names():
            try:
                manifest = md.read_manifest(self.root / name, verify=False)
            except md.ModelDirError:
                continue
            out.append(VersionInfo(name, manifest.created_at, sorted(manifest.thresholds),
                                   manifest.training, name == live))
        return out

    def _publish(self, live: LiveModel) -> None:
        for listener in self._listeners:
            try:
                listener(live)
            except Exception:  # noqa: BLE001 - the swap goes on; so does serving
                log.exception("before the swap to %s", live.version)
        with self._lock:
            atomic_write_bytes(self.root / md.CURRENT, live.version.encode())
            self._live = live
        self._prune(live.version)

    def _prune(self, current: str) -> None:
        """Keep the newest ``keep_versions`` directories (and always the live one)."""
        versions = sorted((p for p in self.root.iterdir() if p.is_dir()
                           and p.name.startswith("v")), key=lambda p: p.name)
        for old in versions[: max(0, len(versions) - self.keep_versions)]:
            if old.name != current:
                shutil.rmtree(old, ignore_errors=True)
