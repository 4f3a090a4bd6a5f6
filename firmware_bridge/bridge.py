"""The host end: answer each TRIGGER with a VERDICT of the same sequence number in time.

A handler (the daemon: capture a frame, inspect, decide) runs in a worker thread. If it
has not answered when the trigger's deadline passes, the configured fail-safe verdict is
sent at once and the late answer is dropped: the reject gate never waits on a slow model.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from firmware_bridge import protocol as p
from firmware_bridge.link import SerialLink

Handler = Callable[[int], tuple[p.Verdict, float]]  # product id -> (verdict, score)


@dataclass
class BridgeConfig:
    url: str
    baudrate: int = 115200
    deadline_ms: float = 200.0
    failsafe: p.Verdict = p.Verdict.REJECT
    heartbeat_s: float = 1.0
    device_silent_s: float = 3.0


_answering = threading.local()


def current_trigger_seq() -> int | None:
    """The sequence number of the TRIGGER this thread is answering (None elsewhere), so
    the events a handler causes can name the trigger without changing its signature."""
    return getattr(_answering, "seq", None)


class Bridge:
    def __init__(self, config: BridgeConfig, handler: Handler) -> None:
        self.config, self.handler = config, handler
        self.decoder = p.FrameDecoder()
        self.link = SerialLink(config.url, self._on_bytes, config.baudrate)
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="trigger")
        self._lock = threading.Lock()
        self._pending: dict[int, float] = {}
        self._latencies: collections.deque[float] = collections.deque(maxlen=1000)
        self._stop = threading.Event()
        self._heart = threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True)
        self._seq = 0
        self.last_device_heartbeat: float | None = None
        self.counters = collections.Counter()

    # ---- life cycle ----------------------------------------------------------------------
    def start(self) -> Bridge:
        self.link.start()
        self._heart.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self.link.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- receiving -----------------------------------------------------------------------
    def _on_bytes(self, data: bytes) -> None:
        self.counters["bytes_rx"] += len(data)
        for message in self.decoder.feed(data):
            self.counters["frames_rx"] += 1
            try:
                self._dispatch(message)
            except p.FrameError:
                self.counters["bad_bodies"] += 1

    def _dispatch(self, message: p.Message) -> None:
        if message.type == p.MessageType.TRIGGER:
            self._on_trigger(message.seq, p.parse_trigger(message))
        elif message.type == p.MessageType.HEARTBEAT:
            self.last_device_heartbeat = time.monotonic()
            self.counters["heartbeats_rx"] += 1
        elif message.type == p.MessageType.ERROR:
            self.counters["device_errors"] += 1
        else:
            self.counters["unknown"] += 1

    def _on_trigger(self, seq: int, product: int) -> None:
        received = time.monotonic()
        self.counters["triggers"] += 1
        with self._lock:
            self._pending[seq] = received
        timer = threading.Timer(self.config.deadline_ms / 1000, self._deadline, (seq,))
        timer.daemon = True
        timer.start()
        self._pool.submit(self._answer, seq, product, received, timer)

    def _answer(self, seq: int, product: int, received: float, timer) -> None:
        flags = 0
        _answering.seq = seq
        try:
            decision, score = self.handler(product)
        except Exception:  # noqa: BLE001 - a failed inspection must still get a verdict
            decision, score, flags = self.config.failsafe, float("nan"), p.FLAG_ERROR
            self.counters["handler_errors"] += 1
        finally:
            _answering.seq = None
        with self._lock:
            if self._pending.pop(seq, None) is None:
                self.counters["late_answers"] += 1  # the fail-safe already went out
                return
        timer.cancel()
        self._send_verdict(seq, decision, score, flags, received)

    def _deadline(self, seq: int) -> None:
        with self._lock:
            received = self._pending.pop(seq, None)
        if received is None:
            return
        self.counters["deadline_missed"] += 1
        self._send_verdict(seq, self.config.failsafe, float("nan"), p.FLAG_FAILSAFE, received)

    def _send_verdict(self, seq, decision, score, flags, received) -> None:
        if self.link.write(p.encode(p.verdict(seq, decision, score, flags))):
            self.counters["verdicts"] += 1
            self.counters["frames_tx"] += 1
            with self._lock:
                self._latencies.append((time.monotonic() - received) * 1000)
        else:
            self.counters["verdicts_lost"] += 1

    # ---- heartbeats and status -----------------------------------------------------------
    def _heartbeat(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(self.config.heartbeat_s):
            self._seq = (self._seq + 1) & 0xFFFF
            uptime = int((time.monotonic() - started) * 1000)
            if self.link.write(p.encode(p.heartbeat(self._seq, uptime))):
                self.counters["frames_tx"] += 1

    def link_state(self) -> str:
        if self.link.state != "up":
            return "down"
        seen = self.last_device_heartbeat
        if seen is None or time.monotonic() - seen > self.config.device_silent_s:
            return "silent"  # port open, device not talking
        return "up"

    def status(self) -> dict:
        with self._lock:
            latencies = np.array(self._latencies)
        stats = {}
        if len(latencies):
            p50, p99 = np.percentile(latencies, [50, 99])
            stats = {"p50_ms": round(float(p50), 3), "p99_ms": round(float(p99), 3)}
        return {
            "url": self.config.url, "state": self.link_state(),
            "reconnects": self.link.reconnects, "last_error": self.link.last_error,
            "corrupt_frames": self.decoder.corrupt, "overflows": self.decoder.overflow,
            "counters": dict(self.counters), "trigger_to_verdict": stats,
            "deadline_ms": self.config.deadline_ms, "failsafe": self.config.failsafe.name,
        }
