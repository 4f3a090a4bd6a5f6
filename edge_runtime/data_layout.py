"""Every path under the daemon's data directory, named in one place.

Nothing here comes from user input: product names never become paths; captures are
stored under their product's numeric id with random file names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPLAY_DIR = "replay"  # inside a model version directory: the replay store it was trained with


@dataclass(frozen=True)
class DataLayout:
    root: Path

    @property
    def db(self) -> Path:
        return self.root / "state.db"

    @property
    def captures(self) -> Path:
        return self.root / "captures"

    @property
    def replay(self) -> Path:
        return self.root / "replay"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def replay_of(self, version: str | None) -> Path:
        """The replay store that goes with a model version: each version directory holds
        its own (promotion makes model and store live together). Versions from before that
        share the old top-level store."""
        if version:
            own = self.models / version / REPLAY_DIR
            if own.is_dir():
                return own
        return self.replay

    @property
    def heads(self) -> Path:
        """Memory-bank heads, one file per product id, and the features graph they read."""
        return self.root / "heads"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def work(self) -> Path:
        return self.root / "work"

    def job_work(self, job_id: int) -> Path:
        """Scratch space of one training job (trunk graph, cached features); removed after."""
        return self.work / f"job-{job_id}"

    def job_log(self, job_id: int) -> Path:
        return self.logs / f"job-{job_id}.log"

    def job_settings(self, job_id: int) -> Path:
        """The settings a worker runs with, readable by the service user only (the API
        token must not appear on a command line, where any local user can read it)."""
        return self.work / f"job-{job_id}.settings.json"

    @property
    def maps(self) -> Path:
        """Maps of rejects and reviewed parts, kept within inspection.keep_maps_mb."""
        return self.root / "maps"

    @property
    def examples(self) -> Path:
        """Parts an operator marked defective: ``<product id>/inspection-<id>.png``."""
        return self.root / "examples"

    def capture(self, relative: str | Path) -> Path:
        return self.captures / relative
