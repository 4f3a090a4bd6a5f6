"""Maps of rejects and reviewed parts, kept on disk within a byte budget.

The RAM ring (``inspection.keep_recent_maps``) forgets a part within seconds on a busy line;
a misjudged part found an hour later must still be viewable, so rejects and every part an
operator reviews are written here (a compressed .npz: the 256 px image, the float16 map and
what decided the verdict), and the oldest files go first when the budget is exceeded.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime.atomic import atomic_write_bytes
from edge_runtime.inference.thresholds import Thresholds


@dataclass
class RecentMap:
    rgb: np.ndarray  # uint8 (S, S, 3)
    anomaly_map: np.ndarray  # float16 (S, S)
    thresholds: Thresholds
    score: float = 0.0
    verdict: str = ""


class MapStore:
    def __init__(self, directory: Path, budget_bytes: int) -> None:
        self.directory, self.budget = Path(directory), int(budget_bytes)
        self._lock = threading.Lock()

    @staticmethod
    def file_name(inspection_id: int) -> str:
        return f"{inspection_id:012d}.npz"  # zero-padded: name order is age order

    def save(self, inspection_id: int, recent: RecentMap) -> str | None:
        """Write the map; None when the budget is zero (keeping nothing on disk)."""
        if self.budget <= 0:
            return None
        buffer = io.BytesIO()
        t = recent.thresholds
        np.savez_compressed(buffer, rgb=recent.rgb, anomaly_map=recent.anomaly_map,
                            thresholds=np.array([t.image, t.pixel, t.normal_count], np.float64),
                            score=np.float64(recent.score), verdict=np.str_(recent.verdict))
        name = self.file_name(inspection_id)
        atomic_write_bytes(self.directory / name, buffer.getvalue())
        self.prune()
        return name

    def load(self, name: str) -> RecentMap | None:
        path = self.directory / Path(name).name  # a bare file name, never a path from a row
        try:
            with np.load(path, allow_pickle=False) as data:
                image, pixel, count = data["thresholds"].tolist()
                return RecentMap(data["rgb"], data["anomaly_map"],
                                 Thresholds(image, pixel, int(count)), float(data["score"]),
                                 str(data["verdict"]))
        except (FileNotFoundError, OSError, KeyError, ValueError):
            return None

    def has(self, inspection_id: int) -> bool:
        """Still on disk: the budget removes the oldest files without touching their rows."""
        return (self.directory / self.file_name(inspection_id)).is_file()

    def delete(self, name: str) -> None:
        (self.directory / Path(name).name).unlink(missing_ok=True)

    def usage(self) -> dict:
        files = self._files()
        return {"files": len(files), "bytes": sum(size for _, size in files),
                "budget_bytes": self.budget}

    def _files(self) -> list[tuple[Path, int]]:
        if not self.directory.is_dir():
            return []
        out = []
        for path in sorted(self.directory.glob("*.npz")):
            try:
                out.append((path, path.stat().st_size))
            except FileNotFoundError:
                continue
        return out

    def prune(self) -> int:
        """Remove the oldest files until the rest fit the budget; how many went."""
        with self._lock:
            files = self._files()
            total, removed = sum(size for _, size in files), 0
            for path, size in files:
                if total <= self.budget:
                    break
                path.unlink(missing_ok=True)
                total, removed = total - size, removed + 1
            return removed
