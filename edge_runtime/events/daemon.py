"""Wiring of the event sinks into the daemon: the in-process bus feeds the outbox.

The subscriber runs in the publishing thread (a request's, for a verdict), so it only
shapes the payload and appends it to the outbox; the sinks' own threads do the network.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from edge_runtime.events.metrics import EventSinksCollector
from edge_runtime.events.sinks import EventSinks
from edge_runtime.services import events
from firmware_bridge.bridge import current_trigger_seq

if TYPE_CHECKING:
    from edge_runtime.services.runtime import Runtime

log = logging.getLogger("edge_runtime.events")
OUTBOX_FILE = "outbox.db"
JOB_PROGRESS_EVERY_S = 1.0  # progress at most once a second; status/phase changes always


class BusToOutbox:
    """Turns bus events into versioned payloads (schemas.py) on the outbox."""

    def __init__(self, sinks: EventSinks, runtime: Runtime) -> None:
        self.sinks, self.runtime = sinks, runtime
        live = runtime.models.live
        self._live_version = live.version if live else None
        self._job_sent: dict[int, tuple[str, str, float]] = {}

    def __call__(self, event: events.Event) -> None:
        if event.topic == events.INSPECTION:
            self._verdict(event)
        elif event.topic == events.JOB:
            self._job(event)
        elif event.topic == events.MODEL:
            self._model(event)

    def _verdict(self, event: events.Event) -> None:
        p = event.payload
        trigger_seq = p.get("trigger_seq")
        if trigger_seq is None and p.get("source") == "serial":
            trigger_seq = current_trigger_seq()  # published on the bridge's answering thread
        self.sinks.emit("verdict", when=event.time, inspection_id=p["id"], product=p["product"],
                        score=p["score"], threshold=p["threshold"], verdict=p["verdict"],
                        latency_ms=p["latency_ms"], model_version=p["model_version"],
                        source=p.get("source", "upload"), trigger_seq=trigger_seq)

    def _job(self, event: events.Event) -> None:
        p = event.payload
        job_id, status, phase = p["id"], p["status"], p.get("phase") or ""
        last = self._job_sent.get(job_id)
        if last and last[:2] == (status, phase) and event.time - last[2] < JOB_PROGRESS_EVERY_S:
            return
        self._job_sent[job_id] = (status, phase, event.time)
        if status not in ("queued", "running"):
            self._job_sent.pop(job_id, None)
        self.sinks.emit("job", when=event.time, job_id=job_id, product=self._product(p),
                        status=status, phase=phase, epoch=p.get("epoch") or 0,
                        epochs=p.get("epochs") or 0, step=p.get("step") or 0,
                        steps=p.get("steps") or 0, loss=p.get("loss"),
                        eta_seconds=p.get("eta_seconds"), model_version=p.get("version"),
                        error=p.get("error"))

    def _product(self, payload: dict) -> str | None:
        try:
            return self.runtime.products.get(payload["product_id"])["name"]
        except Exception:  # noqa: BLE001 - a deleted product must not stop the event
            return None

    def _model(self, event: events.Event) -> None:
        p = event.payload
        previous, self._live_version = self._live_version, p["version"]
        self.sinks.emit("model", when=event.time, event="promoted", model_version=p["version"],
                        previous_version=previous, origin=p.get("origin", "training"),
                        products=list(p.get("products", [])), job_id=p.get("job_id"))


def start_event_sinks(runtime: Runtime) -> EventSinks | None:
    """Start the configured sinks and subscribe them; None when MQTT and webhook are off."""
    settings = runtime.settings
    if not EventSinks.wanted(settings.mqtt, settings.webhook):
        return None
    started = time.time()

    def health() -> dict:
        live = runtime.models.live
        return {"model_version": live.version if live else None,
                "uptime_s": round(time.time() - started, 1)}

    sinks = EventSinks(settings.layout.root / OUTBOX_FILE, settings.mqtt, settings.webhook,
                       health=health)
    if sinks.mqtt is not None and settings.mqtt.commands:
        from edge_runtime.events.commands import CommandHandler

        sinks.mqtt.on_command = CommandHandler(runtime, sinks, settings.api.token).handle
    runtime.metrics.registry.register(EventSinksCollector(sinks))
    sinks.unsubscribe = runtime.events.subscribe(BusToOutbox(sinks, runtime))
    sinks.start()
    log.info("event sinks on: %s (outbox %s messages waiting)", ", ".join(sinks.outbox.sinks),
             {s: sinks.outbox.depth(s) for s in sinks.outbox.sinks})
    return sinks


def stop_event_sinks(sinks: EventSinks | None) -> None:
    if sinks is not None:
        sinks.unsubscribe()
        sinks.stop()
