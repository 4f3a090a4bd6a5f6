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
    """Names are unique whatever their case: "Bottle" finds "bottle"."""
    return _row(conn.execute("SELECT * FROM products WHERE name = ? COLLATE NOCASE",
                             (name,)).fetchone())


def list_products(conn: sqlite3.Connection) -> list[Row]:
    return [dict(r) for r in conn.execute("SELECT * FROM products ORDER BY id")]


def set_threshold_override(conn, product_id: int, image: float | None, pixel: float | None,
                           answerer: str | None = None,
                           basis: tuple[float, float] | None = None):
    """``answerer``: the path whose score scale the values are on (student / a head's kind);
    ``basis``: its calibrated (image, pixel) thresholds when they were set."""
    basis_image, basis_pixel = basis or (None, None)
    conn.execute(
        "UPDATE products SET image_threshold_override = ?, pixel_threshold_override = ?, "
        "threshold_override_for = ?, override_basis_image = ?, override_basis_pixel = ? "
        "WHERE id = ?", (image, pixel, answerer, basis_image, basis_pixel, product_id),
    )


def set_override_basis(conn, product_id: int, image: float, pixel: float) -> None:
    conn.execute("UPDATE products SET override_basis_image = ?, override_basis_pixel = ? "
                 "WHERE id = ?", (image, pixel, product_id))


# ---- captures ----------------------------------------------------------------------------
def add_capture(conn, product_id: int, file: str, source: str, width: int, height: int,
                size: int, name: str = "") -> Row:
    cur = conn.execute(
        "INSERT INTO captures (product_id, file, source, width, height, bytes, created_at, "
        "name) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (product_id, file, source, width, height, size, time.time(), name),
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


def count_jobs_by_status(conn) -> dict[str, int]:
    return dict(conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall())


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


# ---- the operator's page: deletion, capture files, inspection history, reviews -----------
def delete_product(conn, product_id: int) -> None:
    """The product and every row that refers to it."""
    for table in ("inspections", "captures", "jobs"):
        conn.execute(f"DELETE FROM {table} WHERE product_id = ?", (product_id,))
    conn.execute("DELETE FROM products WHERE id = ?", (product_id,))


def get_capture(conn, capture_id: int) -> Row | None:
    return _row(conn.execute("SELECT * FROM captures WHERE id = ?", (capture_id,)).fetchone())


def delete_capture(conn, capture_id: int) -> None:
    conn.execute("DELETE FROM captures WHERE id = ?", (capture_id,))


INSPECTION_COLUMNS = ("i.id, i.product_id, p.name AS product, i.score, i.verdict, i.threshold, "
                      "i.latency_ms, i.model_version, i.source, i.created_at, i.label, "
                      "i.map_file IS NOT NULL AS map_kept")


def list_inspections(conn, product_id: int | None = None, verdict: str | None = None,
                     label: str | None = None, since: float | None = None,
                     until: float | None = None, limit: int = 50,
                     offset: int = 0) -> tuple[list[Row], int]:
    """Newest first, filtered; and how many match in all (for paging)."""
    where, args = [], []
    for clause, value in (("i.product_id = ?", product_id), ("i.verdict = ?", verdict),
                          ("i.label = ?", label), ("i.created_at >= ?", since),
                          ("i.created_at < ?", until)):
        if value is not None:
            where.append(clause)
            args.append(value)
    sql_where = f"WHERE {' AND '.join(where)}" if where else ""
    total = conn.execute(f"SELECT COUNT(*) FROM inspections i {sql_where}", args).fetchone()[0]
    rows = conn.execute(
        f"SELECT {INSPECTION_COLUMNS} FROM inspections i JOIN products p ON p.id = i.product_id "
        f"{sql_where} ORDER BY i.id DESC LIMIT ? OFFSET ?", (*args, limit, offset))
    return [dict(r) for r in rows], int(total)


def inspection_counts(conn, since: float) -> list[Row]:
    """Per product: passes and rejects in all, and in the window since ``since``."""
    return [dict(r) for r in conn.execute(
        "SELECT p.id AS product_id, p.name AS product, "
        "COALESCE(SUM(i.verdict = 'pass'), 0) AS pass, "
        "COALESCE(SUM(i.verdict = 'reject'), 0) AS reject, "
        "COALESCE(SUM(i.verdict = 'pass' AND i.created_at >= ?), 0) AS pass_recent, "
        "COALESCE(SUM(i.verdict = 'reject' AND i.created_at >= ?), 0) AS reject_recent "
        "FROM products p LEFT JOIN inspections i ON i.product_id = p.id "
        "GROUP BY p.id ORDER BY p.id", (since, since))]


def set_inspection_label(conn, inspection_id: int, label: str) -> None:
    conn.execute("UPDATE inspections SET label = ? WHERE id = ?", (label, inspection_id))


def set_inspection_map_file(conn, inspection_id: int, file: str | None) -> None:
    conn.execute("UPDATE inspections SET map_file = ? WHERE id = ?", (file, inspection_id))


def kept_map_files(conn) -> list[Row]:
    """Inspections whose map is kept on disk, oldest first (the first to go)."""
    return [dict(r) for r in conn.execute(
        "SELECT id, map_file, label FROM inspections WHERE map_file IS NOT NULL ORDER BY id")]


def product_map_files(conn, product_id: int) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT map_file FROM inspections WHERE product_id = ? AND map_file IS NOT NULL",
        (product_id,))]


def list_jobs(conn, limit: int = 20, offset: int = 0) -> list[Row]:
    return [dict(r) for r in conn.execute(
        "SELECT * FROM jobs ORDER BY id DESC LIMIT ? OFFSET ?", (limit, offset))]
