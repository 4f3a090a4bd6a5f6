"""On-disk outbox: every event waits in SQLite until its sink confirms delivery.

The request thread only appends a row (WAL, synchronous=NORMAL: a few tens of microseconds,
survives a crash of the process); delivery threads read the oldest rows of their sink and
delete a row only once the broker (or webhook) acknowledged it. The outbox is bounded per
sink: when it is full the oldest message of that sink is deleted and counted in
``dropped``, so a broker that stays away for days costs a bounded amount of disk.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    topic TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_sink_seq ON outbox(sink, seq);
CREATE TABLE IF NOT EXISTS counters (
    sink TEXT NOT NULL,
    name TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (sink, name)
);
"""


@dataclass(frozen=True)
class Message:
    seq: int
    sink: str
    topic: str
    msg_id: str
    payload: str  # JSON text, sent as is
    created_at: float


class Outbox:
    """A bounded, persistent FIFO per sink, shared by the producers and the delivery threads.

    Producers and delivery threads use separate SQLite connections (WAL lets them overlap),
    and WAL checkpoints, the only step that fsyncs, run on the delivery side
    (``checkpoint``), never in a producer's ``put``.
    """

    CHECKPOINT_EVERY_S = 1.0

    def __init__(self, path: str | Path, sinks: tuple[str, ...], max_messages: int = 100_000):
        if max_messages < 1:
            raise ValueError("max_messages must be >= 1")
        self.path, self.sinks, self.max_messages = Path(path), tuple(sinks), max_messages
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._put_lock, self._read_lock = threading.Lock(), threading.Lock()
        self._depth_lock = threading.Lock()
        self._put_conn = self._connect()
        self._put_conn.executescript(SCHEMA)
        self._conn = self._connect()  # delivery side: peek, ack, counters, checkpoints
        self._last_checkpoint = time.monotonic()
        self._depth = {sink: self._count(sink) for sink in self.sinks}
        self._wake = {sink: threading.Event() for sink in self.sinks}
        for sink in self.sinks:
            if self._depth[sink]:
                self._wake[sink].set()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                               timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # commits survive a crash of the process
        conn.execute("PRAGMA wal_autocheckpoint=0")  # see checkpoint()
        return conn

    def _count(self, sink: str) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM outbox WHERE sink = ?",
                                  (sink,)).fetchone()[0]

    def put(self, topic: str, payload: dict) -> str:
        """Queue ``payload`` (its ``msg_id`` is added) for every sink; return the message id."""
        msg_id = uuid.uuid4().hex
        text = json.dumps({**payload, "msg_id": msg_id}, separators=(",", ":"))
        now = time.time()
        with self._put_lock:
            conn = self._put_conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                dropped = {}
                for sink in self.sinks:
                    with self._depth_lock:
                        excess = self._depth[sink] - self.max_messages + 1
                    if excess > 0:
                        dropped[sink] = self._drop_oldest(conn, sink, excess)
                    conn.execute(
                        "INSERT INTO outbox (sink, topic, msg_id, payload, created_at) "
                        "VALUES (?, ?, ?, ?, ?)", (sink, topic, msg_id, text, now))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        with self._depth_lock:
            for sink in self.sinks:
                self._depth[sink] += 1 - dropped.get(sink, 0)
        for sink in self.sinks:
            self._wake[sink].set()
        return msg_id

    @staticmethod
    def _drop_oldest(conn: sqlite3.Connection, sink: str, count: int) -> int:
        deleted = conn.execute(
            "DELETE FROM outbox WHERE seq IN "
            "(SELECT seq FROM outbox WHERE sink = ? ORDER BY seq LIMIT ?)", (sink, count)).rowcount
        conn.execute(
            "INSERT INTO counters (sink, name, value) VALUES (?, 'dropped', ?) "
            "ON CONFLICT (sink, name) DO UPDATE SET value = value + excluded.value",
            (sink, deleted))
        return deleted

    def peek(self, sink: str, after_seq: int = 0, limit: int = 100) -> list[Message]:
        """The oldest messages of ``sink`` with seq > ``after_seq``, in order."""
        with self._read_lock:
            rows = self._conn.execute(
                "SELECT seq, sink, topic, msg_id, payload, created_at FROM outbox "
                "WHERE sink = ? AND seq > ? ORDER BY seq LIMIT ?",
                (sink, after_seq, limit)).fetchall()
        return [Message(*row) for row in rows]

    def ack(self, sink: str, seqs: list[int]) -> None:
        """Delivery confirmed: the messages leave the outbox (unknown seqs are ignored)."""
        if not seqs:
            return
        marks = ",".join("?" * len(seqs))
        with self._read_lock:
            deleted = self._conn.execute(
                f"DELETE FROM outbox WHERE sink = ? AND seq IN ({marks})", (sink, *seqs)).rowcount
        with self._depth_lock:
            self._depth[sink] -= deleted
        self.checkpoint()

    def add_attempt(self, sink: str, seq: int) -> None:
        with self._read_lock:
            self._conn.execute("UPDATE outbox SET attempts = attempts + 1 "
                               "WHERE sink = ? AND seq = ?", (sink, seq))

    def checkpoint(self, force: bool = False) -> None:
        """Fold the WAL into the database (fsync) at most once a second, on this thread."""
        now = time.monotonic()
        if not force and now - self._last_checkpoint < self.CHECKPOINT_EVERY_S:
            return
        self._last_checkpoint = now
        with self._read_lock:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def notify(self, sink: str) -> None:
        """Wake the delivery thread of ``sink`` (an acknowledgement or a reconnect)."""
        self._wake[sink].set()

    def wait(self, sink: str, timeout: float) -> bool:
        """Block until something was queued for ``sink`` (or ``timeout``); clears the flag."""
        woke = self._wake[sink].wait(timeout)
        self._wake[sink].clear()
        return woke

    def depth(self, sink: str) -> int:
        with self._depth_lock:
            return self._depth[sink]

    def dropped(self, sink: str) -> int:
        with self._read_lock:
            row = self._conn.execute("SELECT value FROM counters WHERE sink = ? AND "
                                     "name = 'dropped'", (sink,)).fetchone()
        return row[0] if row else 0

    def oldest_age_s(self, sink: str) -> float:
        """Seconds the oldest undelivered message of ``sink`` has waited (0 when empty)."""
        with self._read_lock:
            row = self._conn.execute("SELECT created_at FROM outbox WHERE sink = ? "
                                     "ORDER BY seq LIMIT 1", (sink,)).fetchone()
        return max(0.0, time.time() - row[0]) if row else 0.0

    def close(self) -> None:
        with self._put_lock:
            self._put_conn.close()
        self.checkpoint(force=True)
        with self._read_lock:
            self._conn.close()
