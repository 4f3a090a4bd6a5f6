"""Model versions on disk and the live ORT session, hot-swapped without failing requests.

Versions live in ``<data>/models/v<job>/``; ``<data>/models/CURRENT`` names the live one
and is replaced atomically. A request holds a reference to the LiveModel it started with,
so a swap never fails or delays it; the old session is freed when the last request ends.
"""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from edge_runtime import model_dir as md
from edge_runtime.atomic import atomic_write_bytes
from edge_runtime.inferencer import AnomalyInferencer

CURRENT = "CURRENT"


@dataclass
class LiveModel:
    version: str
    directory: Path
    manifest: md.Manifest
    inferencer: AnomalyInferencer

    def thresholds(self, product: str) -> dict | None:
        return self.manifest.products.get(product, {}).get("thresholds")


class ModelRegistry:
    def __init__(self, root: Path, threads: int = 0, spinning: bool = False,
                 keep_versions: int = 5) -> None:
        self.keep_versions = keep_versions
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.threads, self.spinning = threads, spinning
        self._lock = threading.Lock()
        self._live: LiveModel | None = None

    @property
    def live(self) -> LiveModel | None:
        return self._live

    def version_dir(self, name: str) -> Path:
        return self.root / name

    def _load(self, name: str) -> LiveModel:
        directory = self.version_dir(name)
        manifest = md.read_manifest(directory, verify=True)
        inferencer = AnomalyInferencer(directory / md.MERGED, manifest.spec["image_size"],
                                       self.threads, self.spinning)
        return LiveModel(name, directory, manifest, inferencer)

    def open_last_good(self) -> LiveModel | None:
        """CURRENT if it verifies, else the newest version that does (None on day one)."""
        pointer = self.root / CURRENT
        names = [pointer.read_text().strip()] if pointer.exists() else []
        names += sorted((p.name for p in self.root.iterdir() if p.is_dir()
                         and p.name.startswith("v")), reverse=True)
        for name in names:
            try:
                live = self._load(name)
            except Exception:  # noqa: BLE001 - unreadable or corrupt: try the next one
                continue
            self._publish(live)
            return live
        return None

    def promote(self, name: str) -> LiveModel:
        """Verify, switch CURRENT atomically, then swap the session in memory."""
        live = self._load(name)
        self._publish(live)
        return live

    def _publish(self, live: LiveModel) -> None:
        with self._lock:
            atomic_write_bytes(self.root / CURRENT, live.version.encode())
            self._live = live
        self._prune(live.version)

    def _prune(self, current: str) -> None:
        """Keep the newest ``keep_versions`` directories (and always the live one)."""
        versions = sorted((p for p in self.root.iterdir() if p.is_dir()
                           and p.name.startswith("v")), key=lambda p: p.name)
        for old in versions[: max(0, len(versions) - self.keep_versions)]:
            if old.name != current:
                shutil.rmtree(old, ignore_errors=True)
