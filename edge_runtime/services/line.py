"""The line: a TRIGGER from the controller captures a frame, inspects it, sends the verdict."""

from __future__ import annotations

from edge_runtime import repositories as repo
from firmware_bridge.bridge import Bridge, BridgeConfig
from firmware_bridge.protocol import Verdict


def start_line_bridge(runtime) -> Bridge | None:
    cfg = runtime.settings.serial
    if not cfg.url:
        return None

    def on_trigger(product_id: int) -> tuple[Verdict, float]:
        with runtime.db.connect(write=False) as conn:
            product = repo.get_product(conn, product_id)
        if product is None:
            raise LookupError(f"trigger for unknown product id {product_id}")
        try:
            frame = runtime.camera.capture()
        except Exception as exc:
            runtime.camera_error = str(exc)
            raise
        result = runtime.inspections.inspect(product, frame, source="serial")
        decision = Verdict.REJECT if result.verdict == "reject" else Verdict.PASS
        return decision, result.score

    config = BridgeConfig(cfg.url, cfg.baudrate, cfg.deadline_ms,
                          Verdict.REJECT if cfg.failsafe == "reject" else Verdict.PASS,
                          cfg.heartbeat_s)
    return Bridge(config, on_trigger).start()
