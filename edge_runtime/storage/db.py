"""SQLite state of the daemon: products, captures, jobs, inspections.

Model versions are not here: the model directories and ``models/CURRENT`` are the one
truth about which versions exist and which is live (services/models.py).

WAL mode so the training worker (another process) can write job progress while the API
reads; synchronous=FULL so a committed row survives power loss.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SCHEMA_VERSION = 4  # 2: model_versions dropped (models/CURRENT is the truth)
# 3: capture names, review labels, kept maps, job percent/result, names unique in any case
# 4: threshold overrides name the path and the calibration they were set on (columns added
#    to version 3 without a bump before: a version-3 database may lack any of them)
SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    image_threshold_override REAL,
    pixel_threshold_override REAL,
    threshold_override_for TEXT,  -- who answered when it was set (student / a head's kind)
    override_basis_image REAL,  -- that path's calibrated thresholds then: the override
    override_basis_pixel REAL   -- applies while they are still the calibration
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
    ("products", "threshold_override_for", "TEXT"),
    ("products", "override_basis_image", "REAL"),
    ("products", "override_basis_pixel", "REAL"),
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


BUSY_TIMEOUT_S = 30.0
SQLITE_FULL = 13


class StorageFullError(RuntimeError):
    """The disk is full: this write was not made (HTTP 507); reads still work."""


def _full(exc: BaseException) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL or "disk is full" in str(exc)


def _statements(script: str) -> list[str]:
    """The schema's statements one by one (executescript would COMMIT on its own)."""
    body = "\n".join(line.split("--")[0] for line in script.splitlines())
    return [s.strip() for s in body.split(";") if s.strip()]


def _has_tables(conn: sqlite3.Connection) -> bool:
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    return {"products", "captures", "jobs", "inspections"} <= names


class Database:
    def __init__(self, path: str | Path, create: bool = True) -> None:
        """``create=False`` (the training worker): the daemon made the schema; touch nothing."""
        self.path = Path(path)
        if not create:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            # IMMEDIATE: take the write lock up front, waiting for it. A deferred BEGIN that
            # reads, then writes, gets SQLITE_BUSY at once in WAL mode when another process
            # (the API recording inspections) committed in between: no busy wait applies.
            conn.execute("BEGIN IMMEDIATE")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                conn.execute("ROLLBACK")
                raise RuntimeError(f"{self.path}: schema version {version} is newer than "
                                   f"this edge-runtime ({SCHEMA_VERSION})")
            if version < SCHEMA_VERSION or not _has_tables(conn):
                for statement in _statements(SCHEMA):
                    conn.execute(statement)
                _migrate(conn)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()

    def keep_open(self) -> None:
        """Hold one idle connection for the life of the process. SQLite removes the -wal and
        -shm files when its last connection closes and must create them again on the next
        open, which fails on a full disk: every read would then fail too. With them kept,
        reads always work and writes fail cleanly (SQLITE_FULL) until space returns."""
        if getattr(self, "_keeper", None) is None:
            self._keeper = sqlite3.connect(self.path, check_same_thread=False,
                                           isolation_level=None)
            self._keeper.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()

    @contextmanager
    def connect(self, write: bool = True, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One short-lived connection per unit of work; commits on success. Writers take
        the lock up front (BEGIN IMMEDIATE) so two writers never deadlock on upgrade.
        ``durable=False`` (inspection records, dozens a second) skips the fsync per commit:
        a process crash loses nothing, a power cut at most the last moments of records."""
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError) and _full(exc):
                raise StorageFullError(f"the disk holding {self.path.name} is full; "
                                       f"free some space") from exc
            raise
        finally:
            conn.close()


def damage(path: Path) -> str | None:
    """Why the database file at ``path`` cannot be trusted, or None (also when absent).

    A 0-byte file is a valid empty database to SQLite: opening it would silently start with
    no products over an operator's data. A truncated or garbled one fails its checks."""
    if not path.exists():
        return None
    if path.stat().st_size == 0:
        return "the file is empty (0 bytes)"
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            result = conn.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return None if result == "ok" else str(result)


def open_database(path: Path) -> tuple[Database, str | None]:
    """The daemon's database, and a message when a damaged one was set aside.

    Recovery is explicit: the damaged file (with its WAL) is kept as
    ``state.db.damaged-<time>`` for the operator, the daemon starts with an empty schema and
    says so in one log line and in /status, /health (never silently empty, never a crash
    loop under systemd)."""
    problem = damage(path)
    if problem is None:
        try:
            return Database(path), None
        except sqlite3.DatabaseError as exc:
            problem = str(exc)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        part = path.with_name(path.name + suffix)
        if part.exists():
            os.replace(part, aside.with_name(aside.name + suffix))
    message = (f"{path} was damaged ({problem}); kept as {aside.name}; started with an empty "
               f"database: products and captures must be added again")
    return Database(path), message
