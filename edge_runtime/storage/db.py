"""SQLite state of the daemon: products, captures, jobs, inspections.

Model versions are not here: the model directories and ``models/CURRENT`` are the one
truth about which versions exist and which is live (services/models.py).

WAL mode so the training worker (another process) can write job progress while the API
reads; synchronous=FULL so a committed row survives power loss.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SCHEMA_VERSION = 3  # 2: model_versions dropped (models/CURRENT is the truth)
# 3: capture names, review labels, kept maps, job percent/result, names unique in any case
SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    image_threshold_override REAL,
    pixel_threshold_override REAL
);
CREATE TABLE IF NOT EXISTS captures (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    product_id INTEGER NOT NULL REFERENCES products(id),
    file TEXT NOT NULL,
    source TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    created_at REAL NOT NULL,
    name TEXT NOT NULL DEFAULT ''    -- the uploaded file name, shown only (never a path)
);
CREATE INDEX IF NOT EXISTS captures_product ON captures(product_id);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    product_id INTEGER NOT NULL REFERENCES products(id),
    status TEXT NOT NULL,            -- queued | running | succeeded | failed | cancelled
    params TEXT NOT NULL DEFAULT '{}',
    epoch INTEGER NOT NULL DEFAULT 0,
    epochs INTEGER NOT NULL DEFAULT 0,
    step INTEGER NOT NULL DEFAULT 0,
    steps INTEGER NOT NULL DEFAULT 0,
    loss REAL,
    eta_seconds REAL,
    phase TEXT NOT NULL DEFAULT '',
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    version TEXT,
    error TEXT,
    pid INTEGER,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    percent REAL NOT NULL DEFAULT 0,
    result TEXT                      -- JSON: what changed (version, thresholds)
);
DROP TABLE IF EXISTS model_versions;
CREATE TABLE IF NOT EXISTS inspections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    product_id INTEGER NOT NULL REFERENCES products(id),
    score REAL NOT NULL,
    verdict TEXT NOT NULL,
    threshold REAL NOT NULL,
    latency_ms REAL NOT NULL,
    model_version TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at REAL NOT NULL,
    label TEXT,                      -- operator review: fine | defective
    map_file TEXT                    -- map kept on disk (rejects, reviewed parts)
);
CREATE INDEX IF NOT EXISTS inspections_product ON inspections(product_id, id);
"""
# columns added after version 2: (table, column, declaration) added where missing
ADDED_COLUMNS = [
    ("captures", "name", "TEXT NOT NULL DEFAULT ''"),
    ("jobs", "percent", "REAL NOT NULL DEFAULT 0"),
    ("jobs", "result", "TEXT"),
    ("inspections", "label", "TEXT"),
    ("inspections", "map_file", "TEXT"),
]
# product names are unique whatever their case ("Bottle" is "bottle")
NAME_INDEX = ("CREATE UNIQUE INDEX IF NOT EXISTS products_name_nocase "
              "ON products(name COLLATE NOCASE)")


def _migrate(conn: sqlite3.Connection) -> None:
    for table, column, declaration in ADDED_COLUMNS:
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
    # older data with both "Bottle" and "bottle" keeps working; the service checks new names
    with contextlib.suppress(sqlite3.IntegrityError):
        conn.execute(NAME_INDEX)


class Database:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"{self.path}: schema version {version} is newer than "
                                   f"this edge-runtime ({SCHEMA_VERSION})")
            conn.executescript(f"BEGIN;{SCHEMA}COMMIT;")
            conn.execute("BEGIN IMMEDIATE")
            _migrate(conn)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        finally:
            conn.close()

    @contextmanager
    def connect(self, write: bool = True, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One short-lived connection per unit of work; commits on success. Writers take
        the lock up front (BEGIN IMMEDIATE) so two writers never deadlock on upgrade.
        ``durable=False`` (inspection records, dozens a second) skips the fsync per commit:
        a process crash loses nothing, a power cut at most the last moments of records."""
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()
