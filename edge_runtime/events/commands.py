"""The optional command topic ``<prefix>/<device>/command``: set a product's threshold or
start a training job from the MES, under the API's token rule (every command carries
``api.token``) and the API's own request validation. Each command is answered on
``.../command_result`` through the outbox.

Retained commands are ignored (a stale one would run again on every reconnect), and a
``request_id`` seen recently is not run twice (QoS 1 may deliver a message twice).
"""

from __future__ import annotations

import collections
import hmac
import json
import logging
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from edge_runtime.api.schemas import ThresholdIn, TrainIn
from edge_runtime.events.sinks import EventSinks
from edge_runtime.services.errors import ConflictError, InvalidRequestError, NotFoundError

if TYPE_CHECKING:
    from edge_runtime.services.runtime import Runtime

log = logging.getLogger("edge_runtime.events.commands")
REFUSALS = (ValidationError, NotFoundError, ConflictError, InvalidRequestError, KeyError,
            TypeError, ValueError)


class CommandHandler:
    def __init__(self, runtime: Runtime, sinks: EventSinks, token: str) -> None:
        self.runtime, self.sinks, self.token = runtime, sinks, token
        self._seen: collections.deque[str] = collections.deque(maxlen=256)

    def handle(self, raw: bytes, retained: bool) -> None:
        """Run one command message (on the publisher's command thread, never paho's)."""
        if retained:
            log.warning("ignored a retained MQTT command: commands must not be retained")
            return
        try:
            payload = json.loads(raw)
            if not isinstance(payload, dict):
                raise ValueError("a command is a JSON object")
        except ValueError as exc:
            self._answer(None, None, False, f"unreadable command: {exc}")
            return
        request_id = payload.get("request_id")
        request_id = str(request_id)[:64] if request_id is not None else None
        if request_id is not None and request_id in self._seen:
            return
        command = payload.get("command")
        if not hmac.compare_digest(str(payload.get("token", "")).encode(), self.token.encode()):
            self._answer(request_id, command, False, "missing or wrong token")
            return
        if request_id is not None:
            self._seen.append(request_id)
        try:
            result = self._run(command, payload)
        except REFUSALS as exc:
            self._answer(request_id, command, False, str(exc) or type(exc).__name__)
        except Exception as exc:  # noqa: BLE001 - answer, log, keep serving
            log.exception("MQTT command %r failed", command)
            self._answer(request_id, command, False, f"internal error: {type(exc).__name__}")
        else:
            self._answer(request_id, command, True, None, result)

    def _run(self, command: Any, payload: dict) -> dict:
        if command not in ("set_threshold", "train"):
            raise ValueError(f"unknown command {command!r} (set_threshold, train)")
        product = self.runtime.products.resolve(str(payload["product"]))
        if command == "set_threshold":
            body = ThresholdIn(**{k: payload[k] for k in ("image", "pixel") if k in payload})
            view = self.runtime.products.set_override(product["id"], body.image, body.pixel)
            return {"product": view["name"], "image_threshold": body.image,
                    "pixel_threshold": body.pixel}
        body = TrainIn(**{k: payload[k] for k in ("epochs", "max_images") if k in payload})
        job = self.runtime.jobs.submit(product, body.model_dump(exclude_none=True))
        return {"product": product["name"], "job_id": job["id"]}

    def _answer(self, request_id: str | None, command: Any, ok: bool, detail: str | None,
                result: dict | None = None) -> None:
        self.sinks.emit("command_result", request_id=request_id,
                        command=command if isinstance(command, str) else None, ok=ok,
                        detail=detail, result=result)
