"""An in-process event bus: services publish what happened; sinks subscribe.

Publishers never wait on a subscriber: each subscriber is called in the publishing thread
and must only enqueue (an outbox, a stream's queue). A failing subscriber is logged and
never fails the request that published.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("edge_runtime.events")

INSPECTION = "inspection"  # a verdict
JOB = "job"  # training progress and completion
MODEL = "model"  # a version went live
PRODUCT = "product"  # created, deleted, captures or threshold changed
REVIEW = "review"  # an operator labelled an inspection


@dataclass(frozen=True)
class Event:
    topic: str
    payload: dict
    time: float = field(default_factory=time.time)


Subscriber = Callable[[Event], None]


class EventBus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Returns the call that unsubscribes."""
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)

        return unsubscribe

    def publish(self, topic: str, payload: dict) -> None:
        event = Event(topic, payload)
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                subscriber(event)
            except Exception:  # noqa: BLE001 - a sink must never fail a verdict
                log.exception("event subscriber failed on %s", topic)
