"""Shared benchmark helpers: timing statistics, peak RSS, table printing."""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGE_RUNTIME_SHARED", REPO.parent / "shared"))
os.environ.setdefault("EDGE_RUNTIME_WEIGHTS_DIR", str(SHARED / "models" / "mcunet"))
sys.path.insert(0, str(REPO))


def peak_rss_mb() -> float:
    """Peak resident set size of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Start a new high-water mark (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def current_peak_rss_mb() -> float:
    """VmHWM since the last reset_peak_rss() (falls back to the process peak)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mb()


def stats_ms(seconds: list[float]) -> dict[str, float]:
    values = np.asarray(seconds) * 1000
    return {"median": float(np.median(values)), "p95": float(np.percentile(values, 95))}


def print_table(headers: list[str], rows: list[list[object]]) -> None:
    cells = [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def emit_json(payload: dict) -> None:
    """The last line of every benchmark: one JSON object with its figures."""
    print(json.dumps(payload, sort_keys=True), flush=True)
