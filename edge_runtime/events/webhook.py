"""Webhook delivery of the outbox: each event is POSTed as JSON, oldest first, and leaves the
outbox only on a 2xx answer. Anything else (connection refused, timeout, 5xx, and 4xx too,
since a wrong token is fixed in the receiver's config, not by losing events) is retried with
exponential back-off, the same message again, so order is kept.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request

from edge_runtime.events.config import WebhookSettings
from edge_runtime.events.outbox import Message, Outbox

log = logging.getLogger("edge_runtime.events.webhook")
SINK = "webhook"


class WebhookSender:
    def __init__(self, settings: WebhookSettings, outbox: Outbox, min_backoff_s: float = 0.5,
                 max_backoff_s: float = 30.0) -> None:
        self.settings, self.outbox = settings, outbox
        self.min_backoff_s, self.max_backoff_s = min_backoff_s, max_backoff_s
        self.delivered = 0
        self.failures = 0
        self.failures_in_row = 0
        self._backoff = min_backoff_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)

    def start(self) -> WebhookSender:
        self._thread.start()
        return self

    def stop(self, drain_s: float = 2.0) -> None:
        """Give a reachable receiver ``drain_s`` to take what is queued, then stop."""
        if self._thread.ident is None:
            return  # never started
        deadline = time.monotonic() + drain_s
        while (self.outbox.depth(SINK) and not self.failures_in_row
               and time.monotonic() < deadline):
            time.sleep(0.02)
        self._stop.set()
        self.outbox.notify(SINK)
        self._thread.join(self.settings.timeout_s + 1)

    def _run(self) -> None:
        self._backoff = self.min_backoff_s
        while not self._stop.is_set():
            try:
                self._deliver_some()
            except Exception:  # an outbox or encoding error must not end delivery for good
                log.exception("webhook sender error; retrying in 1 s")
                self._stop.wait(1.0)

    def _deliver_some(self) -> None:
        self.outbox.checkpoint()
        batch = self.outbox.peek(SINK, limit=32)
        if not batch:
            self.outbox.wait(SINK, 1.0)
            return
        for message in batch:
            if self._stop.is_set():
                return
            if not self._post(message):
                self.outbox.add_attempt(SINK, message.seq)
                self._stop.wait(self._backoff)
                self._backoff = min(self._backoff * 2, self.max_backoff_s)
                return
            self._backoff = self.min_backoff_s
            self.outbox.ack(SINK, [message.seq])
            self.delivered += 1

    def _post(self, message: Message) -> bool:
        headers = {"Content-Type": "application/json", "X-Edge-Runtime-Topic": message.topic,
                   "X-Message-Id": message.msg_id}
        if self.settings.token:
            headers["Authorization"] = f"Bearer {self.settings.token}"
        request = urllib.request.Request(self.settings.url, data=message.payload.encode(),
                                         headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout_s) as response:
                ok = 200 <= response.status < 300
        except (urllib.error.URLError, OSError, ValueError) as exc:
            ok = False
            reason = exc
        else:
            reason = None if ok else f"HTTP {response.status}"
        if ok:
            self.failures_in_row = 0
        else:
            self.failures += 1
            self.failures_in_row += 1
            if self.failures_in_row == 1:
                log.warning("webhook %s failed (%s); retrying, events wait in the outbox",
                            self.settings.url, reason)
        return ok
