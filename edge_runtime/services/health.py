"""Degraded states the daemon keeps serving through (disk full, damaged state), reported by
/health and /status and cleared by whoever sees the problem go away."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

LOW_DISK_BYTES = 16 * 2**20  # below this, writes are about to fail: say so before they do


class Health:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._lock = threading.Lock()
        self._problems: dict[str, str] = {}

    def set(self, key: str, message: str) -> None:
        with self._lock:
            self._problems[key] = message

    def clear(self, key: str) -> None:
        with self._lock:
            self._problems.pop(key, None)

    def problems(self) -> list[str]:
        """Every known problem, the disk's free space checked now."""
        with self._lock:
            problems = dict(self._problems)
        try:
            free = shutil.disk_usage(self.data_dir).free
        except OSError as exc:
            problems.setdefault("disk", f"data directory unreadable: {exc}")
        else:
            if free < LOW_DISK_BYTES:
                problems.setdefault("disk", f"disk almost full: {free // 2**20} MB free under "
                                            f"{self.data_dir}")
        return [problems[k] for k in sorted(problems)]
