"""Operator review of inspections: "this part is fine" / "this part is defective".

Fine: the 256 px image the model saw becomes a normal capture of the product, so the next
training learns it. Defective: the image is kept as a labelled example under
``examples/<product id>/`` (for evaluating the product later; never trained on as normal).
Either way the map is kept on disk (within the budget) so the decision can be looked at.
"""

from __future__ import annotations

import io

from PIL import Image

from edge_runtime.atomic import atomic_write_bytes
from edge_runtime.data_layout import DataLayout
from edge_runtime.services import events
from edge_runtime.services.captures import CaptureService
from edge_runtime.services.errors import InvalidRequestError
from edge_runtime.services.inspection import InspectionService
from edge_runtime.services.products import ProductService
from edge_runtime.storage import repositories as repo
from edge_runtime.storage.db import Database

FINE, DEFECTIVE = "fine", "defective"
LABELS = (FINE, DEFECTIVE)


class ReviewService:
    def __init__(self, db: Database, layout: DataLayout, inspections: InspectionService,
                 products: ProductService, captures: CaptureService,
                 bus: events.EventBus) -> None:
        self.db, self.layout, self.inspections = db, layout, inspections
        self.products, self.captures, self.bus = products, captures, bus

    def review(self, inspection_id: int, label: str) -> dict:
        if label not in LABELS:
            raise InvalidRequestError(f"label must be one of {', '.join(LABELS)}")
        row = self.inspections.get(inspection_id)
        if row.get("label"):
            raise InvalidRequestError(f"inspection {inspection_id} was already reviewed as "
                                      f"{row['label']!r}")
        recent = self.inspections.recent_map(inspection_id)  # 410 when no longer kept
        product = self.products.get(row["product_id"])
        png = _png(recent.rgb)
        name = f"inspection-{inspection_id}.png"
        out: dict = {"inspection_id": inspection_id, "label": label,
                     "product_id": product["id"]}
        if label == FINE:
            added = self.captures.add(product, [png], names=[name],
                                      source=f"review:{inspection_id}")
            out["capture_id"] = added["captures"][0]["id"]
        else:
            path = self.layout.examples / str(product["id"]) / name
            atomic_write_bytes(path, png)
            out["example"] = f"examples/{product['id']}/{name}"
        if not row.get("map_file"):
            self.inspections.keep_map(inspection_id, recent)
        with self.db.connect() as conn:
            repo.set_inspection_label(conn, inspection_id, label)
            out["captures"] = repo.count_captures(conn, product["id"])
        self.bus.publish(events.REVIEW, out)
        return out


def _png(rgb) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()
