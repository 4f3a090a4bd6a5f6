"""The line: a TRIGGER from the controller captures a frame, inspects it, sends the verdict."""

from __future__ import annotations

from edge_runtime.camera import MonitoredCamera
from edge_runtime.inference.thresholds import REJECT
from edge_runtime.services.inspection import InspectionService
from edge_runtime.services.products import ProductService
from edge_runtime.settings import SerialSettings
from firmware_bridge.bridge import Bridge, BridgeConfig
from firmware_bridge.protocol import Verdict


class LineService:
    """Owns the serial bridge when ``serial.url`` is set; answers each trigger."""

    def __init__(self, config: SerialSettings, products: ProductService,
                 camera: MonitoredCamera, inspections: InspectionService) -> None:
        self.config = config
        self.products, self.camera, self.inspections = products, camera, inspections
        self.bridge: Bridge | None = None

    def on_trigger(self, product_id: int) -> tuple[Verdict, float]:
        product = self.products.get(product_id)  # unknown id: the bridge sends the fail-safe
        record = self.inspections.inspect(product, self.camera.capture_array(),
                                         source="serial")
        return (Verdict.REJECT if record.verdict == REJECT else Verdict.PASS), record.score

    def start(self) -> None:
        cfg = self.config
        if not cfg.url:
            return
        failsafe = Verdict.REJECT if cfg.failsafe == "reject" else Verdict.PASS
        config = BridgeConfig(cfg.url, cfg.baudrate, cfg.deadline_ms, failsafe, cfg.heartbeat_s)
        self.bridge = Bridge(config, self.on_trigger).start()

    def close(self) -> None:
        if self.bridge is not None:
            self.bridge.close()

    def status(self) -> dict | None:
        return self.bridge.status() if self.bridge is not None else None
