"""SQL for each table, and nothing else: services call these with a connection."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

Row = dict[str, Any]
ACTIVE_JOB_STATES = ("queued", "running")
# the worker's last phase: its version directory is complete (model and replay store) and
# waits for the API to promote it; only then is the job "succeeded"
TRAINED_PHASE = "trained"
_ACTIVE = "(" + ", ".join(f"'{state}'" for state in ACTIVE_JOB_STATES) + ")"  # SQL literal


def _row(row: sqlite3.Row | None) -> Row | None:
    return dict(row) if row is not None else None


# ---- products ----------------------------------------------------------------------------
def create_product(conn: sqlite3.Connection, name: str, description: str) -> Row:
    cur = conn.execute(
        "INSERT INTO products (name, description, created_at) VALUES (?, ?, ?)",
        (name, description, time.time()),
    )
    return get_product(conn, cur.lastrowid)


def get_product(conn: sqlite3.Connection, product_id: int) -> Row | None:
    return _row(conn.execute("SELECT * FROM products WHERE id = ?", (product_id,)).fetchone())


def find_product(conn: sqlite3.Connection, name: str) -> Row | None:
    return _row(conn.execute("SELECT * FROM products WHERE name = ?", (name,)).fetchone())


def list_products(conn: sqlite3.Connection) -> list[Row]:
    return [dict(r) for r in conn.execute("SELECT * FROM products ORDER BY id")]


def set_threshold_override(conn, product_id: int, image: float | None, pixel: float | None):
    conn.execute(
        "UPDATE products SET image_threshold_override = ?, pixel_threshold_override = ? "
        "WHERE id = ?", (image, pixel, product_id),
    )


# ---- captures ----------------------------------------------------------------------------
def add_capture(conn, product_id: int, file: str, source: str, width: int, height: int,
                size: int) -> Row:
    cur = conn.execute(
        "INSERT INTO captures (product_id, file, source, width, height, bytes, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (product_id, file, source, width, height, size, time.time()),
    )
    return _row(conn.execute("SELECT * FROM captures WHERE id = ?", (cur.lastrowid,)).fetchone())


def list_captures(conn, product_id: int, limit: int = -1, offset: int = 0) -> list[Row]:
    return [dict(r) for r in conn.execute(
        "SELECT * FROM captures WHERE product_id = ? ORDER BY id LIMIT ? OFFSET ?",
        (product_id, limit, offset))]


def count_captures(conn, product_id: int) -> int:
    return conn.execute("SELECT COUNT(*) FROM captures WHERE product_id = ?",
                        (product_id,)).fetchone()[0]


# ---- jobs --------------------------------------------------------------------------------
def create_job(conn, product_id: int, params: dict) -> Row:
    cur = conn.execute(
        "INSERT INTO jobs (product_id, status, params, created_at) VALUES (?, 'queued', ?, ?)",
        (product_id, json.dumps(params), time.time()),
    )
    return get_job(conn, cur.lastrowid)


def get_job(conn, job_id: int) -> Row | None:
    return _row(conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())


def active_job(conn) -> Row | None:
    return _row(conn.execute(
        f"SELECT * FROM jobs WHERE status IN {_ACTIVE} ORDER BY id LIMIT 1"
    ).fetchone())


def update_job(conn, job_id: int, only_if_active: bool = False, **values: Any) -> bool:
    """Update columns; with ``only_if_active`` a finished job is never resurrected."""
    columns = ", ".join(f"{k} = ?" for k in values)
    sql = f"UPDATE jobs SET {columns} WHERE id = ?"
    if only_if_active:
        sql += f" AND status IN {_ACTIVE}"
    return conn.execute(sql, (*values.values(), job_id)).rowcount > 0


def active_jobs(conn) -> list[Row]:
    return [dict(r) for r in conn.execute(f"SELECT * FROM jobs WHERE status IN {_ACTIVE}")]


def fail_interrupted_jobs(conn, reason: str) -> int:
    return conn.execute(
        "UPDATE jobs SET status = 'failed', error = ?, finished_at = ? "
        f"WHERE status IN {_ACTIVE}", (reason, time.time()),
    ).rowcount


# ---- inspections -------------------------------------------------------------------------
def add_inspection(conn, product_id: int, score: float, verdict: str, threshold: float,
                   latency_ms: float, model_version: str, source: str) -> int:
    cur = conn.execute(
        "INSERT INTO inspections (product_id, score, verdict, threshold, latency_ms, "
        "model_version, source, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (product_id, score, verdict, threshold, latency_ms, model_version, source, time.time()),
    )
    return int(cur.lastrowid)


def prune_inspections(conn, keep: int) -> int:
    """Keep the newest ``keep`` inspection records (a line makes millions a week)."""
    return conn.execute(
        "DELETE FROM inspections WHERE id <= (SELECT MAX(id) FROM inspections) - ?", (keep,)
    ).rowcount


def get_inspection(conn, inspection_id: int) -> Row | None:
    return _row(conn.execute("SELECT * FROM inspections WHERE id = ?",
                             (inspection_id,)).fetchone())
