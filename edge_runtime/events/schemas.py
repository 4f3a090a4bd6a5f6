"""One versioned JSON schema per topic, and the builders of the payloads that follow them.

Every message carries ``schema`` (its topic kind) and ``schema_version``: a consumer checks
both. Adding an optional key keeps the version; renaming, removing or changing the meaning
of a key bumps it. ``msg_id`` is unique per message and is the same on every retry, so a
subscriber deduplicates on it (delivery is at-least-once).
"""

from __future__ import annotations

import time
from typing import Any

SCHEMA_VERSION = 1

_ENVELOPE = {
    "schema_version": {"const": SCHEMA_VERSION},
    "msg_id": {"type": "string", "pattern": "^[0-9a-f]{32}$",
               "description": "unique per message, identical on every retry"},
    "device_id": {"type": "string"},
    "time": {"type": "number", "description": "Unix time (s) of the event on the device"},
}
_NUM_OR_NULL = {"type": ["number", "null"]}
_INT_OR_NULL = {"type": ["integer", "null"]}
_STR_OR_NULL = {"type": ["string", "null"]}


def _schema(kind: str, title: str, properties: dict, required: list[str]) -> dict:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"edge-runtime/{kind}/v{SCHEMA_VERSION}",
        "title": title,
        "type": "object",
        "properties": {"schema": {"const": kind}, **_ENVELOPE, **properties},
        "required": ["schema", "schema_version", "msg_id", "device_id", "time", *required],
        "additionalProperties": True,
    }


SCHEMAS: dict[str, dict] = {
    "verdict": _schema("verdict", "One inspection's verdict", {
        "inspection_id": {"type": "integer"},
        "product": {"type": "string"},
        "score": {"type": "number"},
        "threshold": {"type": "number", "description": "image threshold the score was held to"},
        "verdict": {"enum": ["pass", "reject"]},
        "latency_ms": {"type": "number", "description": "model inference time"},
        "model_version": {"type": "string"},
        "source": {"type": "string", "description": "upload | camera | serial"},
        "trigger_seq": {**_INT_OR_NULL,
                        "description": "sequence number of the serial trigger, else null"},
    }, ["inspection_id", "product", "score", "threshold", "verdict", "latency_ms",
        "model_version", "source", "trigger_seq"]),
    "job": _schema("job", "Progress or end of a training job", {
        "job_id": {"type": "integer"},
        "product": _STR_OR_NULL,
        "status": {"enum": ["queued", "running", "succeeded", "failed", "cancelled"]},
        "phase": {"type": "string"},
        "epoch": {"type": "integer"}, "epochs": {"type": "integer"},
        "step": {"type": "integer"}, "steps": {"type": "integer"},
        "loss": _NUM_OR_NULL,
        "eta_seconds": _NUM_OR_NULL,
        "model_version": {**_STR_OR_NULL, "description": "version the job wrote, once done"},
        "error": _STR_OR_NULL,
    }, ["job_id", "status", "phase"]),
    "model": _schema("model", "A model version became current", {
        "event": {"enum": ["promoted"]},
        "model_version": {"type": "string"},
        "previous_version": _STR_OR_NULL,
        "origin": {"type": "string", "description": "training | import | rollback"},
        "products": {"type": "array", "items": {"type": "string"}},
    }, ["event", "model_version", "previous_version", "origin"]),
    "command_result": _schema("command_result", "The answer to one message on .../command", {
        "request_id": {**_STR_OR_NULL, "description": "as sent in the command"},
        "command": _STR_OR_NULL,
        "ok": {"type": "boolean"},
        "detail": {**_STR_OR_NULL, "description": "why it was refused"},
        "result": {"type": ["object", "null"]},
    }, ["request_id", "command", "ok", "detail", "result"]),
    "status": _schema("status", "Retained device health; the broker sets 'offline' (last will)"
                      " when the device vanishes", {
        "state": {"enum": ["online", "offline"]},
        "model_version": _STR_OR_NULL,
        "uptime_s": {"type": "number"},
        "outbox_depth": {"type": "integer"},
        "outbox_dropped": {"type": "integer"},
    }, ["state"]),
}


def envelope(kind: str, device: str, when: float | None = None, **fields: Any) -> dict:
    """A payload of topic ``kind`` (msg_id is added by the outbox)."""
    if kind not in SCHEMAS:
        raise ValueError(f"unknown event kind {kind!r}")
    return {"schema": kind, "schema_version": SCHEMA_VERSION, "device_id": device,
            "time": time.time() if when is None else when, **fields}


def status_payload(device: str, state: str, **health: Any) -> dict:
    """The retained status. It bypasses the outbox (only the latest one matters), so its
    msg_id is made from its time here rather than by the outbox."""
    payload = envelope("status", device, state=state, **health)
    payload["msg_id"] = f"{int(payload['time'] * 1e6):032x}"
    return payload
