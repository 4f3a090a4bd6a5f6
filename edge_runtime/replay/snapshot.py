"""A private copy of a replay store for one training job (kept apart from store.py).

Group files are immutable once the manifest names them, so the copy hard-links them (no
extra disk on an SD card) and copies only the small manifest. The job then changes its
copy freely; the shared store is never written by a job that may still fail.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from edge_runtime.replay.accounting import MANIFEST


def snapshot_store(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Copy the committed store in ``source`` to ``target`` (which must not exist yet)."""
    source, target = Path(source), Path(target)
    target.mkdir(parents=True)
    manifest = source / MANIFEST
    if not manifest.is_file():
        return target
    for path in source.iterdir():
        if path.suffix != ".bin" or not path.is_file():
            continue
        try:
            os.link(path, target / path.name)
        except OSError:  # another file system, or no hard links: a real copy
            shutil.copy2(path, target / path.name)
    shutil.copy2(manifest, target / MANIFEST)
    return target
